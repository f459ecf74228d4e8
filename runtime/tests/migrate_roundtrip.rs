//! The migration engine moving bytes: round trips of random blocks across frame-buffer
//! boundaries, LRU eviction under pressure against a model, the all-or-nothing `NoFrames`
//! rule, and `host_view`. Every test runs on both copy paths and follows the device-test rule
//! of `unimem::device::test_support`.

mod migrate_common;

use std::collections::{HashMap, HashSet};

use migrate_common::{config, engine, HostBlocks, Rng, BS, PATHS};
use unimem::coherence::{BackendError, BlockDevice, BlockId};
use unimem::device::pagetable::{pte_frame, PTE_WRITABLE};
use unimem::device::test_support::assert_no_validation_errors;
use unimem::device::{upload_evicting, DeviceError};
use unimem::options::CopyMode;

#[test]
fn random_blocks_round_trip_across_buffer_boundaries() {
    for mode in PATHS {
        let name = format!("random_blocks_round_trip_across_buffer_boundaries[{mode:?}]");
        // 64 frames in 8 buffers of 8 frames; 4096 blocks of page table.
        let Some(dev) = engine(&name, config(mode, 64, 8, 4096)) else {
            return;
        };
        assert_eq!(dev.copy_mode(), mode);
        assert_eq!(dev.geometry().buffers(), 8);
        let mut rng = Rng(0x5eed_0001);
        let ids = rng.distinct(64, 4096);
        let mut src = HostBlocks::new(64);
        rng.fill(&mut src.0);

        // Upload in batches of random sizes (1 block up to more than the staging ring).
        let mut at = 0;
        while at < ids.len() {
            let n = (1 + rng.below(12)).min(ids.len() - at);
            let batch: Vec<(BlockId, *const u8)> =
                (at..at + n).map(|i| (ids[i], src.ptr(i))).collect();
            // SAFETY: `src` is readable and not written during the call.
            unsafe { dev.upload(&batch) }.unwrap();
            at += n;
        }
        assert_eq!(dev.free_frames(), 0);
        let buffers_used: HashSet<usize> = ids
            .iter()
            .map(|&b| dev.geometry().locate(dev.frame_of(b).unwrap()).0)
            .collect();
        assert_eq!(
            buffers_used.len(),
            8,
            "{mode:?}: frames spread over every buffer"
        );
        for &b in &ids {
            assert!(dev.is_resident(b));
            let e = dev.device_entry(b);
            assert_eq!(
                pte_frame(e),
                dev.frame_of(b),
                "{mode:?}: device entry of {b}"
            );
            assert_ne!(e & PTE_WRITABLE, 0);
        }

        // Download in a different random order and batching.
        let mut order: Vec<usize> = (0..64).collect();
        for i in (1..order.len()).rev() {
            order.swap(i, rng.below(i + 1));
        }
        let mut dst = HostBlocks::new(64);
        for chunk in order.chunks(7) {
            let batch: Vec<(BlockId, *mut u8)> =
                chunk.iter().map(|&i| (ids[i], dst.ptr_mut(i))).collect();
            // SAFETY: `dst` is writable and not otherwise accessed during the call.
            unsafe { dev.download(&batch) }.unwrap();
        }
        for (i, id) in ids.iter().enumerate() {
            assert!(
                src.block(i) == dst.block(i),
                "{mode:?}: block {id} came back different"
            );
        }
        assert!(dev.take_dirty().is_empty(), "no kernel wrote anything");
        dev.validate();
        dev.discard(&ids);
        dev.validate();
        assert_eq!(dev.free_frames(), 64);
        assert!(ids
            .iter()
            .all(|&b| !dev.is_resident(b) && dev.device_entry(b) == 0));
    }
    assert_no_validation_errors("random_blocks_round_trip_across_buffer_boundaries");
}

