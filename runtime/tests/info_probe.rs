//! Info and probe tests: the Vulkan survey finds lavapipe where it is installed, the fault
//! probes agree with direct system calls, and the userfaultfd ABI matches the C header.

use std::os::fd::{FromRawFd, OwnedFd};
use std::path::Path;

use unimem::device::test_support::or_skip;
use unimem::device::{self, select};
use unimem::faults::{uffd_abi, FaultProbe};

/// Lavapipe's ICD manifest is installed and the loader is not pointed elsewhere.
fn lavapipe_expected() -> bool {
    let overridden = [
        "VK_ICD_FILENAMES",
        "VK_DRIVER_FILES",
        "UNIMEM_VULKAN_LIBRARY",
    ]
    .iter()
    .any(|v| std::env::var_os(v).is_some());
    let installed = std::fs::read_dir("/usr/share/vulkan/icd.d")
        .map(|d| {
            d.flatten()
                .any(|e| e.file_name().to_string_lossy().starts_with("lvp_icd"))
        })
        .unwrap_or(false);
    installed && !overridden
}

#[test]
fn survey_finds_lavapipe_on_this_machine() {
    let Some((_instance, adapters, survey)) =
        or_skip("survey_finds_lavapipe_on_this_machine", device::survey())
    else {
        return;
    };
    assert_eq!(adapters.len(), survey.devices.len());
    for (i, r) in survey.devices.iter().enumerate() {
        assert_eq!(r.index, i);
        assert!(!r.name.is_empty());
        assert!(
            !r.memory_types.is_empty() && !r.memory_heaps.is_empty(),
            "{r:?}"
        );
        assert!(r
            .memory_types
            .iter()
            .all(|t| (t.heap as usize) < r.memory_heaps.len()));
    }
    if !lavapipe_expected() {
        eprintln!(
            "notice: lavapipe is not installed (or the loader is redirected); not looking for it"
        );
        return;
    }
    let lvp = survey
        .devices
        .iter()
        .find(|r| r.is_lavapipe())
        .unwrap_or_else(|| panic!("lavapipe is installed but not listed: {:?}", survey.devices));
    // What the brief measured on lavapipe; all required features present.
    assert_eq!(lvp.driver_name.as_deref(), Some("llvmpipe"));
    assert!(lvp.api_version.at_least(1, 2));
    assert!(
        select::missing(lvp).is_empty(),
        "lavapipe lacks {:?}",
        select::missing(lvp)
    );
    assert!(lvp.shader_int64 && lvp.buffer_device_address && lvp.variable_pointers);
    assert!(lvp
        .external_memory_host
        .is_some_and(|h| h.min_imported_host_pointer_alignment >= 4096));
    assert!(lvp.max_storage_buffer_range >= 1 << 27);
    assert!(lvp.max_memory_allocation_size >= 1 << 30);
    assert!(lvp.compute_queue_family.is_some());
    assert!(survey.selected.is_ok(), "{:?}", survey.selected);
}

#[test]
fn requirement_names_cover_the_brief() {
    let names: Vec<&str> = select::REQUIREMENTS.iter().map(|r| r.name).collect();
    for needed in ["Vulkan 1.2", "shaderInt64", "bufferDeviceAddress"] {
        assert!(names.contains(&needed), "{names:?}");
    }
}

/// Opens a userfaultfd directly: `Ok(())` or the errno.
fn direct_userfaultfd(flags: libc::c_int) -> Result<(), i32> {
    // SAFETY: userfaultfd takes flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_userfaultfd, flags | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0));
    }
    // SAFETY: a fresh fd we own; dropping closes it.
    drop(unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) });
    Ok(())
}

