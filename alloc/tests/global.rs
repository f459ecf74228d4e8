//! The allocator as a Rust program's `#[global_allocator]`: the whole test harness, std's
//! collections and threads run on it. Also covers the internal heap, thread exit
//! (orphan spans and their adoption), page return to the OS, and `for_each_live`.

use std::collections::{BTreeMap, HashMap};
use unimem_alloc::{self as ua, HeapKind, InternalScope};

#[global_allocator]
static A: ua::Allocator = ua::Allocator;

#[test]
fn std_collections_live_in_the_managed_heap() {
    let v: Vec<u64> = (0..100_000).collect();
    let s = String::from("shared virtual address");
    let b = Box::new([7u8; 3000]);
    let mut m = HashMap::new();
    for i in 0..10_000u32 {
        m.insert(i, i.to_string());
    }
    let t: BTreeMap<u32, Vec<u8>> = (0..1000).map(|i| (i, vec![i as u8; i as usize % 97])).collect();
    for p in [v.as_ptr() as *const u8, s.as_ptr(), b.as_ptr(), m.get(&77).unwrap().as_ptr()] {
        assert_eq!(ua::heap_of(p), Some(HeapKind::Managed), "{p:?}");
    }
    assert_eq!(v.iter().sum::<u64>(), 100_000 * 99_999 / 2);
    assert_eq!(m[&9999], "9999");
    assert_eq!(t[&500].len(), 500 % 97);
    assert_eq!(b[2999], 7);
}

#[test]
fn over_aligned_layouts() {
    #[repr(align(4096))]
    struct Page([u8; 4096]);
    let p = Box::new(Page([1; 4096]));
    assert_eq!(&*p as *const Page as usize % 4096, 0);
    for align_log in 5..=22 {
        let layout = std::alloc::Layout::from_size_align(100, 1 << align_log).unwrap();
        // SAFETY: non-zero size.
        let h = unsafe { std::alloc::alloc(layout) };
        assert_eq!(h as usize % (1 << align_log), 0);
        assert!(ua::contains(h));
        // SAFETY: allocated above with this layout.
        unsafe { std::alloc::dealloc(h, layout) };
    }
    let mut v: Vec<Page> = Vec::with_capacity(3);
    for _ in 0..40 {
        v.push(Page([2; 4096]));
        assert_eq!(v.as_ptr() as usize % 4096, 0);
    }
    assert!(v.iter().all(|p| p.0[4095] == 2));
}

#[test]
fn internal_scope_allocates_outside_the_managed_heap() {
    let managed = Box::new(1u32);
    let (inner, nested) = {
        let _g = InternalScope::new();
        let inner = Box::new(2u32);
        let nested = {
            let _g2 = InternalScope::new();
            Box::new(3u32)
        };
        assert!(ua::is_internal());
        (inner, nested)
    };
    assert!(!ua::is_internal());
    assert_eq!(ua::heap_of(&*managed as *const u32 as *const u8), Some(HeapKind::Managed));
    assert_eq!(ua::heap_of(&*inner as *const u32 as *const u8), Some(HeapKind::Internal));
    assert_eq!(ua::heap_of(&*nested as *const u32 as *const u8), Some(HeapKind::Internal));
    assert!(!ua::contains(&*inner as *const u32 as *const u8));
    // Freed from managed context: the block's own heap takes it back.
    drop(inner);
    // A thread marked always-internal stays internal.
    let p = std::thread::spawn(|| {
        ua::set_thread_always_internal(true);
        Box::into_raw(Box::new([0u8; 100])) as usize
    })
    .join()
    .unwrap();
    assert_eq!(ua::heap_of(p as *const u8), Some(HeapKind::Internal));
    // SAFETY: p came from Box::into_raw of this type.
    drop(unsafe { Box::from_raw(p as *mut [u8; 100]) });
}

fn rss_bytes() -> usize {
    let s = std::fs::read_to_string("/proc/self/statm").unwrap();
    s.split_whitespace().nth(1).unwrap().parse::<usize>().unwrap() * 4096
}

#[test]
fn freed_large_blocks_return_pages_to_the_os() {
    let blocks: Vec<Vec<u8>> = (0..40).map(|_| vec![1u8; 4 << 20]).collect();
    let before = rss_bytes();
    drop(blocks);
    // Frees purge on their own: dirty memory stays within the policy (region.rs, "Purge
    // policy"): runs free for longer than the purge delay (10 ms) go back beyond the
    // threshold (32 MiB by default), and any run beyond four thresholds. The 40 blocks are
    // usually all freed within the delay, so the bound is four thresholds plus the block
    // that crossed it; without purging on free all 160 MiB would be dirty.
    let st = ua::stats();
    assert!(st.dirty <= 4 * (32 << 20) + (4 << 20), "dirty {} above four purge thresholds and a block", st.dirty);
    ua::purge();
    let after = rss_bytes();
    assert!(after + (100 << 20) < before, "RSS {before} -> {after}: 160 MiB freed but not returned");
    assert_eq!(ua::stats().dirty, 0);
}