/// The model of one eviction run.
#[derive(Default)]
struct Model {
    /// What each block's host home must hold at the end.
    home: HashMap<BlockId, Vec<u8>>,
    /// What each resident block's device copy holds.
    device: HashMap<BlockId, Vec<u8>>,
    /// Resident blocks whose device copy differs from home (a "kernel" wrote them).
    dirty: HashSet<BlockId>,
    /// Resident blocks, least recently used first.
    lru: Vec<BlockId>,
}

impl Model {
    fn touch(&mut self, b: BlockId) {
        self.lru.retain(|&x| x != b);
        self.lru.push(b);
    }
}

#[test]
fn eviction_under_pressure_matches_a_model() {
    const BLOCKS: usize = 200;
    const FRAMES: u32 = 16;
    for mode in PATHS {
        let name = format!("eviction_under_pressure_matches_a_model[{mode:?}]");
        // 16 frames in buffers of 4 frames for 200 blocks of data.
        let Some(dev) = engine(&name, config(mode, FRAMES, 4, BLOCKS as u32)) else {
            return;
        };
        let mut rng = Rng(0xe71c_7000 + mode as u64);
        let mut home = HostBlocks::new(BLOCKS);
        rng.fill(&mut home.0);
        let mut model = Model::default();
        for b in 0..BLOCKS {
            model.home.insert(b as BlockId, home.block(b).to_vec());
        }
        let mut scratch = HostBlocks::new(8);
        let (mut evicted, mut written_back) = (0, 0);

        for step in 0..600 {
            // A random batch of distinct blocks (up to 8, so it always fits in 16 frames).
            let n = 1 + rng.below(8);
            let batch: Vec<BlockId> = rng.distinct(n, BLOCKS);
            let home_ptr = home.0.as_mut_ptr();
            let entries: Vec<(BlockId, *const u8)> = batch
                .iter()
                .filter(|b| !model.dirty.contains(b)) // never overwrite a dirty copy from home
                // SAFETY: in bounds of `home`.
                .map(|&b| (b, unsafe { home_ptr.add(b as usize * BS) } as *const u8))
                .collect();
            let mut victims = Vec::new();
            // SAFETY: `home` is readable; dirty victims are written back to their own home
            // blocks, which are not in the batch (victims never are) and not otherwise
            // accessed during the call.
            let stats = unsafe {
                upload_evicting(&dev, &entries, |v| {
                    victims.push(v);
                    model
                        .dirty
                        .contains(&v)
                        .then(|| home_ptr.add(v as usize * BS))
                })
            }
            .unwrap_or_else(|e| panic!("{mode:?} step {step}: {e}"));

            // Victims are the least recently used blocks outside the batch.
            let expected: Vec<BlockId> = model
                .lru
                .iter()
                .copied()
                .filter(|b| !entries.iter().any(|e| e.0 == *b))
                .take(victims.len())
                .collect();
            assert_eq!(victims, expected, "{mode:?} step {step}: LRU victims");
            for v in &victims {
                let content = model.device.remove(v).unwrap();
                if model.dirty.remove(v) {
                    model.home.insert(*v, content);
                    written_back += 1;
                }
                model.lru.retain(|x| x != v);
            }
            evicted += stats.evicted;
            assert_eq!(stats.evicted, victims.len());
            for &(b, _) in &entries {
                model.device.insert(b, model.home[&b].clone());
                model.touch(b);
            }

            // Sometimes "a kernel writes" some resident blocks: new device content, dirty.
            if rng.below(3) == 0 {
                let k = 1 + rng.below(3);
                let targets: Vec<BlockId> = model.device.keys().copied().take(k).collect();
                let mut writes = Vec::new();
                for (i, &b) in targets.iter().enumerate() {
                    rng.fill(scratch.block_mut(i));
                    model.device.insert(b, scratch.block(i).to_vec());
                    model.dirty.insert(b);
                    model.touch(b);
                    writes.push((b, scratch.ptr(i)));
                }
                // SAFETY: `scratch` is readable; the blocks are resident (no frame needed).
                unsafe { dev.upload(&writes) }.unwrap();
            }

            // Sometimes drop a clean block, sometimes read a resident one back.
            if rng.below(5) == 0 {
                if let Some(&b) = model.lru.iter().find(|b| !model.dirty.contains(b)) {
                    dev.discard(&[b]);
                    model.device.remove(&b);
                    model.lru.retain(|&x| x != b);
                }
            }
            if let Some(&b) = model.lru.get(rng.below(model.lru.len().max(1))) {
                let mut out = vec![0u8; BS];
                // SAFETY: `out` is a block, writable.
                unsafe { dev.download(&[(b, out.as_mut_ptr())]) }.unwrap();
                assert!(
                    out == model.device[&b],
                    "{mode:?} step {step}: device copy of {b}"
                );
            }

            // The engine agrees with the model on residency and LRU order.
            if step % 50 == 0 {
                dev.validate();
            }
            assert_eq!(dev.free_frames(), FRAMES as usize - model.lru.len());
            assert_eq!(
                dev.eviction_candidates(usize::MAX),
                model.lru,
                "{mode:?} step {step}"
            );
        }
        assert!(
            evicted > 300,
            "{mode:?}: only {evicted} evictions: no pressure"
        );
        assert!(
            written_back > 20,
            "{mode:?}: only {written_back} dirty write-backs"
        );

        // Bring the dirty blocks home; then home matches the model everywhere.
        let dirty: Vec<(BlockId, *mut u8)> = model
            .dirty
            .iter()
            .map(|&b| (b, home.ptr_mut(b as usize)))
            .collect();
        // SAFETY: distinct home blocks, writable.
        unsafe { dev.download(&dirty) }.unwrap();
        for &b in &model.dirty {
            model.home.insert(b, model.device[&b].clone());
        }
        for b in 0..BLOCKS {
            assert!(
                home.block(b) == model.home[&(b as BlockId)].as_slice(),
                "{mode:?}: block {b} at home differs from the model"
            );
        }
    }
    assert_no_validation_errors("eviction_under_pressure_matches_a_model");
}