#[test]
fn uffd_probe_matches_a_direct_syscall() {
    let probe = FaultProbe::run();
    let user = direct_userfaultfd(uffd_abi::UFFD_USER_MODE_ONLY);
    assert_eq!(
        probe.uffd_user_mode.is_ok(),
        user.is_ok(),
        "probe {:?} vs direct {user:?}",
        probe.uffd_user_mode
    );
    if let Err(errno) = user {
        assert_eq!(
            probe.uffd_user_mode.as_ref().unwrap_err().errno,
            Some(errno)
        );
    }
    let kernel = direct_userfaultfd(0);
    assert_eq!(
        probe.uffd_kernel_mode.is_ok(),
        kernel.is_ok(),
        "probe {:?} vs direct {kernel:?}",
        probe.uffd_kernel_mode
    );

    // The features the probe reports are exactly what a direct handshake returns.
    if user.is_ok() {
        // SAFETY: as in `direct_userfaultfd`.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_userfaultfd,
                uffd_abi::UFFD_USER_MODE_ONLY | libc::O_CLOEXEC,
            )
        };
        assert!(fd >= 0);
        // SAFETY: a fresh fd we own.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) };
        let mut api = uffd_abi::UffdioApi {
            api: uffd_abi::UFFD_API,
            features: 0,
            ioctls: 0,
        };
        // SAFETY: `api` is a valid struct uffdio_api for the call.
        let r = unsafe {
            libc::ioctl(
                std::os::fd::AsRawFd::as_raw_fd(&fd),
                uffd_abi::UFFDIO_API as _,
                &mut api,
            )
        };
        assert_eq!(r, 0, "{}", std::io::Error::last_os_error());
        let report = probe.uffd_user_mode.as_ref().unwrap();
        assert_eq!(report.features, api.features);
        assert_eq!(report.ioctls, api.ioctls);
        // Every kernel with SIGBUS support must pass the real SIGBUS round trip.
        if api.features & uffd_abi::FEATURE_SIGBUS != 0 {
            assert!(report.sigbus.is_ok(), "{:?}", report.sigbus);
        }
        assert!(
            report.kernel_fault.is_none(),
            "user-mode-only fds do not serve kernel faults"
        );
    }
    if let Ok(report) = &probe.uffd_kernel_mode {
        assert!(
            report.kernel_fault.as_ref().is_some_and(|k| k.is_ok()),
            "{report:?}"
        );
    }

    // The sysctl values are what /proc says.
    let sysctl = |p: &str| {
        std::fs::read_to_string(p)
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
    };
    assert_eq!(probe.max_map_count, sysctl("/proc/sys/vm/max_map_count"));
    assert_eq!(
        probe.unprivileged_userfaultfd,
        sysctl("/proc/sys/vm/unprivileged_userfaultfd")
    );
    // On Linux without unusual hardening, the two signal-based mechanisms work.
    assert!(probe.signal_mprotect.is_ok(), "{:?}", probe.signal_mprotect);
}

#[test]
fn probes_can_run_repeatedly_and_concurrently() {
    let threads: Vec<_> = (0..3)
        .map(|_| std::thread::spawn(FaultProbe::run))
        .collect();
    let results: Vec<FaultProbe> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    for r in &results[1..] {
        assert_eq!(r.signal_mprotect, results[0].signal_mprotect);
        assert_eq!(r.uffd_user_mode.is_ok(), results[0].uffd_user_mode.is_ok());
    }
}

