//! Bad input aborts with one clear line naming the address. Each case runs this test
//! binary again as a child process (selected by an environment variable) and checks that
//! the child died of SIGABRT with the expected message.

use std::os::unix::process::ExitStatusExt;
use std::process::Command;
use unimem_alloc as ua;

const CASE: &str = "UNIMEM_ABORT_CASE";

fn child_case(name: &str) {
    let p = ua::alloc(48);
    let big = ua::alloc(1 << 20);
    eprintln!("addr {:#x} big {:#x}", p as usize, big as usize);
    // SAFETY: none; these calls are the bad input under test, and the child aborts.
    unsafe {
        match name {
            "double_free_small" => {
                ua::free(p);
                ua::free(p);
            }
            "double_free_cross_thread" => {
                ua::free(p);
                let a = p as usize;
                std::thread::spawn(move || ua::free(a as *mut u8)).join().ok();
            }
            "double_free_behind_hot" => {
                // `q`, freed first, is kept hot; `p`, freed while `q` is, enters the bitmap.
                let q = ua::alloc(48);
                ua::free(q);
                ua::free(p);
                ua::free(p);
            }
            "double_free_of_hot" => {
                // `p`, freed first, is kept hot while `q` enters the bitmap.
                let q = ua::alloc(48);
                ua::free(p);
                ua::free(q);
                ua::free(p);
            }
            "double_free_remote_then_local" => {
                let a = p as usize;
                std::thread::spawn(move || ua::free(a as *mut u8)).join().ok();
                ua::free(p);
            }
            "double_free_large" => {
                ua::free(big);
                ua::free(big);
            }
            "interior_small" => ua::free(p.wrapping_add(16)),
            "interior_large" => ua::free(big.wrapping_add(4096)),
            "foreign" => {
                let x = 5u64;
                ua::free(&x as *const u64 as *mut u8)
            }
            "realloc_freed" => {
                ua::free(p);
                ua::realloc(p, 100);
            }
            _ => panic!("unknown case {name}"),
        }
    }
    eprintln!("survived {name}");
    std::process::exit(0);
}

fn run(name: &str) -> (String, String) {
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "trampoline", "--nocapture", "--test-threads=1"])
        .env(CASE, name)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.signal(), Some(libc::SIGABRT), "case {name}: {:?}\n{err}", out.status);
    let line = err.lines().find(|l| l.starts_with("unimem:")).unwrap_or_else(|| panic!("no unimem line in {err}")).to_string();
    let addrs = err.lines().find(|l| l.starts_with("addr ")).unwrap().to_string();
    (line, addrs)
}

#[test]
fn trampoline() {
    if let Ok(name) = std::env::var(CASE) {
        child_case(&name);
    }
}

fn addr(addrs: &str, which: usize) -> String {
    addrs.split_whitespace().nth(which).unwrap().to_string()
}

#[test]
fn double_frees_abort_naming_the_address() {
    for case in ["double_free_small", "double_free_cross_thread", "double_free_behind_hot", "double_free_of_hot", "double_free_remote_then_local"] {
        let (line, addrs) = run(case);
        assert!(line.contains("double free of") && line.contains(&addr(&addrs, 1)), "{case}: {line}");
    }
    let (line, addrs) = run("double_free_large");
    assert!(line.contains(&addr(&addrs, 3)), "{line}");
    assert!(line.contains("double free") || line.contains("not an allocation"), "{line}");
    let (line, addrs) = run("realloc_freed");
    assert!(line.starts_with("unimem: realloc(): double free of") && line.contains(&addr(&addrs, 1)), "{line}");
}

#[test]
fn invalid_pointers_abort_naming_the_address_and_the_block() {
    let (line, addrs) = run("interior_small");
    assert!(line.contains("is not the start of an allocation") && line.contains(&format!("48-byte allocation at {}", addr(&addrs, 1))), "{line}");
    let (line, addrs) = run("interior_large");
    assert!(line.contains("is not the start of an allocation") && line.contains(&addr(&addrs, 3)), "{line}");
    let (line, _) = run("foreign");
    assert!(line.contains("is not an allocation of the unimem heap"), "{line}");
}
