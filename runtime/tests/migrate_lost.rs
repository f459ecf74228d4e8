//! A lost device (here: a kernel that hangs past the timeout, which poisons the device as a
//! `VK_ERROR_DEVICE_LOST` would): every later migration fails fast with `DeviceLost` naming
//! the operation, no host memory is written, and dropping the engine neither hangs nor frees
//! what the runaway kernel may still use. Both copy paths.
//!
//! Alone in its own test binary: the abandoned kernels keep the driver's threads busy until
//! the process exits.

mod migrate_common;

use std::time::{Duration, Instant};

use migrate_common::{config, engine, HostBlocks, Rng, PATHS};
use unimem::coherence::{BackendError, BlockDevice, BlockId};
use unimem::device::test_support::assert_no_validation_errors;
use unimem::device::DeviceError;
use unimem::kernel::compile_wgsl_named;

use unimem::device::test_support::SPIN_WGSL as SPIN;

fn expect_lost(err: BackendError, what: &str) {
    match &err {
        BackendError::Device(DeviceError::DeviceLost { call }) => {
            assert!(call.contains(what), "{err}")
        }
        _ => panic!("expected DeviceLost during {what}, got: {err}"),
    }
    let msg = err.to_string();
    assert!(msg.contains("lost") && msg.contains(what), "{msg}");
}

#[test]
fn a_lost_device_fails_fast_and_host_data_survives() {
    for mode in PATHS {
        let name = format!("a_lost_device_fails_fast_and_host_data_survives[{mode:?}]");
        let Some(dev) = engine(&name, config(mode, 16, 4, 64)) else {
            return;
        };
        let mut rng = Rng(0x10057);
        let mut src = HostBlocks::new(8);
        rng.fill(&mut src.0);
        let original = src.0.clone();
        let batch: Vec<(BlockId, *const u8)> = (0..8).map(|i| (i as BlockId, src.ptr(i))).collect();
        // SAFETY: readable host blocks.
        unsafe { dev.upload(&batch[..6]) }.unwrap();

        // Lose the device: a kernel that runs far past a short timeout.
        let device = dev.device();
        let kernel = compile_wgsl_named("spin.wgsl", SPIN, "spin").unwrap();
        let pipeline = device.create_pipeline(&kernel).unwrap();
        let mut scratch = device.create_host_buffer(4096).unwrap();
        device.set_timeout(Duration::from_millis(200));
        let err = device
            .dispatch(
                &pipeline,
                &mut [&mut scratch],
                &u32::MAX.to_ne_bytes(),
                [65535, 1, 1],
            )
            .unwrap_err();
        assert!(matches!(err, DeviceError::Timeout { .. }), "{err}");
        assert!(device.is_lost());

        let start = Instant::now();
        // Uploads of new and of resident blocks are refused; the sources are untouched.
        // SAFETY: readable host blocks.
        expect_lost(unsafe { dev.upload(&batch) }.unwrap_err(), "upload");
        // SAFETY: as above.
        expect_lost(unsafe { dev.upload(&batch[6..]) }.unwrap_err(), "upload");
        assert!(src.0 == original, "{mode:?}: host sources changed");

        // Downloads are refused and write nothing.
        let mut dst = HostBlocks::new(6);
        dst.0.fill(0xab);
        let back: Vec<(BlockId, *mut u8)> =
            (0..6).map(|i| (i as BlockId, dst.ptr_mut(i))).collect();
        // SAFETY: writable host blocks.
        expect_lost(unsafe { dev.download(&back) }.unwrap_err(), "download");
        assert!(
            dst.0.iter().all(|&b| b == 0xab),
            "{mode:?}: a refused download wrote"
        );

        // Device copies are no longer offered to the fault path; bookkeeping still works.
        assert!((0..6).all(|b| dev.host_view(b).is_none()));
        assert_eq!(dev.free_frames(), 10);
        assert_eq!(dev.eviction_candidates(3), vec![0, 1, 2]);
        assert!(dev.take_dirty().is_empty());
        dev.discard(&[0, 1]);
        assert_eq!(dev.free_frames(), 12);
        // (The spin kernel's binding 0 is the engine's page table: a valid launch otherwise.)
        let err = dev
            .dispatch(&pipeline, &mut [], &1u32.to_ne_bytes(), [1, 1, 1])
            .unwrap_err();
        assert!(matches!(err, DeviceError::DeviceLost { .. }), "{err}");
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "{mode:?}: calls on a lost device must fail fast ({:?})",
            start.elapsed()
        );

        let start = Instant::now();
        drop((pipeline, scratch, dev));
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "{mode:?}: dropping an engine on a lost device must not wait"
        );
    }
    assert_no_validation_errors("a_lost_device_fails_fast_and_host_data_survives");
}
