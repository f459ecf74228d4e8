//! The age-based purge (region.rs, "Purge policy"): free runs beyond the purge threshold
//! are returned to the OS once they have been free for longer than the purge delay, not
//! before; a run merged from an old and a young part counts as young; beyond four
//! thresholds, young memory is returned too.
//!
//! The options are read once per process, and the figures checked are the whole heap's, so
//! each case runs in a child process (this binary again, running only [`trampoline`], with
//! the options set in its environment). No global allocator here: the test harness and
//! std use glibc, and only the blocks below live in the unimem heap. The only timing
//! assumption is that a sleep lasts at least as long as asked (the delays are 100 ms and
//! 1 s; the sleeps past them 0.5 s and 1.5 s); "young" is always "freed in this call".

use std::process::Command;
use std::time::Duration;
use unimem_alloc as ua;

const CASE: &str = "UNIMEM_PURGE_CASE";
const MIB: usize = 1 << 20;
const PAGE: usize = 4096;

/// A large block (above the small classes) of `size` bytes with every page written.
fn touched(size: usize) -> usize {
    let p = ua::alloc(size);
    assert!(!p.is_null());
    for off in (0..size).step_by(PAGE) {
        // SAFETY: `p` is a fresh block of `size` bytes.
        unsafe { p.add(off).write_volatile(0x5a) };
    }
    p as usize
}

/// Free a block made by [`touched`].
fn free(p: usize) {
    // SAFETY: a live block of this heap, used by nobody after this.
    unsafe { ua::free(p as *mut u8) };
}

/// `count` blocks of `size` bytes, each followed by a live 256 KiB guard block, so that
/// freeing the blocks leaves `count` separate free runs. Returns the blocks and the guards.
fn separated(count: usize, size: usize) -> (Vec<usize>, Vec<usize>) {
    (0..count).map(|_| (touched(size), touched(256 << 10))).unzip()
}

/// Minor page faults of this thread so far.
fn minor_faults() -> i64 {
    // SAFETY: getrusage fills the struct it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    assert_eq!(unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut u) }, 0);
    u.ru_minflt
}

/// Page faults taken while allocating `size` bytes and writing every page of it.
fn faults_to_reuse(size: usize) -> (usize, i64) {
    let before = minor_faults();
    let p = touched(size);
    (p, minor_faults() - before)
}

/// Resident pages of `[p, p + len)` (page-aligned, mapped), by `mincore(2)`.
fn resident_pages(p: usize, len: usize) -> usize {
    let mut v = vec![0u8; len / PAGE];
    // SAFETY: `v` has one byte per page of the range, which is mapped (committed heap).
    assert_eq!(unsafe { libc::mincore(p as *mut libc::c_void, len, v.as_mut_ptr()) }, 0);
    v.iter().filter(|&&b| b & 1 != 0).count()
}

fn rss_bytes() -> usize {
    let s = std::fs::read_to_string("/proc/self/statm").unwrap();
    s.split_whitespace().nth(1).unwrap().parse::<usize>().unwrap() * PAGE
}

fn dirty() -> usize {
    ua::stats().dirty
}

/// Threshold 8 MiB, delay 100 ms: 24 MiB of separate runs freed, then, well past the
/// delay, one more free (the purge is triggered from the free path) returns the old runs
/// down to half the threshold. Fails if runs that have aged are never returned.
fn aged_runs_are_returned() {
    let (blocks, _guards) = separated(24, MIB);
    let rss = rss_bytes();
    for &p in &blocks {
        free(p);
    }
    std::thread::sleep(Duration::from_millis(500));
    let trigger = touched(2 * MIB); // at the top, after the last guard: merges with nothing
    free(trigger);
    let (d, after) = (dirty(), rss_bytes());
    assert!(d <= 4 * MIB, "{d} bytes still dirty: runs free for 500 ms (delay 100 ms) were not returned");
    assert!(after + 16 * MIB <= rss, "RSS {rss} -> {after}: the old runs' pages were not returned");
}

