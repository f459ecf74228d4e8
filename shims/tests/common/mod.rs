//! Shared by the integration tests of libunimem.so: find the built library, compile the C
//! test programs of `tests/c/`, and run programs with or without `LD_PRELOAD`, with a
//! timeout and captured output.
#![allow(dead_code)] // each test binary uses a different part

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The line `UNIMEM_VERBOSE=1` makes the allocator print in every process it initialises in.
pub const ARENA_LINE: &str = "unimem: arena ";

/// `libunimem.so` of the profile these tests were built with, rebuilt if out of date.
///
/// `cargo test` does not build a `cdylib` for integration tests (it builds only libraries
/// it can link, and this package cannot also be an rlib: its lib name `unimem` would
/// collide with the runtime crate's), so the first call runs `cargo build` for this
/// package with the tests' profile and target directory. Cargo releases its build lock
/// before running tests, so this does not block.
pub fn lib() -> &'static Path {
    static LIB: OnceLock<PathBuf> = OnceLock::new();
    LIB.get_or_init(|| {
        let exe = std::env::current_exe().expect("current_exe");
        // <target dir>[/<triple>]/<profile dir>/deps/<test binary>
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("test binary in <target>/<profile>/deps");
        let above = profile_dir
            .parent()
            .expect("profile directory has a parent");
        let (target_dir, triple) = if above.join("CACHEDIR.TAG").exists() {
            (above, None)
        } else {
            (above.parent().expect("target directory"), above.file_name())
        };
        let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
            Some("debug") => "dev",
            Some(other) => other,
            None => panic!("unexpected test binary location {}", exe.display()),
        };
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut cmd = Command::new(&cargo);
        cmd.args([
            "build",
            "--quiet",
            "-p",
            "unimem-preload",
            "--profile",
            profile,
        ])
        .arg("--target-dir")
        .arg(target_dir);
        if let Some(t) = triple {
            cmd.arg("--target").arg(t);
        }
        let out = cmd
            .env_remove("LD_PRELOAD")
            .output()
            .unwrap_or_else(|e| panic!("cannot run {cargo:?} to build libunimem.so: {e}"));
        assert!(
            out.status.success(),
            "building libunimem.so failed ({cmd:?}):\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let so = profile_dir.join("libunimem.so");
        assert!(
            so.is_file(),
            "{cmd:?} succeeded but {} does not exist",
            so.display()
        );
        so
    })
}

/// A fresh, empty scratch directory for one test.
pub fn scratch(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("unimem-preload")
        .join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap_or_else(|e| panic!("cannot create {}: {e}", d.display()));
    d
}