#[test]
fn a_full_pool_changes_nothing() {
    for mode in PATHS {
        let name = format!("a_full_pool_changes_nothing[{mode:?}]");
        let Some(dev) = engine(&name, config(mode, 8, 4, 64)) else {
            return;
        };
        let mut rng = Rng(77);
        let mut a = HostBlocks::new(8);
        rng.fill(&mut a.0);
        let first: Vec<(BlockId, *const u8)> = (0..6).map(|i| (i as BlockId, a.ptr(i))).collect();
        // SAFETY: readable host blocks.
        unsafe { dev.upload(&first) }.unwrap();
        let lru = dev.eviction_candidates(8);
        assert_eq!(lru, vec![0, 1, 2, 3, 4, 5]);

        // 4 new blocks (10..14, 12 twice) and 2 resident ones with new content: 4 frames
        // needed, 2 free.
        let mut b = HostBlocks::new(7);
        rng.fill(&mut b.0);
        let batch: Vec<(BlockId, *const u8)> = [10, 1, 11, 12, 12, 13, 4]
            .iter()
            .enumerate()
            .map(|(i, &blk)| (blk, b.ptr(i)))
            .collect();
        // SAFETY: readable host blocks.
        let err = unsafe { dev.upload(&batch) }.unwrap_err();
        assert!(
            matches!(err, BackendError::NoFrames { needed: 4, free: 2 }),
            "{mode:?}: {err}"
        );
        assert!(err.to_string().contains("4 frames needed, 2 free"), "{err}");
        assert_eq!(dev.free_frames(), 2);
        assert!([10, 11, 12, 13].iter().all(|&x| !dev.is_resident(x)));
        assert_eq!(dev.eviction_candidates(8), lru, "LRU order untouched");
        let mut out = HostBlocks::new(6);
        let back: Vec<(BlockId, *mut u8)> =
            (0..6).map(|i| (i as BlockId, out.ptr_mut(i))).collect();
        // SAFETY: writable host blocks.
        unsafe { dev.download(&back) }.unwrap();
        assert!(
            out.0 == a.0[..6 * BS],
            "{mode:?}: resident blocks were not overwritten"
        );

        // Duplicates take one frame; the last copy wins.
        let dup = [(20, b.ptr(0)), (20, b.ptr(1))];
        // SAFETY: readable host blocks.
        unsafe { dev.upload(&dup) }.unwrap();
        assert_eq!(dev.free_frames(), 1);
        let mut one = vec![0u8; BS];
        // SAFETY: writable.
        unsafe { dev.download(&[(20, one.as_mut_ptr())]) }.unwrap();
        assert!(one == b.block(1), "{mode:?}: duplicate upload");

        // Misuse is reported, not obeyed.
        // SAFETY: readable/writable host blocks.
        let err = unsafe { dev.upload(&[(64, a.ptr(0))]) }.unwrap_err();
        assert!(
            matches!(err, BackendError::Device(DeviceError::Usage(_))),
            "{err}"
        );
        // SAFETY: as above.
        let err = unsafe { dev.download(&[(33, one.as_mut_ptr())]) }.unwrap_err();
        assert!(err.to_string().contains("no device copy"), "{err}");
        dev.discard(&[999, 33]); // out of range or absent: ignored
        assert_eq!(dev.free_frames(), 1);
        dev.validate();
    }
    assert_no_validation_errors("a_full_pool_changes_nothing");
}

