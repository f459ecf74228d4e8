//! `shims/include/unimem.h` is the product (style point 12): these tests keep it in step
//! with the Rust definitions and with what `libunimem.so` exports.
//!
//! - every function the header declares is defined in `src/capi.rs` with the same C
//!   signature, and every `unimem_*` function there is declared in the header;
//! - every `UNIMEM_*` constant has the same value on both sides;
//! - `unimem_stats` has the same fields, in the same order, with the same types as
//!   `UnimemStats`;
//! - the library exports exactly the header's functions plus the C allocation API;
//! - the header compiles as strict C99 and C++11, and a program that includes it and links
//!   with `-lunimem` works.

mod common;

use common::*;
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::process::Command;
use std::time::Duration;

fn manifest(path: &str) -> String {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("cannot read {}: {e}", p.display()))
}

/// The C text without comments and preprocessor lines.
fn c_code(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find("/*") {
        out.push_str(&rest[..i]);
        rest = rest[i..].find("*/").map_or("", |j| &rest[i + j + 2..]);
    }
    out.push_str(rest);
    out.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Normalise a C type: single spaces, `*` as its own token, no parameter name.
fn c_type(decl: &str, drop_name: bool) -> String {
    let spaced = decl.replace('*', " * ");
    let mut toks: Vec<&str> = spaced.split_whitespace().collect();
    const TYPE_WORDS: [&str; 12] = [
        "void", "int", "char", "const", "unsigned", "long", "size_t", "*", "struct", "unimem_stats",
        "unimem_kernel", "uint32_t",
    ];
    if drop_name && toks.len() > 1 && !TYPE_WORDS.contains(toks.last().unwrap()) {
        toks.pop();
    }
    toks.join(" ")
}

/// `name -> "ret(arg, arg)"` for every `unimem_*` function the header declares.
fn header_functions() -> BTreeMap<String, String> {
    let code = c_code(&manifest("include/unimem.h"));
    let mut fns = BTreeMap::new();
    for stmt in code.split(';') {
        let stmt = stmt.split('}').next_back().unwrap_or("").trim();
        let Some(open) = stmt.find('(') else { continue };
        let head = &stmt[..open];
        let Some(name) = head
            .split(|c: char| c.is_whitespace() || c == '*')
            .next_back()
        else {
            continue;
        };
        if !name.starts_with("unimem_") {
            continue;
        }
        let ret = c_type(&head[..head.len() - name.len()], false);
        let params = stmt[open + 1..stmt.rfind(')').expect("closing parenthesis")].trim();
        let params: Vec<String> = if params == "void" {
            vec![]
        } else {
            params.split(',').map(|p| c_type(p, true)).collect()
        };
        fns.insert(name.to_string(), format!("{ret}({})", params.join(", ")));
    }
    fns
}

/// A Rust FFI type as the C type it stands for. Extend when the API grows.
fn rust_to_c(t: &str) -> String {
    match t.trim() {
        "" | "()" => "void",
        "c_int" => "int",
        "c_uint" => "unsigned int",
        "usize" | "size_t" => "size_t",
        "*const c_void" => "const void *",
        "*mut c_void" => "void *",
        "*const c_char" => "const char *",
        "*mut UnimemStats" => "unimem_stats *",
        "*mut UnimemKernel" => "unimem_kernel *",
        "u32" => "uint32_t",
        other => {
            panic!("header test: no C spelling for the Rust type `{other}`; add it to rust_to_c")
        }
    }
    .to_string()
}

/// `name -> "ret(arg, arg)"` for every `unimem_*` function `src/capi.rs` defines.
fn rust_functions() -> BTreeMap<String, String> {
    let src = manifest("src/capi.rs");
    let mut fns = BTreeMap::new();
    for (i, _) in src.match_indices("extern \"C\" fn unimem_") {
        let rest = &src[i + "extern \"C\" fn ".len()..];
        let open = rest.find('(').unwrap();
        let close = rest.find(')').unwrap();
        let name = &rest[..open];
        let params: Vec<String> = rest[open + 1..close]
            .split(',')
            .filter(|p| !p.trim().is_empty())
            .map(|p| rust_to_c(p.split_once(':').expect("name: type").1))
            .collect();
        let after = rest[close + 1..rest.find('{').unwrap()].trim();
        let ret = rust_to_c(after.strip_prefix("->").unwrap_or(""));
        fns.insert(
            name.to_string(),
            format!("{}({})", c_type(&ret, false), params.join(", ")),
        );
    }
    fns
}

/// `UNIMEM_* = value` pairs from the header's enums and `#define`s, and from the Rust consts.
fn constants() -> (BTreeMap<String, i64>, BTreeMap<String, i64>) {
    let header = manifest("include/unimem.h");
    let mut c = BTreeMap::new();
    let code = c_code(&header);
    for part in code.split([',', '{', '}', '\n']) {
        if let Some((name, value)) = part.split_once('=') {
            let name = name.trim();
            if name.starts_with("UNIMEM_") {
                c.insert(
                    name.to_string(),
                    value.trim().parse().expect("integer constant"),
                );
            }
        }
    }
    for line in header.lines() {
        let toks: Vec<&str> = line.split_whitespace().collect();
        if toks.len() == 3
            && toks[0] == "#define"
            && toks[1].starts_with("UNIMEM_")
            && toks[1] != "UNIMEM_H"
        {
            c.insert(
                toks[1].to_string(),
                toks[2].parse().expect("integer #define"),
            );
        }
    }
    let mut r = BTreeMap::new();
    for line in manifest("src/capi.rs").lines() {
        if let Some(rest) = line.trim().strip_prefix("pub const UNIMEM_") {
            let (name, value) = rest.split_once(':').unwrap();
            let value = value
                .split_once('=')
                .unwrap()
                .1
                .trim()
                .trim_end_matches(';');
            r.insert(
                format!("UNIMEM_{name}"),
                value.parse().expect("integer const"),
            );
        }
    }
    (c, r)
}

/// `(C type, name)` of each field of a struct, in order.
type Fields = Vec<(String, String)>;

/// The text between `open` (ending in `{`) and the next `}` of `text`.
fn struct_body<'a>(text: &'a str, open: &str) -> &'a str {
    let body = text.split_once(open).unwrap_or_else(|| panic!("`{open}` not found")).1;
    &body[..body.find('}').unwrap_or_else(|| panic!("no `}}` after `{open}`"))]
}

