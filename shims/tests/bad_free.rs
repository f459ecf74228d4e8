//! A C program that misuses the heap (double free, freeing a stack, global or interior
//! pointer, realloc of a foreign or freed pointer, malloc_usable_size of a global) must die
//! of SIGABRT under libunimem.so, with exactly one line on stderr that names the address.

mod common;

use common::*;
use std::os::unix::process::ExitStatusExt;
use std::process::Command;
use std::time::Duration;

/// Run `bad_free <case>` and check the abort; `what` must appear in the message.
fn aborts(case: &str, what: &str) {
    let exe = compile_c("bad_free", &[]);
    let out = run(
        with_shim(Command::new(&exe).arg(case)),
        Duration::from_secs(60),
    );
    let stdout = out.stdout_text();
    let addr = stdout
        .lines()
        .find_map(|l| l.strip_prefix("addr "))
        .unwrap_or_else(|| {
            panic!(
                "{case}: the program did not announce an address:\n{stdout}\n{}",
                out.stderr
            )
        });
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGABRT),
        "{case}: expected SIGABRT, got {:?}\nstdout:\n{stdout}\nstderr:\n{}",
        out.status,
        out.stderr
    );
    assert!(
        !stdout.contains("survived"),
        "{case}: the program went on after the misuse"
    );
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "{case}: expected one line on stderr, got:\n{}",
        out.stderr
    );
    let line = lines[0];
    assert!(line.starts_with("unimem: "), "{case}: {line}");
    assert!(
        line.contains(addr),
        "{case}: the message does not name {addr}: {line}"
    );
    assert!(
        line.contains(what),
        "{case}: the message does not say `{what}`: {line}"
    );
}

#[test]
fn double_free_small() {
    aborts("double_free_small", "double free");
}

#[test]
fn double_free_large() {
    aborts("double_free_large", "free(): ");
}

#[test]
fn free_of_stack_pointer() {
    aborts("free_stack", "is not an allocation of the unimem heap");
}

#[test]
fn free_of_global() {
    aborts("free_global", "is not an allocation of the unimem heap");
}

#[test]
fn free_of_interior_pointer_small() {
    aborts(
        "free_interior_small",
        "is not the start of an allocation (it lies inside the 48-byte allocation",
    );
}

#[test]
fn free_of_interior_pointer_large() {
    aborts(
        "free_interior_large",
        "is not the start of an allocation (it lies inside the",
    );
}

#[test]
fn realloc_of_stack_pointer() {
    aborts("realloc_stack", "realloc(): ");
}

#[test]
fn realloc_of_freed_block() {
    aborts("realloc_freed", "realloc(): ");
}

#[test]
fn usable_size_of_global() {
    aborts("usable_size_global", "malloc_usable_size(): ");
}
