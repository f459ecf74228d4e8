//! Real programs give the same results under `LD_PRELOAD=libunimem.so` as with glibc's
//! malloc: python3 (an allocation-heavy workload, with pymalloc and with every object
//! through malloc), gcc compiling a generated C file (identical executables), git on a fresh repository (commit,
//! log, diff, gc, fsck), and sort on 20 MB of pseudo-random lines.
//!
//! Each shim run sets `UNIMEM_VERBOSE=1`, so every process that loaded the shim and
//! allocated prints `unimem: arena ...` on stderr; the tests require those lines (at least
//! one per process they expect) and remove them before comparing stderr. The programs
//! must be installed: a missing one fails the test with the command that installs it.

mod common;

use common::*;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(300);

/// Fail with an install hint if `program` cannot be run.
fn require(program: &str, package: &str) {
    let ok = Command::new(program)
        .arg("--version")
        .env_remove("LD_PRELOAD")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(ok, "`{program}` is not installed: install it (apt-get install {package}); .ci/deps does this in CI");
}

fn shim_run(cmd: &mut Command) -> Out {
    run(with_shim(cmd).env("UNIMEM_VERBOSE", "1"), TIMEOUT)
}

fn base_run(cmd: &mut Command) -> Out {
    run(without_shim(cmd).env_remove("UNIMEM_VERBOSE"), TIMEOUT)
}

/// The first line where two outputs differ, for a readable failure.
fn first_difference(a: &[u8], b: &[u8]) -> String {
    let (a, b) = (String::from_utf8_lossy(a), String::from_utf8_lossy(b));
    for (i, (x, y)) in a.lines().zip(b.lines()).enumerate() {
        if x != y {
            return format!("line {}: with unimem `{x}`, without `{y}`", i + 1);
        }
    }
    format!(
        "one output is a prefix of the other ({} vs {} lines)",
        a.lines().count(),
        b.lines().count()
    )
}

/// Check that `shim` and `base` (the same command with and without the shim) agree in exit
/// status, stdout and stderr, and that at least `min_processes` processes loaded the shim.
fn same(what: &str, shim: &Out, base: &Out, min_processes: usize) {
    let (shim_err, loaded) = shim.stderr_without_arena_lines();
    assert!(
        loaded >= min_processes,
        "{what}: libunimem.so was loaded in {loaded} process(es), expected at least {min_processes} \
         (no `{ARENA_LINE}` line from UNIMEM_VERBOSE=1); stderr:\n{}",
        shim.stderr
    );
    assert_eq!(
        shim.status.code(),
        base.status.code(),
        "{what}: exit status differs\nunimem stderr:\n{}",
        shim.stderr
    );
    assert!(
        shim.stdout == base.stdout,
        "{what}: stdout differs: {}",
        first_difference(&shim.stdout, &base.stdout)
    );
    assert_eq!(shim_err, base.stderr, "{what}: stderr differs");
}

/// The python3 interpreter itself, not a wrapper script (pyenv and the like run one).
fn python3() -> String {
    require("python3", "python3");
    let exe = Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .env_remove("LD_PRELOAD")
        .output()
        .unwrap();
    String::from_utf8(exe.stdout).unwrap().trim().to_string()
}

#[test]
fn python() {
    let python = python3();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/programs/alloc_heavy.py");
    // pymalloc serves small objects from its own arenas; PYTHONMALLOC=malloc sends every
    // object through malloc and free.
    for pymalloc in ["pymalloc", "malloc"] {
        let cmd = || {
            let mut c = Command::new(&python);
            c.arg(&script)
                .env("PYTHONMALLOC", pymalloc)
                .env("PYTHONHASHSEED", "0");
            c
        };
        let (mut shim, mut base) = (shim_run(&mut cmd()), base_run(&mut cmd()));
        let what = format!("python3 (PYTHONMALLOC={pymalloc})");
        shim.assert_success(&what);
        for (out, proof) in [
            (&mut shim, "unimem-proof: managed=1\n"),
            (&mut base, "unimem-proof: absent\n"),
        ] {
            assert!(
                out.stderr.contains(proof),
                "{what}: expected `{}` on stderr:\n{}",
                proof.trim(),
                out.stderr
            );
            out.stderr = out.stderr.replacen(proof, "", 1);
        }
        same(&what, &shim, &base, 1);
    }
}