/// The fields of `unimem_stats` in the header, and of `UnimemStats` in `src/capi.rs` (Rust
/// types spelled in C).
fn stats_fields() -> (Fields, Fields) {
    let code = c_code(&manifest("include/unimem.h"));
    let c = struct_body(&code, "typedef struct unimem_stats {")
        .split(';')
        .filter(|f| !f.trim().is_empty())
        .map(|f| {
            let (t, name) = f.trim().rsplit_once(char::is_whitespace).expect("type name");
            (c_type(t, false), name.to_string())
        })
        .collect();
    let src = manifest("src/capi.rs");
    let r = struct_body(&src, "pub struct UnimemStats {")
        .lines()
        .filter_map(|l| l.trim().strip_prefix("pub "))
        .map(|f| {
            let (name, t) = f.trim_end_matches(',').split_once(':').expect("name: type");
            let t = match t.trim() {
                "u64" => "uint64_t".to_string(),
                other => rust_to_c(other),
            };
            (t, name.trim().to_string())
        })
        .collect();
    (c, r)
}

#[test]
fn header_matches_rust_definitions() {
    let (h, r) = (header_functions(), rust_functions());
    assert!(
        !h.is_empty(),
        "no unimem_* function found in unimem.h: is the parser broken?"
    );
    assert_eq!(h, r, "unimem.h (left) and src/capi.rs (right) disagree");
    let (hc, rc) = constants();
    assert!(!hc.is_empty(), "no UNIMEM_* constant found in unimem.h");
    assert_eq!(
        hc, rc,
        "constants of unimem.h (left) and src/capi.rs (right) disagree"
    );
    let (hs, rs) = stats_fields();
    assert!(hs.len() >= 10, "unimem_stats fields not found in unimem.h: {hs:?}");
    assert_eq!(
        hs, rs,
        "unimem_stats in unimem.h (left) and UnimemStats in src/capi.rs (right) disagree"
    );
}