#[test]
fn uffd_abi_matches_the_c_header() {
    let header = Path::new("/usr/include/linux/userfaultfd.h");
    if !header.exists() {
        eprintln!(
            "notice: {} not installed; ABI checked against built-in values only",
            header.display()
        );
        return;
    }
    let dir = std::env::temp_dir().join(format!("unimem-uffd-abi-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let c = dir.join("abi.c");
    let exe = dir.join("abi");
    std::fs::write(
        &c,
        r#"#include <stdio.h>
#include <sys/ioctl.h>
#include <linux/userfaultfd.h>
#define P(x) printf(#x " %llu\n", (unsigned long long)(x))
int main(void) {
    P(UFFD_API); P(UFFDIO_API); P(UFFDIO_REGISTER); P(UFFDIO_UNREGISTER); P(UFFDIO_WAKE);
    P(UFFDIO_COPY); P(UFFDIO_WRITEPROTECT); P(USERFAULTFD_IOC_NEW); P(UFFD_USER_MODE_ONLY);
    P(UFFDIO_REGISTER_MODE_MISSING); P(UFFDIO_REGISTER_MODE_WP); P(UFFDIO_REGISTER_MODE_MINOR);
    P(UFFD_EVENT_PAGEFAULT); P(UFFD_FEATURE_PAGEFAULT_FLAG_WP); P(UFFD_FEATURE_SIGBUS);
    P(UFFD_FEATURE_THREAD_ID);
    P(sizeof(struct uffdio_api)); P(sizeof(struct uffdio_range)); P(sizeof(struct uffdio_register));
    P(sizeof(struct uffdio_copy)); P(sizeof(struct uffdio_writeprotect)); P(sizeof(struct uffd_msg));
#ifdef UFFD_FEATURE_WP_UNPOPULATED
    P(UFFD_FEATURE_WP_UNPOPULATED);
#endif
    return 0;
}
"#,
    )
    .unwrap();
    let cc = std::process::Command::new("cc")
        .arg(&c)
        .arg("-o")
        .arg(&exe)
        .output();
    let Ok(cc) = cc else {
        eprintln!("notice: no C compiler (`cc`); ABI checked against built-in values only");
        return;
    };
    assert!(
        cc.status.success(),
        "cc failed: {}",
        String::from_utf8_lossy(&cc.stderr)
    );
    let out = std::process::Command::new(&exe).output().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let text = String::from_utf8(out.stdout).unwrap();
    use std::mem::size_of;
    use uffd_abi::*;
    let ours: &[(&str, u64)] = &[
        ("UFFD_API", UFFD_API),
        ("UFFDIO_API", UFFDIO_API),
        ("UFFDIO_REGISTER", UFFDIO_REGISTER),
        ("UFFDIO_UNREGISTER", UFFDIO_UNREGISTER),
        ("UFFDIO_WAKE", UFFDIO_WAKE),
        ("UFFDIO_COPY", UFFDIO_COPY),
        ("UFFDIO_WRITEPROTECT", UFFDIO_WRITEPROTECT),
        ("USERFAULTFD_IOC_NEW", USERFAULTFD_IOC_NEW),
        ("UFFD_USER_MODE_ONLY", UFFD_USER_MODE_ONLY as u64),
        ("UFFDIO_REGISTER_MODE_MISSING", REGISTER_MODE_MISSING),
        ("UFFDIO_REGISTER_MODE_WP", REGISTER_MODE_WP),
        ("UFFDIO_REGISTER_MODE_MINOR", REGISTER_MODE_MINOR),
        ("UFFD_EVENT_PAGEFAULT", UFFD_EVENT_PAGEFAULT as u64),
        ("UFFD_FEATURE_PAGEFAULT_FLAG_WP", FEATURE_PAGEFAULT_FLAG_WP),
        ("UFFD_FEATURE_SIGBUS", FEATURE_SIGBUS),
        ("UFFD_FEATURE_THREAD_ID", FEATURE_THREAD_ID),
        ("UFFD_FEATURE_WP_UNPOPULATED", FEATURE_WP_UNPOPULATED),
        ("sizeof(struct uffdio_api)", size_of::<UffdioApi>() as u64),
        (
            "sizeof(struct uffdio_range)",
            size_of::<UffdioRange>() as u64,
        ),
        (
            "sizeof(struct uffdio_register)",
            size_of::<UffdioRegister>() as u64,
        ),
        ("sizeof(struct uffdio_copy)", size_of::<UffdioCopy>() as u64),
        (
            "sizeof(struct uffdio_writeprotect)",
            size_of::<UffdioWriteprotect>() as u64,
        ),
        ("sizeof(struct uffd_msg)", size_of::<UffdMsg>() as u64),
    ];
    let mut checked = 0;
    for line in text.lines() {
        let (name, value) = line.rsplit_once(' ').unwrap();
        let value: u64 = value.parse().unwrap();
        let (_, mine) = ours
            .iter()
            .find(|(n, _)| *n == name)
            .unwrap_or_else(|| panic!("{name} not compared"));
        assert_eq!(*mine, value, "{name}: ours {mine:#x}, header {value:#x}");
        checked += 1;
    }
    assert!(checked >= 22, "only {checked} values compared:\n{text}");
    // Feature names in the table agree with the header for every bit it defines.
    for (bit, name) in FEATURES {
        if let Some(line) = text
            .lines()
            .find(|l| l.starts_with(&format!("UFFD_FEATURE_{name} ")))
        {
            assert!(line.ends_with(&format!(" {bit}")), "{line}");
        }
    }
}