#[test]
fn host_view_reads_frames_only_on_the_direct_path() {
    for mode in PATHS {
        let name = format!("host_view_reads_frames_only_on_the_direct_path[{mode:?}]");
        let Some(dev) = engine(&name, config(mode, 8, 2, 64)) else {
            return;
        };
        let mut src = HostBlocks::new(3);
        Rng(3).fill(&mut src.0);
        let batch: Vec<(BlockId, *const u8)> =
            (0..3).map(|i| (7 + i as BlockId, src.ptr(i))).collect();
        // SAFETY: readable host blocks.
        unsafe { dev.upload(&batch) }.unwrap();
        for i in 0..3 {
            let view = dev.host_view(7 + i as BlockId);
            match mode {
                CopyMode::Direct => {
                    let p = view.expect("direct frames are host-visible");
                    // SAFETY: the frame is mapped and block-sized until discarded.
                    let bytes = unsafe { std::slice::from_raw_parts(p, BS) };
                    assert!(bytes == src.block(i));
                }
                _ => assert!(view.is_none(), "staging frames are not mapped"),
            }
        }
        assert!(dev.host_view(40).is_none(), "absent block");
        assert!(dev.host_view(1 << 30).is_none(), "out of range");
        dev.discard(&[8]);
        assert!(dev.host_view(8).is_none());
    }
}

#[test]
fn touch_reorders_lru_and_set_writable_changes_the_entry() {
    let Some(dev) = engine(
        "touch_reorders_lru_and_set_writable_changes_the_entry",
        config(CopyMode::Direct, 8, 4, 64),
    ) else {
        return;
    };
    let src = HostBlocks::new(4);
    let batch: Vec<(BlockId, *const u8)> =
        (0..4).map(|i| (10 + i as BlockId, src.ptr(i))).collect();
    // SAFETY: readable host blocks.
    unsafe { dev.upload(&batch) }.unwrap();
    assert_eq!(dev.eviction_candidates(4), vec![10, 11, 12, 13]);
    dev.touch(&[11, 10, 40]); // 40 is absent: ignored
    assert_eq!(dev.eviction_candidates(4), vec![12, 13, 11, 10]);
    assert_eq!(dev.eviction_candidates(1), vec![12]);
    // Re-uploading a resident block makes it the most recently used too.
    // SAFETY: as above.
    unsafe { dev.upload(&batch[2..3]) }.unwrap();
    assert_eq!(dev.eviction_candidates(4), vec![13, 11, 10, 12]);

    dev.set_writable(&[12, 40], false);
    assert_eq!(dev.device_entry(12) & PTE_WRITABLE, 0);
    assert_eq!(pte_frame(dev.device_entry(12)), dev.frame_of(12));
    assert_ne!(dev.device_entry(13) & PTE_WRITABLE, 0);
    assert_eq!(dev.device_entry(40), 0, "absent blocks stay absent");
    // SAFETY: as above. A refresh keeps the read-only mapping.
    unsafe { dev.upload(&batch[2..3]) }.unwrap();
    assert_eq!(dev.device_entry(12) & PTE_WRITABLE, 0);
    dev.set_writable(&[12], true);
    assert_ne!(dev.device_entry(12) & PTE_WRITABLE, 0);
}

