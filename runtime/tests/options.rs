//! A bad value of a runtime option read when the runtime starts is an error that names the
//! variable, its value and what it accepts, never a silent default: the runtime does not
//! start, and later calls say it failed to start, with the same message (docs/OPTIONS.md).
//! The runtime starts once per process, so each case runs in a child process: this binary
//! again, running only [`child`], with the variable set.

use std::process::Command;

#[global_allocator]
static A: unimem::Allocator = unimem::Allocator;

/// Set in the child processes.
const CHILD: &str = "UNIMEM_TEST_OPTIONS_CHILD";

const KERNEL: &str = "fn k(id: u32) { unimem_store_u32(unimem_arg_ptr(0u) + u64(id) * 4lu, id); }";

/// In a child: starts the runtime by creating a kernel (the fake device has no kernels: a
/// prefetch there), tries again, and prints both outcomes, one line each.
#[test]
fn child() {
    if std::env::var_os(CHILD).is_none() {
        return;
    }
    if let Ok(v) = std::env::var(unimem::options::REQUIRE_DEVICE.name) {
        // The tests' own option, read as the test rule reads it (without starting anything).
        println!("first: {v}: {:?}", unimem::options::require_device());
        println!("again: -");
        return;
    }
    let v = Box::new([0u32; 16]); // in the managed heap (this binary's allocator)
    let start = || -> Result<(), unimem::Error> {
        if std::env::var("UNIMEM_DEVICE").is_ok_and(|d| d == "fake") {
            return unimem::prefetch(v.as_ptr().cast(), 64, unimem::Location::Device);
        }
        unimem::Kernel::new(KERNEL, "k").map(drop)
    };
    for attempt in ["first", "again"] {
        match start() {
            Ok(()) => println!("{attempt}: ok"),
            Err(e) => println!("{attempt}: {}", e.to_string().replace('\n', " ")),
        }
    }
}

/// Runs [`child`] with `env` set, other runtime options unset; its two lines.
fn run(env: &[(&str, &str)]) -> (String, String) {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", "child", "--nocapture", "--test-threads=1"]).env(CHILD, "1");
    for o in unimem::options::ALL {
        cmd.env_remove(o.name);
    }
    let out = cmd.envs(env.iter().copied()).output().expect("run the child");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{env:?}: {text}\n{}", String::from_utf8_lossy(&out.stderr));
    // The harness prints `test child ... ` before the child's first line.
    let line = |what: &str| text.lines().find_map(|l| l.split_once(what)).map(|(_, r)| r.to_owned()).unwrap_or_else(|| panic!("{env:?}: no `{what}` line in {text}"));
    (line("first: "), line("again: "))
}

/// True when the machine has a Vulkan device for the runtime (else the cases that need one
/// skip, unless `UNIMEM_REQUIRE_DEVICE` says otherwise).
fn have_device() -> bool {
    unimem::device::test_support::or_skip("options", unimem::device::Device::open()).is_some()
}