/// `tests/programs/kernel_objects.py`: CPython's own objects (a list of ints, a list of
/// tuples) read by kernels through the interpreter's object layout, via ctypes and the C
/// API, checked against Python, changed and read again; a static small int makes a clear
/// error. Must pass, or skip without a device (it fails with `UNIMEM_REQUIRE_DEVICE=1`).
/// `pymalloc`: run with pymalloc on instead, where the script checks the error a kernel
/// reaching a pymalloc'ed object makes.
fn python_objects_in_kernels(in_place: &str, pymalloc: bool) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/programs/kernel_objects.py");
    let mut cmd = Command::new(python3());
    cmd.arg(&script).env("PYTHONMALLOC", if pymalloc { "pymalloc" } else { "malloc" });
    if pymalloc {
        cmd.arg("--pymalloc");
    }
    let out = run(with_shim(&mut cmd).env("UNIMEM_IN_PLACE", in_place), TIMEOUT);
    out.assert_passed_or_skipped("kernel_objects");
}

#[test]
fn python_objects_in_kernels_in_place() {
    python_objects_in_kernels("auto", false);
}

/// The same with blocks migrating into device frames.
#[test]
fn python_objects_in_kernels_migrating() {
    python_objects_in_kernels("off", false);
}

/// With pymalloc on, the error names pymalloc and the fix.
#[test]
fn python_pymalloc_objects_in_kernels_fail_clearly() {
    python_objects_in_kernels("auto", true);
}

/// A C program with a warning, many functions (work for cc1) and deterministic output.
fn generated_c_source() -> String {
    let mut s = String::from("#include <stdio.h>\n#include <stdlib.h>\n#include <string.h>\n\n");
    for i in 0..600 {
        s += &format!(
            "static unsigned long f{i}(unsigned long x) {{\n    unsigned long a[{n}];\n    \
             for (int k = 0; k < {n}; k++) a[k] = x * {m}u + (unsigned long)k;\n    \
             unsigned long r = 0;\n    for (int k = 0; k < {n}; k++) r ^= a[k] >> (k % 7);\n    \
             return r + {i}u;\n}}\n",
            n = 4 + i % 13,
            m = 2 * i + 1
        );
    }
    s += "static int cmp(const void *a, const void *b) {\n    \
          unsigned long x = *(const unsigned long *)a, y = *(const unsigned long *)b;\n    \
          return x < y ? -1 : x > y;\n}\n\nint main(void) {\n    int unused_variable;\n    \
          unsigned long v[600], x = 1;\n";
    for i in 0..600 {
        s += &format!("    x = f{i}(x); v[{i}] = x;\n");
    }
    s += "    qsort(v, 600, sizeof v[0], cmp);\n    char *text = malloc(100000);\n    text[0] = 0;\n    \
          for (int i = 0; i < 600; i += 50) { char b[32]; snprintf(b, sizeof b, \"%lx \", v[i]); strcat(text, b); }\n    \
          printf(\"%s\\n%lx\\n\", text, x);\n    free(text);\n    return 0;\n}\n";
    s
}

#[test]
fn gcc() {
    require("gcc", "gcc");
    let src = generated_c_source();
    let mut outs = Vec::new();
    for (label, shim) in [("gcc-unimem", true), ("gcc-glibc", false)] {
        let dir = scratch(label);
        std::fs::write(dir.join("prog.c"), &src).unwrap();
        let mut cmd = Command::new("gcc");
        cmd.args(["-O2", "-Wall", "-o", "prog", "prog.c"])
            .current_dir(&dir)
            .env("LC_ALL", "C");
        let compile = if shim {
            shim_run(&mut cmd)
        } else {
            base_run(&mut cmd)
        };
        let prog = base_run(&mut Command::new(dir.join("prog")));
        let binary = std::fs::read(dir.join("prog")).unwrap_or_default();
        outs.push((compile, prog, binary));
    }
    let ((shim_cc, shim_prog, shim_bin), (base_cc, base_prog, base_bin)) = (&outs[0], &outs[1]);
    base_cc.assert_success("gcc without the shim");
    // The driver, cc1, as, collect2 and ld each load the shim.
    same("gcc -O2 -Wall", shim_cc, base_cc, 4);
    assert!(
        base_cc.stderr.contains("unused_variable"),
        "the expected warning is missing:\n{}",
        base_cc.stderr
    );
    base_prog.assert_success("the program gcc built");
    shim_prog.assert_success("the program gcc built under libunimem.so");
    assert_eq!(
        shim_prog.stdout, base_prog.stdout,
        "the programs built with and without the shim print different output"
    );
    // Same input, same relative paths, no debug info: gcc's output is byte for byte the same.
    assert!(
        shim_bin == base_bin,
        "gcc produced different executables with and without the shim"
    );
}