#[test]
fn threads_move_their_own_blocks_concurrently() {
    for mode in PATHS {
        let name = format!("threads_move_their_own_blocks_concurrently[{mode:?}]");
        let Some(dev) = engine(&name, config(mode, 64, 8, 256)) else {
            return;
        };
        let dev = &dev;
        std::thread::scope(|s| {
            for t in 0..4u32 {
                s.spawn(move || {
                    let mut rng = Rng(0xc0c0 + u64::from(t));
                    let mine: Vec<BlockId> = (0..16).map(|i| t * 16 + i).collect();
                    let mut src = HostBlocks::new(16);
                    let mut dst = HostBlocks::new(16);
                    for round in 0..40 {
                        rng.fill(&mut src.0);
                        let n = 1 + rng.below(16);
                        let up: Vec<(BlockId, *const u8)> =
                            (0..n).map(|i| (mine[i], src.ptr(i))).collect();
                        // SAFETY: this thread's own host blocks and block numbers.
                        unsafe { dev.upload(&up) }.unwrap();
                        let down: Vec<(BlockId, *mut u8)> =
                            (0..n).map(|i| (mine[i], dst.ptr_mut(i))).collect();
                        // SAFETY: as above.
                        unsafe { dev.download(&down) }.unwrap();
                        assert!(
                            src.0[..n * BS] == dst.0[..n * BS],
                            "{mode:?} thread {t} round {round}"
                        );
                        if rng.below(2) == 0 {
                            dev.discard(&mine[..n]);
                        }
                    }
                });
            }
            // Readers that take no part in the protocol run alongside.
            s.spawn(move || {
                for _ in 0..200 {
                    let _ = dev.eviction_candidates(64);
                    let _ = dev.take_dirty();
                    for b in 0..64 {
                        let _ = dev.host_view(b);
                        let _ = dev.is_resident(b);
                    }
                }
            });
        });
        dev.validate();
    }
    assert_no_validation_errors("threads_move_their_own_blocks_concurrently");
}

#[test]
fn the_default_configuration_fits_the_device() {
    let device = match unimem::device::test_support::or_skip(
        "the_default_configuration_fits_the_device",
        unimem::device::Device::open(),
    ) {
        Some(d) => d,
        None => return,
    };
    let report = device.report().clone();
    let config = unimem::device::MigrateConfig::default();
    let dev = unimem::device::VulkanBlockDevice::new(device, config).unwrap();
    let g = dev.geometry();
    assert_eq!(g.block_size, 64 << 10);
    assert_eq!(
        g.pool_bytes(),
        unimem::device::default_pool_bytes(&report) / g.block_size as u64 * g.block_size as u64
    );
    assert!(g.pool_bytes() <= 1 << 30);
    assert!(
        g.frames_per_buffer as u64 * g.block_size as u64
            <= u64::from(report.max_storage_buffer_range)
    );
    let (_, managed) = unimem::alloc::managed_range();
    let expect = (managed / g.block_size).min(report.max_storage_buffer_range as usize / 4);
    assert_eq!(
        dev.layout().blocks as usize,
        expect,
        "the page table covers the managed range"
    );
    assert_eq!(
        dev.copy_mode(),
        unimem::device::resolve_copy_mode(&report, CopyMode::Auto)
    );
    if report.is_lavapipe() {
        assert_eq!(
            dev.copy_mode(),
            CopyMode::Direct,
            "lavapipe memory is host-visible and cached"
        );
    }
}