#[test]
fn a_bad_value_stops_the_runtime_naming_the_variable_and_what_it_accepts() {
    let mut cases = vec![
        (vec![("UNIMEM_DEVICE", "fake"), ("UNIMEM_BLOCK_SIZE", "3K")], "UNIMEM_BLOCK_SIZE=\"3K\" is not a power of two from 4K to 16M"),
        (vec![("UNIMEM_DEVICE", "fake"), ("UNIMEM_DEVICE_MEMORY", "lots")], "UNIMEM_DEVICE_MEMORY=\"lots\" is not a byte count"),
        (vec![("UNIMEM_DEVICE", "fake"), ("UNIMEM_FAULTS", "fast")], "UNIMEM_FAULTS=\"fast\" is not one of auto, uffd, mprotect"),
        // Unused by the fake device, still checked.
        (vec![("UNIMEM_DEVICE", "fake"), ("UNIMEM_DEVICE_COPY", "fast")], "UNIMEM_DEVICE_COPY=\"fast\" is not one of auto, direct, staging"),
        (vec![("UNIMEM_DEVICE", "fake"), ("UNIMEM_IN_PLACE", "maybe")], "UNIMEM_IN_PLACE=\"maybe\" is not one of auto, on, off"),
    ];
    if have_device() {
        cases.extend([
            (vec![("UNIMEM_BLOCK_SIZE", "3K")], "UNIMEM_BLOCK_SIZE=\"3K\" is not a power of two from 4K to 16M"),
            (vec![("UNIMEM_DEVICE_MEMORY", "lots")], "UNIMEM_DEVICE_MEMORY=\"lots\" is not a byte count"),
            (vec![("UNIMEM_DEVICE_COPY", "fast")], "UNIMEM_DEVICE_COPY=\"fast\" is not one of auto, direct, staging"),
            (vec![("UNIMEM_IN_PLACE", "maybe")], "UNIMEM_IN_PLACE=\"maybe\" is not one of auto, on, off"),
            (vec![("UNIMEM_FAULTS", "fast")], "UNIMEM_FAULTS=\"fast\" is not one of auto, uffd, mprotect"),
            (vec![("UNIMEM_DEVICE", "no-such-gpu-xyz")], "UNIMEM_DEVICE=\"no-such-gpu-xyz\" matches no Vulkan device"),
        ]);
    }
    for (env, want) in cases {
        let (first, again) = run(&env);
        assert!(first.starts_with(&format!("unimem: {want}")), "{env:?}: {first}");
        assert!(first.contains("unset it"), "{env:?}: says what to do: {first}");
        assert_eq!(again, first.replacen("unimem: ", "unimem: the runtime failed to start earlier: ", 1), "{env:?}");
    }
}

/// The fake device has no in-place mode: asking for it is refused, saying so; `off` and
/// `auto` are what it does anyway.
#[test]
fn the_fake_device_refuses_in_place() {
    let (first, _) = run(&[("UNIMEM_DEVICE", "fake"), ("UNIMEM_IN_PLACE", "on")]);
    assert!(first.contains("UNIMEM_IN_PLACE=on: the fake device (UNIMEM_DEVICE=fake) has no in-place mode"), "{first}");
    for mode in ["off", "auto"] {
        assert_eq!(run(&[("UNIMEM_DEVICE", "fake"), ("UNIMEM_IN_PLACE", mode), ("UNIMEM_DEVICE_COPY", "staging")]).0, "ok", "{mode}");
    }
}

/// Keyword options are read as the others are: trimmed, in any case.
#[test]
fn keyword_values_are_read_in_any_case() {
    let (first, _) = run(&[("UNIMEM_DEVICE", "fake"), ("UNIMEM_FAULTS", " MProtect ")]);
    assert_eq!(first, "ok");
    if have_device() {
        let (first, _) = run(&[("UNIMEM_FAULTS", "Auto"), ("UNIMEM_IN_PLACE", "Off"), ("UNIMEM_DEVICE_COPY", "STAGING")]);
        assert_eq!(first, "ok");
    }
}

/// `UNIMEM_REQUIRE_DEVICE`, which turns a missing device from a skip into a failure, takes
/// the on/off spellings of the other options; a misspelt value is an error naming it, not a
/// silent "off" (which would turn failures back into skips).
#[test]
fn require_device_is_on_off_and_a_bad_value_is_an_error() {
    for (value, want) in [("1", "Ok(true)"), ("Yes", "Ok(true)"), ("off", "Ok(false)"), ("0", "Ok(false)")] {
        assert_eq!(run(&[("UNIMEM_REQUIRE_DEVICE", value)]).0, format!("{value}: {want}"));
    }
    let (first, _) = run(&[("UNIMEM_REQUIRE_DEVICE", "maybe")]);
    assert!(first.contains("UNIMEM_REQUIRE_DEVICE=\\\"maybe\\\" is not one of on, off"), "{first}");
}