#[test]
fn for_each_live_reports_exactly_the_live_blocks() {
    // A private large block range: allocate objects of one class, free every other one.
    let ptrs: Vec<*mut u8> = (0..2000).map(|_| ua::alloc(48)).collect();
    for p in ptrs.iter().skip(1).step_by(2) {
        unsafe { ua::free(*p) };
    }
    let live: Vec<usize> = ptrs.iter().step_by(2).map(|p| *p as usize).collect();
    let lo = *live.iter().min().unwrap();
    let hi = *live.iter().max().unwrap();
    let mut seen = Vec::new();
    ua::for_each_live(lo, hi - lo + 1, |b, s| {
        assert!(s >= 48);
        seen.push(b)
    });
    for b in &live {
        assert!(seen.contains(b), "live block {b:#x} not reported");
    }
    for p in ptrs.iter().skip(1).step_by(2) {
        assert!(!seen.contains(&(*p as usize)) || ua::lookup(*p).is_some(), "freed block reported");
    }
    for b in live {
        unsafe { ua::free(b as *mut u8) };
    }
    let big = ua::alloc(3 << 20);
    let mut n = 0;
    ua::for_each_live(big as usize + 100_000, 10, |b, s| {
        assert_eq!(b, big as usize);
        assert!(s >= 3 << 20);
        n += 1;
    });
    assert_eq!(n, 1);
    unsafe { ua::free(big) };
}

/// A freed small object is not live in any view, whether it is kept aside for the next
/// allocation (`hot`: the first object freed while none was) or was entered in the bitmap;
/// and the next allocation of its class reuses the one kept aside, live again.
#[test]
fn freed_objects_are_not_live_before_or_after_the_next_free() {
    let p = ua::alloc(80);
    let q = ua::alloc(80);
    let keep = ua::alloc(80);
    let live = |x: *mut u8| {
        let lookup = ua::lookup(x).is_some();
        let any = ua::any_live(x as usize, 80);
        let mut each = false;
        ua::for_each_live(x as usize, 80, |b, _| each |= b == x as usize);
        let mut runs = false;
        ua::for_each_live_run(x as usize, 80, |b, len| runs |= b <= x as usize && x as usize + 80 <= b + len);
        assert!(lookup == any && any == each && each == runs, "views disagree on {x:p}: {lookup} {any} {each} {runs}");
        lookup
    };
    assert!(live(p) && live(q) && live(keep));
    unsafe { ua::free(p) };
    assert!(!live(p) && live(q), "p freed last");
    unsafe { ua::free(q) };
    assert!(!live(p) && !live(q), "p freed before q");
    // p was freed while nothing was kept aside, so p is (hot); q, freed while p was,
    // entered the bitmap.
    let r = ua::alloc(80);
    assert_eq!(r, p, "the object freed into an empty hot slot is reused first");
    assert!(live(r) && !live(q) && live(keep));
    // A free followed by an allocation gets the same object back.
    unsafe { ua::free(r) };
    assert!(!live(r) && !live(q));
    assert_eq!(ua::alloc(80), r, "a free/alloc pair reuses its object");
    assert!(live(r) && !live(q));
    unsafe {
        ua::free(r);
        ua::free(keep);
    }
}

/// `count` objects of 48 B, of which those where `free(index, random)` holds are freed again
/// (`random` from a xorshift seeded with `seed`). Returns the pointers and which were freed.
fn holes(count: usize, seed: u64, free: impl Fn(usize, u64) -> bool) -> (Vec<*mut u8>, Vec<bool>) {
    let ptrs: Vec<*mut u8> = (0..count).map(|_| ua::alloc(48)).collect();
    let mut x = seed;
    let mut freed = vec![false; count];
    for (i, p) in ptrs.iter().enumerate() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        if free(i, x) {
            unsafe { ua::free(*p) };
            freed[i] = true;
        }
    }
    (ptrs, freed)
}

