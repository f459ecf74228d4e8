//! CLI tests: run the built `unimem` binary and check exit codes and messages, with a real
//! device, with no device (`VK_ICD_FILENAMES=/nonexistent`) and with no loader
//! (`UNIMEM_VULKAN_LIBRARY=<bogus path>`).

use std::process::{Command, Output};

use unimem::device::test_support::or_skip;
use unimem::info::{EXIT_DEVICE_FAILED, EXIT_NO_DEVICE, EXIT_OK};

/// Runs `unimem info` with `env` added and the device-related variables of the test's own
/// environment removed (so the outer `UNIMEM_DEVICE` etc. cannot change the outcome).
fn unimem_info(env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_unimem"));
    cmd.arg("info");
    for var in [
        "UNIMEM_DEVICE",
        "UNIMEM_VULKAN_LIBRARY",
        "VK_ICD_FILENAMES",
        "VK_DRIVER_FILES",
        "RUST_BACKTRACE",
    ] {
        cmd.env_remove(var);
    }
    cmd.envs(env.iter().copied());
    cmd.output().expect("run unimem")
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The failure paths must be reports, never crashes.
fn assert_no_panic(stdout: &str, stderr: &str) {
    for bad in ["panicked", "RUST_BACKTRACE", "stack backtrace"] {
        assert!(
            !stdout.contains(bad) && !stderr.contains(bad),
            "{bad}:\n{stdout}\n{stderr}"
        );
    }
}

/// Checks that `unimem info` exited with `code` and did not panic; returns its stdout.
fn expect_exit(out: &Output, code: i32) -> String {
    let (stdout, stderr) = text(out);
    assert_eq!(out.status.code(), Some(code), "{stdout}\n{stderr}");
    assert_no_panic(&stdout, &stderr);
    stdout
}

/// The CPU-fault part is printed whatever happens to Vulkan.
fn assert_fault_section(stdout: &str) {
    assert!(stdout.contains("CPU faults"), "{stdout}");
    assert!(
        stdout.contains("userfaultfd(UFFD_USER_MODE_ONLY)"),
        "{stdout}"
    );
    assert!(stdout.contains("SIGSEGV + mprotect"), "{stdout}");
    assert!(stdout.contains("vm.max_map_count"), "{stdout}");
}

#[test]
fn no_device_exits_3_and_says_how_to_fix() {
    let out = unimem_info(&[
        ("VK_ICD_FILENAMES", "/nonexistent"),
        ("VK_DRIVER_FILES", "/nonexistent"),
    ]);
    let stdout = expect_exit(&out, EXIT_NO_DEVICE);
    assert_fault_section(&stdout);
    assert!(stdout.contains("no Vulkan device found"), "{stdout}");
    assert!(stdout.contains("NOT READY"), "{stdout}");
    assert!(stdout.contains("mesa-vulkan-drivers"), "{stdout}");
    assert!(stdout.contains("VK_ICD_FILENAMES"), "{stdout}");
}

#[test]
fn no_loader_exits_3_and_says_how_to_fix() {
    let bogus = "/nonexistent/unimem-test/libvulkan.so.1";
    let out = unimem_info(&[("UNIMEM_VULKAN_LIBRARY", bogus)]);
    let stdout = expect_exit(&out, EXIT_NO_DEVICE);
    assert_fault_section(&stdout);
    assert!(
        stdout.contains(&format!("cannot load the Vulkan loader `{bogus}`")),
        "{stdout}"
    );
    assert!(
        stdout.contains("libvulkan1") && stdout.contains("mesa-vulkan-drivers"),
        "{stdout}"
    );
    assert!(stdout.contains("UNIMEM_VULKAN_LIBRARY"), "{stdout}");
}

#[test]
fn a_library_that_is_not_a_loader_is_reported() {
    // libc loads fine but has no vkGetInstanceProcAddr.
    let libc = [
        "/lib/x86_64-linux-gnu/libc.so.6",
        "/lib/aarch64-linux-gnu/libc.so.6",
        "/usr/lib/libc.so.6",
    ]
    .into_iter()
    .find(|p| std::path::Path::new(p).exists());
    let Some(libc) = libc else { return };
    let out = unimem_info(&[("UNIMEM_VULKAN_LIBRARY", libc)]);
    let stdout = expect_exit(&out, EXIT_NO_DEVICE);
    assert!(stdout.contains("cannot load the Vulkan loader"), "{stdout}");
}

#[test]
fn with_a_device_info_exits_0_and_lists_requirements() {
    if or_skip(
        "with_a_device_info_exits_0_and_lists_requirements",
        unimem::device::survey(),
    )
    .is_none()
    {
        return;
    }
    let out = unimem_info(&[]);
    let stdout = expect_exit(&out, EXIT_OK);
    assert_fault_section(&stdout);
    assert!(stdout.contains("<- selected"), "{stdout}");
    assert!(stdout.contains("smoke test passed"), "{stdout}");
    for feature in [
        "shaderInt64",
        "bufferDeviceAddress",
        "variablePointers",
        "VK_EXT_external_memory_host",
        "maxStorageBufferRange",
        "maxMemoryAllocationSize",
        "maxComputeWorkGroupCount",
        "memory types",
    ] {
        assert!(stdout.contains(feature), "{feature} missing:\n{stdout}");
    }
    assert!(stdout.contains("Result: ready"), "{stdout}");
}

#[test]
fn unknown_device_choice_lists_the_devices() {
    if or_skip(
        "unknown_device_choice_lists_the_devices",
        unimem::device::survey(),
    )
    .is_none()
    {
        return;
    }
    let out = unimem_info(&[("UNIMEM_DEVICE", "no-such-gpu-xyz")]);
    let stdout = expect_exit(&out, EXIT_NO_DEVICE);
    assert!(
        stdout.contains("UNIMEM_DEVICE=\"no-such-gpu-xyz\" matches no Vulkan device"),
        "{stdout}"
    );
    assert!(stdout.contains("0: "), "{stdout}");

    let out = unimem_info(&[("UNIMEM_DEVICE", "0")]);
    assert_eq!(out.status.code(), Some(EXIT_OK), "{}", text(&out).0);
}

#[test]
fn usage_errors_are_not_confused_with_missing_devices() {
    let out = Command::new(env!("CARGO_BIN_EXE_unimem"))
        .arg("frobnicate")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = Command::new(env!("CARGO_BIN_EXE_unimem"))
        .arg("--help")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("info"));
}