/// The C allocation API and the wrappers the library must export besides `unimem_*`.
const C_EXPORTS: &[&str] = &[
    "malloc",
    "free",
    "calloc",
    "realloc",
    "reallocarray",
    "posix_memalign",
    "aligned_alloc",
    "memalign",
    "valloc",
    "pvalloc",
    "malloc_usable_size",
    "malloc_trim",
    "free_sized",
    "free_aligned_sized",
    "cfree",
    "__libc_malloc",
    "__libc_free",
    "__libc_calloc",
    "__libc_realloc",
    "__libc_memalign",
    "__libc_valloc",
    "__libc_pvalloc",
    "pthread_create",
    // Interposed by the runtime (runtime/src/interpose.rs).
    "read",
    "write",
    "pread",
    "pread64",
    "pwrite",
    "pwrite64",
    "readv",
    "writev",
    "preadv",
    "pwritev",
    "send",
    "recv",
    "sendto",
    "recvfrom",
    "sendmsg",
    "recvmsg",
    "sigaction",
    "signal",
    "bsd_signal",
    "sysv_signal",
    "__sysv_signal",
    "sigset",
    "madvise",
    "fread",
    "fwrite",
    "getrandom",
    "sendfile",
    "sendfile64",
    "splice",
    "copy_file_range",
    "process_vm_readv",
    "process_vm_writev",
    "__read_chk",
    "__pread_chk",
    "__pread64_chk",
    "__recv_chk",
    "__recvfrom_chk",
    "__fread_chk",
    // Paths and file metadata (runtime/src/interpose/files.rs).
    "open",
    "open64",
    "openat",
    "openat64",
    "__open_2",
    "__open64_2",
    "__openat_2",
    "__openat64_2",
    "creat",
    "creat64",
    "access",
    "faccessat",
    "mkdir",
    "mkdirat",
    "rmdir",
    "unlink",
    "unlinkat",
    "rename",
    "renameat",
    "renameat2",
    "link",
    "symlink",
    "chdir",
    "chmod",
    "chown",
    "truncate",
    "truncate64",
    "utimensat",
    "readlink",
    "readlinkat",
    "__readlink_chk",
    "__readlinkat_chk",
    "getcwd",
    "__getcwd_chk",
    "fchmodat",
    "fchownat",
    "lchown",
    "linkat",
    "symlinkat",
    "futimens",
    "utime",
    "utimes",
    "lutimes",
    "futimesat",
    "mknod",
    "mknodat",
    "__xmknod",
    "__xmknodat",
    "mkfifo",
    "mkfifoat",
    "inotify_add_watch",
    "chroot",
    "acct",
    "swapon",
    "swapoff",
    "getdents64",
    "getdirentries",
    "getdirentries64",
    "statfs",
    "statfs64",
    "fstatfs",
    "fstatfs64",
    "statvfs",
    "statvfs64",
    "getxattr",
    "lgetxattr",
    "fgetxattr",
    "setxattr",
    "lsetxattr",
    "fsetxattr",
    "listxattr",
    "llistxattr",
    "flistxattr",
    "removexattr",
    "lremovexattr",
    "fremovexattr",
    "stat",
    "stat64",
    "lstat",
    "lstat64",
    "fstat",
    "fstat64",
    "fstatat",
    "fstatat64",
    "statx",
    "__xstat",
    "__xstat64",
    "__lxstat",
    "__lxstat64",
    "__fxstat",
    "__fxstat64",
    "__fxstatat",
    "__fxstatat64",
    "ioctl",
    "fcntl",
    "fcntl64",
    // Programs, children, waiting (runtime/src/interpose/process.rs).
    "execve",
    "execv",
    "execvp",
    "execvpe",
    "fexecve",
    "posix_spawn",
    "posix_spawnp",
    "system",
    "wait",
    "waitpid",
    "wait3",
    "wait4",
    "waitid",
    "pipe",
    "pipe2",
    "poll",
    "ppoll",
    "__poll_chk",
    "__ppoll_chk",
    "select",
    "pselect",
    "epoll_ctl",
    "epoll_wait",
    "epoll_pwait",
    "epoll_pwait2",
    "nanosleep",
    "clock_nanosleep",
    // Sockets (runtime/src/interpose/net.rs).
    "bind",
    "connect",
    "accept",
    "accept4",
    "getsockname",
    "getpeername",
    "getsockopt",
    "setsockopt",
    "sendmmsg",
    "recvmmsg",
    // The process and the system (runtime/src/interpose/system.rs).
    "uname",
    "getrusage",
    "sysinfo",
    "times",
    "getrlimit",
    "getrlimit64",
    "setrlimit",
    "setrlimit64",
    "prlimit",
    "prlimit64",
    "setitimer",
    "getitimer",
    "timerfd_settime",
    "timerfd_gettime",
    "sigprocmask",
    "pthread_sigmask",
    "sigpending",
    "sigsuspend",
    "sigtimedwait",
    "sigwaitinfo",
    "sigwait",
    "signalfd",
    // Streams opened in the internal heap (runtime/src/interpose.rs).
    "fopen",
    "fopen64",
    "fdopen",
    "freopen",
    "freopen64",
    "tmpfile",
    "tmpfile64",
    "popen",
    "opendir",
    "fdopendir",
];