#[test]
fn any_live_agrees_with_for_each_live_on_every_window() {
    // 3000 objects of 48 B (several bitmap words, windows cutting words and objects), with
    // runs of frees so that whole words, single bits and word edges are free.
    let (ptrs, freed) = holes(3000, 0x2545_f491_4f6c_dd1d, |i, r| (i / 200) % 2 == 1 || r.is_multiple_of(3));
    let lo = ptrs.iter().map(|p| *p as usize).min().unwrap();
    let hi = ptrs.iter().map(|p| *p as usize).max().unwrap() + 48;
    let (mut checked, mut both) = (0, [0, 0]);
    for len in [1, 47, 48, 100, 3072, 4096, 65536] {
        let mut at = lo;
        while at < hi {
            // The window may cover other tests' spans, which their threads change meanwhile:
            // agreement on one of a few tries, with nothing changing in between, is the test.
            let mut any = false;
            let agreed = (0..5).any(|_| {
                let before = ua::any_live(at, len);
                any = false;
                ua::for_each_live(at, len, |_, _| any = true);
                before == any && ua::any_live(at, len) == any
            });
            assert!(agreed, "window {at:#x}+{len}: any_live disagrees with for_each_live ({any})");
            both[usize::from(any)] += 1;
            checked += 1;
            at += 37 + len / 3;
        }
    }
    assert!(checked > 1000 && both[0] > 10 && both[1] > 10, "{checked} windows, {both:?} (dead, live)");
    assert!(!ua::any_live(lo, 0));
    for (i, p) in ptrs.iter().enumerate() {
        if !freed[i] {
            unsafe { ua::free(*p) };
        }
    }
}

#[test]
fn for_each_live_run_covers_exactly_the_live_objects_in_merged_runs() {
    // 3000 objects of 48 B with runs of frees (whole bitmap words free, single bits, word
    // edges), seen through windows that cut words and objects.
    let (ptrs, freed) = holes(3000, 0x9e37_79b9_7f4a_7c15, |i, r| (i / 150) % 3 == 1 || r.is_multiple_of(4));
    let lo = ptrs.iter().map(|p| *p as usize).min().unwrap();
    let hi = ptrs.iter().map(|p| *p as usize).max().unwrap() + 48;
    let mut merged = 0;
    // Allocated once, before any scan: growing them during a scan would add live objects of
    // this test to the windows between the two walks.
    let (mut objects, mut runs, mut cut) = (Vec::with_capacity(1 << 16), Vec::with_capacity(1 << 16), Vec::with_capacity(1 << 16));
    for len in [1, 48, 100, 4096, 65536, hi - lo] {
        let mut at = lo;
        while at < hi {
            // Other tests' threads may change spans the window covers: agreement on one of a
            // few tries is the test.
            let agreed = (0..5).any(|_| {
                objects.clear();
                runs.clear();
                cut.clear();
                ua::for_each_live(at, len, |b, s| objects.push((b, s)));
                ua::for_each_live_run(at, len, |b, s| runs.push((b, s)));
                assert!(objects.len() < objects.capacity() && runs.len() < runs.capacity(), "scratch vectors grew");
                // The runs, cut into the objects' sizes, are the objects; runs are in order
                // and do not overlap.
                for &(b, s) in &runs {
                    let size = objects.iter().find(|o| o.0 == b).map_or(s, |o| o.1);
                    cut.extend((0..s / size).map(|k| (b + k * size, size)));
                }
                let ordered = runs.windows(2).all(|w| w[0].0 + w[0].1 <= w[1].0);
                if runs.len() < objects.len() {
                    merged += 1;
                }
                ordered && cut == objects
            });
            assert!(agreed, "window {at:#x}+{len}: for_each_live_run disagrees with for_each_live");
            at += 41 + len / 3;
        }
    }
    assert!(merged > 10, "runs merged neighbours in only {merged} windows");
    for (i, p) in ptrs.iter().enumerate() {
        if !freed[i] {
            unsafe { ua::free(*p) };
        }
    }
}

#[test]
fn large_realloc_grows_and_shrinks_in_place_when_it_can() {
    let p = ua::alloc(1 << 20);
    // SAFETY: 1 MiB block.
    unsafe { std::ptr::write_bytes(p, 9, 1 << 20) };
    let q = unsafe { ua::realloc(p, 600 << 10) };
    assert_eq!(p, q, "shrink moved the block");
    let r = unsafe { ua::realloc(q, 8 << 20) };
    // SAFETY: at least 600 KiB were preserved.
    let data = unsafe { std::slice::from_raw_parts(r, 600 << 10) };
    assert!(data.iter().all(|&b| b == 9));
    unsafe { ua::free(r) };
    ua::validate();
}