#[test]
fn git() {
    require("git", "git");
    let mut transcripts = Vec::new();
    for (label, shim) in [("git-unimem", true), ("git-glibc", false)] {
        let dir = scratch(label);
        let repo = dir.join("repo");
        std::fs::create_dir_all(repo.join("src")).unwrap();
        let git = |args: &[&str]| {
            let mut cmd = Command::new("git");
            cmd.args(["-c", "gc.autoDetach=false", "-c", "core.pager=cat"])
                .args(args)
                .current_dir(&repo);
            for (k, v) in [
                ("GIT_AUTHOR_NAME", "unimem test"),
                ("GIT_AUTHOR_EMAIL", "test@unimem.invalid"),
                ("GIT_AUTHOR_DATE", "2024-01-01T00:00:00+0000"),
                ("GIT_COMMITTER_NAME", "unimem test"),
                ("GIT_COMMITTER_EMAIL", "test@unimem.invalid"),
                ("GIT_COMMITTER_DATE", "2024-01-01T00:00:00+0000"),
                ("GIT_CONFIG_NOSYSTEM", "1"),
                ("GIT_CONFIG_GLOBAL", "/dev/null"),
                ("LC_ALL", "C"),
                ("TZ", "UTC"),
            ] {
                cmd.env(k, v);
            }
            cmd.env("HOME", &dir);
            if shim {
                shim_run(&mut cmd)
            } else {
                base_run(&mut cmd)
            }
        };
        let write = |name: &str, lines: usize, salt: usize| {
            let text: String = (0..lines)
                .map(|i| format!("{name} line {i} value {}\n", (i * 7919 + salt) % 10007))
                .collect();
            std::fs::write(repo.join(name), text).unwrap();
        };
        let mut log = Vec::new();
        let mut step = |args: &[&str]| log.push((args.join(" "), git(args)));
        step(&["init", "-q", "-b", "main"]);
        for (i, name) in ["a.txt", "b.txt", "src/c.txt", "src/d.txt"]
            .iter()
            .enumerate()
        {
            write(name, 2000 + 500 * i, 1);
        }
        step(&["add", "-A"]);
        step(&["commit", "-q", "-m", "first"]);
        write("a.txt", 2100, 2);
        write("src/d.txt", 1000, 3);
        std::fs::remove_file(repo.join("b.txt")).unwrap();
        step(&["add", "-A"]);
        step(&["commit", "-q", "-m", "second: edit a, shrink d, remove b"]);
        for i in 0..5 {
            write("src/c.txt", 3000 + i * 10, 10 + i);
            step(&["commit", "-q", "-a", "-m", &format!("churn {i}")]);
        }
        step(&["log", "--stat", "--format=fuller"]);
        step(&["diff", "HEAD~6", "HEAD"]);
        step(&["gc", "--quiet", "--aggressive"]);
        step(&["fsck", "--no-progress", "--full"]);
        step(&["log", "--oneline", "--all"]);
        step(&["diff", "--stat", "HEAD~3"]);
        step(&["cat-file", "-p", "HEAD~2:src/c.txt"]);
        transcripts.push(log);
    }
    for ((args, shim), (_, base)) in transcripts[0].iter().zip(&transcripts[1]) {
        base.assert_success(&format!("git {args} without the shim"));
        same(&format!("git {args}"), shim, base, 1);
    }
}

#[test]
fn sort() {
    require("sort", "coreutils");
    let dir = scratch("sort");
    let input = dir.join("lines.txt");
    let mut text = String::with_capacity(21 << 20);
    let mut x: u64 = 0x2545F4914F6CDD1D;
    while text.len() < 20 << 20 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        text += &format!("{:012x} {} word{}\n", x >> 16, x % 100_000, x % 977);
    }
    std::fs::write(&input, &text).unwrap();
    // Plain, numeric on a key, and with a small buffer and two threads (temporary files
    // and a multi-threaded merge).
    for args in [
        &["lines.txt"][..],
        &["-n", "-k2", "lines.txt"],
        &["-S", "4M", "--parallel=2", "-k3,3", "-k1", "lines.txt"],
    ] {
        let cmd = || {
            let mut c = Command::new("sort");
            c.args(args)
                .current_dir(&dir)
                .env("LC_ALL", "C")
                .env("TMPDIR", &dir);
            c
        };
        let (shim, base) = (shim_run(&mut cmd()), base_run(&mut cmd()));
        base.assert_success("sort without the shim");
        assert!(base.stdout.len() == text.len(), "sort {args:?} lost data");
        same(&format!("sort {args:?}"), &shim, &base, 1);
    }
}