fn manifest_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Run the C compiler (`$CC`, default `cc`; `$CXX`, default `c++`, when `cxx`) with
/// `args`, panicking with its output if it fails.
pub fn cc(cxx: bool, args: &[&OsStr], what: &str) {
    let (var, default) = if cxx { ("CXX", "c++") } else { ("CC", "cc") };
    let compiler = std::env::var(var).unwrap_or_else(|_| default.into());
    let out = Command::new(&compiler).args(args).env_remove("LD_PRELOAD").output().unwrap_or_else(|e| {
        panic!("cannot run the compiler `{compiler}` ({e}); install gcc and g++ (apt-get install gcc g++) or set {var}")
    });
    assert!(
        out.status.success(),
        "{what} failed ({compiler} {args:?}):\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Compile `tests/c/<name>.c`, or `tests/c/<name>.cpp` with the C++ compiler, (once per
/// test process) and return the executable. `link` is added at the end of the command line
/// (the first call for a name decides).
pub fn compile_c(name: &str, link: &[&OsStr]) -> PathBuf {
    static BUILT: Mutex<Option<HashMap<String, PathBuf>>> = Mutex::new(None);
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    let built = built.get_or_insert_with(HashMap::new);
    if let Some(p) = built.get(name) {
        return p.clone();
    }
    let exe = scratch(&format!("c-{name}")).join(name);
    let cpp = manifest_dir().join("tests/c").join(format!("{name}.cpp"));
    let cxx = cpp.is_file();
    let src = if cxx { cpp } else { manifest_dir().join("tests/c").join(format!("{name}.c")) };
    let (include, tests_c) = (
        manifest_dir().join("include"),
        manifest_dir().join("tests/c"),
    );
    let std = if cxx { "-std=gnu++17" } else { "-std=gnu11" };
    let mut args: Vec<&OsStr> = [
        std,
        "-O1",
        "-g",
        "-fno-builtin",
        "-Wall",
        "-Wextra",
        "-Werror",
        "-pthread",
    ]
    .into_iter()
    .map(OsStr::new)
    .collect();
    args.extend([
        OsStr::new("-I"),
        include.as_os_str(),
        OsStr::new("-I"),
        tests_c.as_os_str(),
    ]);
    args.extend([
        src.as_os_str(),
        OsStr::new("-o"),
        exe.as_os_str(),
        OsStr::new("-ldl"),
    ]);
    args.extend(link);
    cc(cxx, &args, &format!("compiling {}", src.display()));
    built.insert(name.to_string(), exe.clone());
    exe
}

/// Run under `LD_PRELOAD=libunimem.so`.
pub fn with_shim(cmd: &mut Command) -> &mut Command {
    cmd.env("LD_PRELOAD", lib())
}

/// Run with the system allocator (no preload inherited from the caller either).
pub fn without_shim(cmd: &mut Command) -> &mut Command {
    cmd.env_remove("LD_PRELOAD")
}

/// What a finished program produced.
pub struct Out {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: String,
}

impl Out {
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// Panic with everything the program said unless it exited with status 0.
    pub fn assert_success(&self, what: &str) {
        assert!(
            self.status.success(),
            "{what}: {:?}\nstdout:\n{}\nstderr:\n{}",
            self.status,
            self.stdout_text(),
            self.stderr
        );
    }

    /// For a sample that reports on stdout: panic unless it exited with status 0 and
    /// printed `PASS <name>` or `SKIP <name>` (no Vulkan device, which it only reports
    /// without `UNIMEM_REQUIRE_DEVICE=1`); echo what it printed.
    pub fn assert_passed_or_skipped(&self, name: &str) {
        self.assert_success(&format!("the {name} sample"));
        let text = self.stdout_text();
        assert!(
            text.starts_with(&format!("PASS {name}")) || text.starts_with(&format!("SKIP {name}")),
            "{text}\n{}",
            self.stderr
        );
        eprintln!("{text}");
    }

    /// Stderr without the allocator's start-up lines, and how many there were (one per
    /// process that loaded the shim and allocated).
    pub fn stderr_without_arena_lines(&self) -> (String, usize) {
        let mut n = 0;
        let mut rest = String::new();
        for line in self.stderr.split_inclusive('\n') {
            if line.starts_with(ARENA_LINE) {
                n += 1;
            } else {
                rest.push_str(line);
            }
        }
        (rest, n)
    }
}

/// Read `r` to its end on a thread, appending to a buffer that can be looked at meanwhile.
fn drain(mut r: impl Read + Send + 'static) -> (std::thread::JoinHandle<()>, Arc<Mutex<Vec<u8>>>) {
    let buf = Arc::new(Mutex::new(Vec::new()));
    let sink = buf.clone();
    let h = std::thread::spawn(move || {
        let mut chunk = [0u8; 1 << 16];
        while let Ok(n @ 1..) = r.read(&mut chunk) {
            sink.lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend_from_slice(&chunk[..n]);
        }
    });
    (h, buf)
}

fn take(buf: &Mutex<Vec<u8>>) -> Vec<u8> {
    std::mem::take(&mut *buf.lock().unwrap_or_else(|e| e.into_inner()))
}

/// Run `cmd` to completion with captured output. A program still running after `timeout`
/// is killed and the test fails, naming it and showing its stderr so far (without waiting
/// for descendants that may still hold the pipes).
pub fn run(cmd: &mut Command, timeout: Duration) -> Out {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child: Child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    let (out_thread, out) = drain(child.stdout.take().expect("piped stdout"));
    let (err_thread, err) = drain(child.stderr.take().expect("piped stderr"));
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            std::thread::sleep(Duration::from_millis(100));
            let err = String::from_utf8_lossy(&take(&err)).into_owned();
            panic!("{cmd:?} did not finish within {timeout:?} (killed); stderr so far:\n{err}");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let _ = out_thread.join();
    let _ = err_thread.join();
    Out {
        status,
        stdout: take(&out),
        stderr: String::from_utf8_lossy(&take(&err)).into_owned(),
    }
}
