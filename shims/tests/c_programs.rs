//! The C test programs of `tests/c/`, compiled with `cc` and run under
//! `LD_PRELOAD=libunimem.so`. Each must end with a `PASS` line that reports how many of its
//! allocations it proved to come from unimem (so a run where the shim silently did not
//! load fails). Programs that test C semantics run a second time without the shim: the
//! same checks passing against glibc's malloc is the evidence the shim behaves like it.

mod common;

use common::*;
use std::process::Command;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(120);

/// Run `tests/c/<name>.c` with the shim, and (if `baseline`) without it.
fn c_test(name: &str, baseline: bool) {
    let exe = compile_c(name, &[]);
    let out = run(with_shim(&mut Command::new(&exe)), TIMEOUT);
    out.assert_success(&format!("{name} under libunimem.so"));
    let text = out.stdout_text();
    let pass = text.lines().last().unwrap_or("");
    assert!(
        pass.starts_with(&format!("PASS {name} (unimem: ")),
        "{name} under libunimem.so did not report checked unimem allocations:\n{text}\n{}",
        out.stderr
    );
    assert!(
        out.stderr.is_empty(),
        "{name} under libunimem.so wrote to stderr:\n{}",
        out.stderr
    );
    if baseline {
        let out = run(
            without_shim(&mut Command::new(&exe)).env("UNIMEM_TEST_SHIM", "0"),
            TIMEOUT,
        );
        out.assert_success(&format!("{name} with glibc's malloc (the baseline)"));
        assert!(
            out.stdout_text().contains(&format!("PASS {name} (glibc)")),
            "{name} baseline: {}",
            out.stdout_text()
        );
    }
}

/// malloc(0) uniqueness, free(NULL), calloc zeroing and overflow, realloc growth, shrink,
/// failure and the NULL/0 cases, reallocarray overflow, usable sizes, absurd sizes (NULL +
/// ENOMEM from every allocation function), errno kept by free.
#[test]
fn semantics() {
    c_test("semantics", true);
}

/// posix_memalign, aligned_alloc, memalign at every power of two up to 16 MiB; memalign's
/// rounding; EINVAL cases; valloc and pvalloc.
#[test]
fn aligned() {
    c_test("aligned", true);
}

/// Allocation in .preinit_array, a constructor, an atexit handler and a destructor.
#[test]
fn early_and_late() {
    c_test("early", true);
}

/// Cross-thread frees (lock-step and racing), threads exiting with live memory.
#[test]
fn threads() {
    c_test("threads", true);
}

/// fork while other threads allocate; the child allocates, frees, starts a thread, exits 0.
#[test]
fn fork() {
    c_test("fork", true);
}

/// Threads created while internal stay internal for life (and their children), others
/// are managed; enter/exit nesting; pthread_exit and cancellation through the wrapper.
#[test]
fn internal_threads() {
    c_test("internal_threads", false);
}

/// Successful malloc and free keep errno while threads contend for the allocator's locks.
#[test]
fn errno_kept_under_contention() {
    c_test("errno_contention", true);
}