#[test]
fn unprivileged_process_reports_why_kernel_mode_faults_fail() {
    // Only meaningful when we can drop privileges (root with setpriv) and the sysctl keeps
    // kernel-mode userfaultfd privileged.
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let setpriv = ["/usr/bin/setpriv", "/bin/setpriv"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists());
    let sysctl = std::fs::read_to_string("/proc/sys/vm/unprivileged_userfaultfd").ok();
    let (true, Some(setpriv), Some("0")) = (root, setpriv, sysctl.as_deref().map(str::trim)) else {
        eprintln!("notice: not root, no setpriv, or vm.unprivileged_userfaultfd != 0; skipped");
        return;
    };
    // `nobody` must be able to execute the binary: copy it somewhere world-readable.
    let dir = std::env::temp_dir().join(format!("unimem-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let exe = dir.join("unimem");
    std::fs::copy(env!("CARGO_BIN_EXE_unimem"), &exe).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();

    let out = Command::new(setpriv)
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .arg(&exe)
        .arg("info")
        .env_remove("UNIMEM_DEVICE")
        .env_remove("UNIMEM_VULKAN_LIBRARY")
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let (stdout, stderr) = text(&out);
    assert_no_panic(&stdout, &stderr);
    assert!(
        matches!(out.status.code(), Some(EXIT_OK) | Some(EXIT_NO_DEVICE)),
        "{stdout}\n{stderr}"
    );
    let user_line = stdout
        .lines()
        .find(|l| l.contains("userfaultfd(UFFD_USER_MODE_ONLY)"))
        .unwrap();
    assert!(user_line.ends_with("available"), "{stdout}");
    assert!(
        stdout.contains("userfaultfd(0) failed: Operation not permitted")
            && stdout.contains("vm.unprivileged_userfaultfd=1"),
        "{stdout}"
    );
    assert!(stdout.contains("open(/dev/userfaultfd) failed"), "{stdout}");
}

#[test]
fn invalid_option_values_are_marked_in_the_configuration() {
    let out = unimem_info(&[("UNIMEM_BLOCK_SIZE", "3K"), ("UNIMEM_IN_PLACE", "maybe"), ("UNIMEM_DISCOVER", "OFF")]);
    let (stdout, stderr) = text(&out);
    assert_no_panic(&stdout, &stderr);
    assert!(stdout.contains("UNIMEM_BLOCK_SIZE=3K  INVALID: UNIMEM_BLOCK_SIZE=\"3K\" is not a power of two from 4K to 16M"), "{stdout}");
    assert!(stdout.contains("UNIMEM_IN_PLACE=maybe  INVALID: UNIMEM_IN_PLACE=\"maybe\" is not one of auto, on, off"), "{stdout}");
    assert!(stdout.contains("UNIMEM_DISCOVER=OFF\n"), "a valid value is not marked: {stdout}");
    // The runtime would refuse to start: the verdict and the exit code say so.
    assert!(stdout.contains("Result: NOT READY") && stdout.contains("UNIMEM_BLOCK_SIZE=\"3K\""), "{stdout}");
    assert_eq!(out.status.code(), Some(EXIT_DEVICE_FAILED), "{stdout}");
}