#[test]
fn library_exports_exactly_the_api() {
    let out = Command::new("nm")
        .args(["-D", "--defined-only", "--format=posix"])
        .arg(lib())
        .output()
        .unwrap_or_else(|e| panic!("cannot run nm ({e}); install binutils"));
    assert!(
        out.status.success(),
        "nm failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let exported: BTreeSet<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| {
            l.split_whitespace()
                .nth(1)
                .is_some_and(|k| k == "T" || k == "W")
        })
        .map(|l| l.split_whitespace().next().unwrap().to_string())
        .collect();
    let mut expected: BTreeSet<String> = C_EXPORTS.iter().map(|s| s.to_string()).collect();
    expected.extend(header_functions().into_keys());
    assert_eq!(
        exported, expected,
        "libunimem.so exports (left) differ from the API (right)"
    );
}

#[test]
fn header_compiles_as_strict_c_and_cpp() {
    let dir = scratch("header-compile");
    let include = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("include");
    let src = dir.join("use.c");
    // Included twice: the include guard must hold.
    std::fs::write(&src, "#include <unimem.h>\n#include <unimem.h>\nint main(void) { return unimem_is_internal(); }\n").unwrap();
    for (cxx, std_flag) in [(false, "-std=c99"), (true, "-std=c++11")] {
        let lang = if cxx { "c++" } else { "c" };
        let flags = [
            std_flag,
            "-pedantic",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-fsyntax-only",
            "-x",
            lang,
        ];
        let args: Vec<&OsStr> = flags
            .iter()
            .map(OsStr::new)
            .chain([OsStr::new("-I"), include.as_os_str(), src.as_os_str()])
            .collect();
        cc(cxx, &args, &format!("compiling unimem.h as {std_flag}"));
    }
}

/// Compiles `tests/c/<name>.c` linked with `-lunimem` and runs it (no preload).
fn run_linked(name: &str, timeout: Duration) -> Out {
    let dir = lib().parent().unwrap();
    let link: Vec<&OsStr> = vec![OsStr::new("-L"), dir.as_os_str(), OsStr::new("-lunimem")];
    let exe = compile_c(name, &link);
    run(
        without_shim(&mut Command::new(&exe)).env("LD_LIBRARY_PATH", dir),
        timeout,
    )
}

#[test]
fn program_linked_with_lunimem() {
    let out = run_linked("capi", Duration::from_secs(60));
    out.assert_success("a program linked with -lunimem");
    assert_eq!(out.stdout_text(), "PASS capi\n");
}

/// Runs a kernel C API sample (linked with -lunimem, and run under `LD_PRELOAD` as C programs
/// use unimem): it must pass, or skip without a device (it fails with `UNIMEM_REQUIRE_DEVICE=1`).
/// `in_place`: the `UNIMEM_IN_PLACE` setting (on lavapipe `auto` means in place).
fn kernel_sample(name: &str, in_place: &str) {
    kernel_sample_with(name, in_place, "on");
}

/// As [`kernel_sample`], with `UNIMEM_DISCOVER` set to `discover`.
fn kernel_sample_with(name: &str, in_place: &str, discover: &str) {
    let dir = lib().parent().unwrap();
    let link: Vec<&OsStr> = vec![OsStr::new("-L"), dir.as_os_str(), OsStr::new("-lunimem")];
    let exe = compile_c(name, &link);
    let out = run(
        with_shim(&mut Command::new(&exe))
            .env("LD_LIBRARY_PATH", dir)
            .env("UNIMEM_IN_PLACE", in_place)
            .env("UNIMEM_DISCOVER", discover),
        Duration::from_secs(300),
    );
    out.assert_passed_or_skipped(name);
}

/// `tests/c/kernel_sync.c`: unimem_sync waits for a launch on another thread; a launch with
/// fewer argument bytes than the kernel reads fails, naming the argument word.
#[test]
fn kernel_sync_sample() {
    kernel_sample("kernel_sync", "auto");
}

#[test]
fn kernel_sync_sample_migrating() {
    kernel_sample("kernel_sync", "off");
}

/// `tests/c/kernel_list.c`: a malloc'ed list summed by a kernel, checked, mutated on the CPU
/// and launched again; a bad pointer's error; advise.
#[test]
fn kernel_list_sample() {
    kernel_sample("kernel_list", "auto");
}

/// The same with blocks migrating into device frames.
#[test]
fn kernel_list_sample_migrating() {
    kernel_sample("kernel_list", "off");
}

