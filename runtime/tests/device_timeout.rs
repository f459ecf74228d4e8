//! A kernel that runs far longer than the timeout: the dispatch must fail with
//! `DeviceError::Timeout`, the device must refuse further work, and dropping everything must
//! neither hang nor destroy objects the still-running kernel uses (they are leaked).
//!
//! Alone in its own test binary: the abandoned kernel keeps the driver's threads busy until
//! the process exits.

use std::time::{Duration, Instant};

use unimem::device::test_support::{assert_no_validation_errors, test_device};
use unimem::device::DeviceError;
use unimem::kernel::compile_wgsl_named;

use unimem::device::test_support::SPIN_WGSL as SPIN;

#[test]
fn a_hung_kernel_times_out_and_poisons_the_device() {
    let Some(device) = test_device("a_hung_kernel_times_out_and_poisons_the_device") else {
        return;
    };
    let kernel = compile_wgsl_named("spin.wgsl", SPIN, "spin").unwrap();
    let pipeline = device.create_pipeline(&kernel).unwrap();
    let mut buffer = device.create_host_buffer(4096).unwrap();

    // A short run works.
    device
        .dispatch(
            &pipeline,
            &mut [&mut buffer],
            &16u32.to_ne_bytes(),
            [4, 1, 1],
        )
        .unwrap();

    device.set_timeout(Duration::from_millis(200));
    let start = Instant::now();
    let err = device
        .dispatch(
            &pipeline,
            &mut [&mut buffer],
            &u32::MAX.to_ne_bytes(),
            [65535, 1, 1],
        )
        .unwrap_err();
    let waited = start.elapsed();
    assert!(
        matches!(err, DeviceError::Timeout { millis: 200, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("spin.wgsl::spin"), "{err}");
    assert!(
        waited >= Duration::from_millis(190) && waited < Duration::from_secs(10),
        "{waited:?}"
    );
    assert!(device.is_lost());

    let err = device
        .dispatch(
            &pipeline,
            &mut [&mut buffer],
            &1u32.to_ne_bytes(),
            [1, 1, 1],
        )
        .unwrap_err();
    assert!(matches!(err, DeviceError::DeviceLost { .. }), "{err}");

    let start = Instant::now();
    drop((pipeline, buffer, device));
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "dropping a poisoned device must not wait"
    );
    assert_no_validation_errors("a_hung_kernel_times_out_and_poisons_the_device");
}