/// Threshold 4 MiB, delay one hour: 12 MiB of separate runs freed (over the threshold,
/// under the hard limit of four thresholds) stay resident, and allocating them again
/// takes no page faults. Fails if young runs are purged (as the threshold alone did).
fn young_runs_stay_resident() {
    let (blocks, _guards) = separated(12, MIB);
    for &p in &blocks {
        free(p);
    }
    let d = dirty();
    assert!(d >= 12 * MIB, "only {d} bytes dirty: runs freed just now were purged");
    let mut faults = 0;
    for _ in 0..12 {
        faults += faults_to_reuse(MIB).1;
    }
    // 3072 pages if they had been purged; a few for page tables and the like if not.
    assert!(faults < 256, "{faults} page faults reusing 12 MiB freed just now: it was purged");
}

/// Threshold 4 MiB, delay one hour: freeing 24 MiB of young runs still keeps dirty memory
/// within the hard limit (four thresholds): the runs beyond it are returned, oldest first,
/// down to half of it. Fails if young memory can pile up without bound.
fn hard_limit_bounds_young_memory() {
    let (blocks, _guards) = separated(24, MIB);
    for &p in &blocks {
        free(p);
        let d = dirty();
        assert!(d <= 16 * MIB, "{d} bytes dirty, above the hard limit of 16 MiB");
    }
    let d = dirty();
    assert!(d >= 8 * MIB, "{d} bytes dirty: the hard limit purged below half of itself");
    // Oldest first: the blocks freed first are the ones returned.
    let resident: Vec<usize> = blocks.iter().map(|&p| resident_pages(p, MIB)).collect();
    let pages = MIB / PAGE;
    assert!(resident[..8].iter().all(|&r| r == 0), "the first blocks freed are still resident: {resident:?}");
    assert!(resident[16..].iter().all(|&r| r == pages), "the last blocks freed were purged: {resident:?}");
}

/// Threshold 1 MiB, delay 1 s: X and A are freed, then, past the delay, B, A's right
/// neighbour. A+B is one run now, as young as B: the purge B's free triggers returns X (old)
/// but not A+B, and allocating A+B again takes no page faults. Fails if the merged run
/// took A's age (it would be purged with X) or if old runs were never purged (X kept).
fn merged_run_is_as_young_as_its_youngest_part() {
    let x = touched(MIB);
    let _g1 = touched(256 << 10);
    let a = touched(MIB);
    let b = touched(MIB);
    let _g2 = touched(256 << 10);
    assert_eq!(b, a + MIB, "A and B are not neighbours: the layout this test needs changed");
    free(x);
    free(a);
    assert_eq!(dirty(), 2 * MIB, "X and A, freed just now, are not both dirty");
    std::thread::sleep(Duration::from_millis(1500));
    free(b);
    let d = dirty();
    assert!(d != 3 * MIB, "X, free for 1.5 s (delay 1 s), was not purged");
    assert!(d != 0, "A+B was purged: the merged run took A's age, not B's");
    assert_eq!(d, 2 * MIB, "only A+B should be dirty");
    let (p, faults) = faults_to_reuse(2 * MIB);
    assert_eq!(p, a, "the 2 MiB allocation did not reuse A+B");
    assert!(faults < 128, "{faults} page faults reusing A+B (512 pages if purged)");
    ua::validate();
}

/// The child: runs the case named in [`CASE`], if any.
#[test]
fn trampoline() {
    let Ok(name) = std::env::var(CASE) else { return };
    match name.as_str() {
        "aged" => aged_runs_are_returned(),
        "young" => young_runs_stay_resident(),
        "hard" => hard_limit_bounds_young_memory(),
        "merged" => merged_run_is_as_young_as_its_youngest_part(),
        _ => panic!("unknown case {name}"),
    }
    ua::validate();
}

/// Run case `name` in a child with the purge threshold and delay given; fails with the
/// child's output if the child fails.
fn run(name: &str, threshold: &str, delay_ms: &str) {
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "trampoline", "--nocapture", "--test-threads=1"])
        .env(CASE, name)
        .env("UNIMEM_PURGE_THRESHOLD", threshold)
        .env("UNIMEM_PURGE_DELAY", delay_ms)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "case {name}: {:?}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn aged_runs_are_returned_on_a_later_free() {
    run("aged", "8M", "100");
}

#[test]
fn runs_freed_within_the_delay_stay_resident() {
    run("young", "4M", "3600000");
}

#[test]
fn the_hard_limit_returns_young_memory() {
    run("hard", "4M", "3600000");
}

#[test]
fn a_merged_run_is_as_young_as_its_youngest_part() {
    run("merged", "1M", "1000");
}