/// `tests/c/kernel_bst.c`: a malloc'ed BST looked up for many keys, checked; the CPU inserts
/// and changes nodes; launched again.
#[test]
fn kernel_bst_sample() {
    kernel_sample("kernel_bst", "auto");
}

/// The same with blocks migrating into device frames.
#[test]
fn kernel_bst_sample_migrating() {
    kernel_sample("kernel_bst", "off");
}

/// The same without discovery: the tree arrives by device faults and replay rounds.
#[test]
fn kernel_bst_sample_migrating_by_faults() {
    kernel_sample_with("kernel_bst", "off", "off");
}

/// `tests/c/kernel_stl.cpp`: C++ containers as they are (a `std::map` looked up, a
/// `std::vector` of `std::list` summed) walked by kernels, then changed by the CPU (erase,
/// insert, splice) and walked again.
#[test]
fn kernel_stl_sample() {
    kernel_sample("kernel_stl", "auto");
}

/// The same with blocks migrating into device frames.
#[test]
fn kernel_stl_sample_migrating() {
    kernel_sample("kernel_stl", "off");
}

/// `tests/c/kernel_io.c`: stdio streams (read after a launch; written, launched, flushed), a
/// directory stream and `stat` into a fresh struct, each buffer among objects a kernel
/// writes: nothing fails with `EFAULT` or reads short.
#[test]
fn kernel_io_sample() {
    kernel_sample("kernel_io", "auto");
}

/// The same with blocks migrating into device frames (where the buffers' blocks would move).
#[test]
fn kernel_io_sample_migrating() {
    kernel_sample("kernel_io", "off");
}

/// `tests/c/kernel_syscalls.c`: every wrapped system call (paths, stat structs, fortified and
/// pre-2.33 names, extended attributes, sockets, offsets, limits, timers, waits, polls,
/// sleeps, spawns, the exec family) on heap buffers allocated among objects a kernel writes
/// just before the call.
#[test]
fn kernel_syscalls_sample() {
    kernel_sample("kernel_syscalls", "auto");
}

/// The same with blocks migrating into device frames: every call's buffers are on the device
/// (the test checks that each call brought memory home), where the kernel returned `EFAULT`.
#[test]
fn kernel_syscalls_sample_migrating() {
    kernel_sample("kernel_syscalls", "off");
}

/// `tests/c/kernel_threads.c`: while kernels advance malloc'ed particles, other threads of
/// the program write other fields of the same particles, churn the allocator, and prefetch
/// their own buffer back and forth; every result is exact.
#[test]
fn kernel_threads_sample() {
    kernel_sample("kernel_threads", "auto");
}

/// The same with blocks migrating into device frames: the particles' blocks are merged.
#[test]
fn kernel_threads_sample_migrating() {
    kernel_sample("kernel_threads", "off");
}

/// `tests/c/kernel_fork.c`: the child of a fork taken after a launch has the kernel's results
/// and plain host memory; what needs no device succeeds there (prefetch home, sync, advice to
/// stay home), what needs one fails saying the child of a fork has no device; the parent
/// keeps launching.
#[test]
fn kernel_fork_sample() {
    kernel_sample("kernel_fork", "auto");
}

/// The same with blocks migrating into device frames: they are on the device at the fork.
#[test]
fn kernel_fork_sample_migrating() {
    kernel_sample("kernel_fork", "off");
}

/// `tests/c/kernel_madvise.c`: `madvise(MADV_DONTNEED)` and `MADV_FREE` on heap memory a kernel
/// used (on the device, migrating), through the shim and by raw system call: the memory reads
/// as zero (or, for MADV_FREE, as before) and stays usable by the CPU, system calls and kernels.
#[test]
fn kernel_madvise_sample() {
    kernel_sample("kernel_madvise", "auto");
}

/// As [`kernel_madvise_sample`], migrating.
#[test]
fn kernel_madvise_sample_migrating() {
    kernel_sample("kernel_madvise", "off");
}

/// `tests/c/kernel_signals.c`: a language runtime's signal handling next to device data: a
/// worker created with every signal blocked, a SIGBUS handler, a handler with a full
/// sa_mask and a sampling profiler's SIGPROF (siglongjmp'ing out) all read blocks a kernel
/// wrote; a chained SIGSEGV handler runs with its own mask.
#[test]
fn kernel_signals_sample() {
    kernel_sample("kernel_signals", "auto");
}

/// The same with blocks migrating into device frames, where each of those reads faults.
#[test]
fn kernel_signals_sample_migrating() {
    kernel_sample("kernel_signals", "off");
}
