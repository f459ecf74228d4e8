//! Coherence under `LD_PRELOAD`, in C: `tests/c/coherence.c`, one case per process, with
//! the CPU-backed fake device (`UNIMEM_DEVICE=fake`) in both fault modes. Each case proves
//! memory whose only valid copy is on the device keeps working for what C programs do.

mod common;

use common::*;
use std::ffi::OsStr;
use std::process::Command;
use std::time::Duration;

fn run_case(case: &str, faults: &str, extra: &[(&str, &str)]) -> Out {
    let dir = lib().parent().unwrap();
    let link: Vec<&OsStr> = vec![OsStr::new("-L"), dir.as_os_str(), OsStr::new("-lunimem")];
    let exe = compile_c("coherence", &link);
    let mut cmd = Command::new(&exe);
    with_shim(&mut cmd).arg(case).env("LD_LIBRARY_PATH", dir).env("UNIMEM_DEVICE", "fake").env("UNIMEM_FAULTS", faults);
    for (k, v) in extra {
        cmd.env(k, v);
    }
    run(&mut cmd, Duration::from_secs(300))
}

fn pass(case: &str, extra: &[(&str, &str)]) {
    for faults in ["uffd", "mprotect"] {
        let out = run_case(case, faults, extra);
        out.assert_success(&format!("coherence {case} (UNIMEM_FAULTS={faults})"));
        assert!(out.stdout_text().contains(&format!("PASS coherence {case}")), "{}", out.stdout_text());
        assert!(out.stderr.is_empty(), "coherence {case} ({faults}) wrote to stderr:\n{}", out.stderr);
    }
}

/// Threads read and write their own data (sharing blocks) against a model while a
/// migrator thread moves random ranges to the device and back: zero mismatches.
#[test]
fn stress_threads_and_migrator() {
    pass("stress", &[]);
}

/// read, write, pread, pwrite, readv, writev, send, recv, fread, fwrite on device memory.
#[test]
fn io_on_device_buffers() {
    pass("io", &[]);
}

/// fork: the child sees device-owned data; the parent keeps it.
#[test]
fn fork_sees_device_data() {
    pass("fork", &[]);
}

/// memcpy, memcmp, realloc across device-owned blocks.
#[test]
fn memcpy_memcmp_realloc() {
    pass("memops", &[]);
}

/// The program's own SIGSEGV handler (sigaction and signal) gets its faults; coherence
/// keeps working.
#[test]
fn program_signal_handlers() {
    pass("signals", &[]);
}

/// free and unimem_discard of device memory copy nothing back; bad arguments are reported.
#[test]
fn free_and_discard() {
    pass("free", &[]);
}

/// 100 000 blocks in alternating states (4 KiB blocks) stay far below vm.max_map_count
/// with userfaultfd. (With mprotect, a budget keeps the rest on the host instead.)
#[test]
fn alternating_states_mapping_count() {
    let out = run_case("vma", "uffd", &[("UNIMEM_BLOCK_SIZE", "4K"), ("UNIMEM_DEVICE_MEMORY", "512M")]);
    out.assert_success("coherence vma");
    assert!(out.stdout_text().contains("PASS coherence vma"), "{}", out.stdout_text());
}

/// A genuine segfault still kills the process with SIGSEGV: exit status 139 in a shell.
#[test]
fn genuine_segfault_exits_139_in_a_shell() {
    let dir = lib().parent().unwrap();
    let link: Vec<&OsStr> = vec![OsStr::new("-L"), dir.as_os_str(), OsStr::new("-lunimem")];
    let exe = compile_c("coherence", &link);
    for faults in ["uffd", "mprotect"] {
        let mut cmd = Command::new("sh");
        cmd.arg("-c").arg(format!("'{}' segv 2>/dev/null; echo \"status $?\"", exe.display()));
        with_shim(&mut cmd).env("LD_LIBRARY_PATH", dir).env("UNIMEM_DEVICE", "fake").env("UNIMEM_FAULTS", faults);
        let out = run(&mut cmd, Duration::from_secs(60));
        assert!(out.stdout_text().contains("status 139"), "UNIMEM_FAULTS={faults}: {}", out.stdout_text());
    }
}
