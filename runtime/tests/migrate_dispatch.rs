//! A WGSL kernel that reaches frames through the device page table, as the accessor prelude
//! will: it sees what the copies put there, its writes come back by download, its dirty bits
//! name exactly the blocks it wrote, and its misses land in the fault buffer once per block.
//! Frames are spread over three frame buffers. Both copy paths; device-test rule of
//! `unimem::device::test_support`.

mod migrate_common;

use migrate_common::{accessors, config, engine, HostBlocks, Rng, PATHS};
use unimem::coherence::{BlockDevice, BlockId};
use unimem::device::test_support::assert_no_validation_errors;
use unimem::device::VulkanBlockDevice;
use unimem::kernel::compile_wgsl_named;

/// The kernel: for each listed block, word 1 of the block := word 0 * 2 + 1, dirty bit set;
/// a block without a frame is recorded in the fault buffer instead (the prelude's miss path).
fn kernel_source(dev: &VulkanBlockDevice) -> String {
    let mut s = accessors(dev);
    s.push_str(
        "
var<immediate> n: u32;
@group(0) @binding(UNIMEM_FIRST_ARG_BINDING) var<storage, read> list: array<u32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    if (id.x >= n) {
        return;
    }
    let b = list[id.x];
    let f1 = unimem_pt[b] & UNIMEM_PTE_FRAME_MASK;
    if (f1 == 0u) {
        record_fault(b);
        return;
    }
    let f = f1 - 1u;
    let v = frame_load(f, 0u);
    frame_store(f, 1u, v * 2u + 1u);
}
",
    );
    s
}

#[test]
fn a_kernel_reads_and_writes_frames_through_the_page_table() {
    for mode in PATHS {
        let name = format!("a_kernel_reads_and_writes_frames_through_the_page_table[{mode:?}]");
        // 24 frames in 3 buffers of 8; a page table of 1024 blocks.
        let Some(dev) = engine(&name, config(mode, 24, 8, 1024)) else {
            return;
        };
        assert_eq!(dev.geometry().buffers(), 3);
        let source = kernel_source(&dev);
        let kernel = compile_wgsl_named("through_page_table.wgsl", &source, "main")
            .unwrap_or_else(|e| panic!("{e}\n{source}"));
        let pipeline = dev.device().create_pipeline(&kernel).unwrap();

        let mut rng = Rng(0xd15b_a7c4 + mode as u64);
        let ids = rng.distinct(24, 1024);
        let (written, untouched) = ids.split_at(20);
        let mut src = HostBlocks::new(24);
        rng.fill(&mut src.0);
        let batch: Vec<(BlockId, *const u8)> = ids
            .iter()
            .enumerate()
            .map(|(i, &b)| (b, src.ptr(i)))
            .collect();
        // SAFETY: `src` is readable and not written during the call.
        unsafe { dev.upload(&batch) }.unwrap();

        // The list: the 20 written blocks, plus 3 absent blocks, one of them 3 times.
        let absent: Vec<u32> = (0..1024u32)
            .filter(|b| !ids.contains(b))
            .step_by(97)
            .take(3)
            .collect();
        let mut list: Vec<u32> = written.to_vec();
        list.extend_from_slice(&absent);
        list.push(absent[1]);
        list.push(absent[1]);
        let mut list_buffer = dev
            .device()
            .create_host_buffer(list.len() as u64 * 4)
            .unwrap();
        list_buffer.as_mut_slice::<u32>().copy_from_slice(&list);
        dev.dispatch(
            &pipeline,
            &mut [&mut list_buffer],
            &(list.len() as u32).to_ne_bytes(),
            [kernel.groups_for(list.len() as u32), 1, 1],
        )
        .unwrap();

        let mut dirty = dev.take_dirty();
        dirty.sort_unstable();
        let mut expect = written.to_vec();
        expect.sort_unstable();
        assert_eq!(
            dirty, expect,
            "{mode:?}: exactly the written blocks are dirty"
        );
        assert!(dev.take_dirty().is_empty(), "take_dirty clears");

        let faults = dev.take_faults();
        assert_eq!(faults.blocks.len(), 3, "{mode:?}: {faults:?}");
        let mut got = faults.blocks.clone();
        got.sort_unstable();
        assert_eq!(got, absent, "{mode:?}: each absent block faulted once");
        assert_eq!((faults.overflowed, faults.errors), (0, 0));

        let mut out = HostBlocks::new(24);
        let back: Vec<(BlockId, *mut u8)> = ids
            .iter()
            .enumerate()
            .map(|(i, &b)| (b, out.ptr_mut(i)))
            .collect();
        // SAFETY: `out` is writable and not otherwise accessed during the call.
        unsafe { dev.download(&back) }.unwrap();
        for (i, &b) in ids.iter().enumerate() {
            let before: &[u32] = bytemuck::cast_slice(src.block(i));
            let after: &[u32] = bytemuck::cast_slice(out.block(i));
            if written.contains(&b) {
                assert_eq!(
                    after[1],
                    before[0].wrapping_mul(2).wrapping_add(1),
                    "{mode:?}: block {b}"
                );
                assert_eq!(after[0], before[0]);
                assert_eq!(after[2..], before[2..]);
            } else {
                assert!(untouched.contains(&b));
                assert_eq!(after, before, "{mode:?}: block {b} was not in the list");
            }
        }

        // A second round after the faulted blocks were uploaded: no faults, and the pending
        // bits were cleared so nothing is left over.
        let extra = HostBlocks::new(3);
        let batch: Vec<(BlockId, *const u8)> = absent
            .iter()
            .enumerate()
            .map(|(i, &b)| (b, extra.ptr(i)))
            .collect();
        // SAFETY: readable host blocks.
        let err = unsafe { dev.upload(&batch) }.unwrap_err();
        assert!(err.to_string().contains("3 frames needed, 0 free"), "{err}");
        dev.discard(untouched);
        // SAFETY: readable host blocks.
        unsafe { dev.upload(&batch) }.unwrap();
        dev.dispatch(
            &pipeline,
            &mut [&mut list_buffer],
            &(list.len() as u32).to_ne_bytes(),
            [1, 1, 1],
        )
        .unwrap();
        assert!(dev.take_faults().blocks.is_empty());
        assert_eq!(dev.take_dirty().len(), 23);
    }
    assert_no_validation_errors("a_kernel_reads_and_writes_frames_through_the_page_table");
}

#[test]
fn dispatch_reports_missing_argument_buffers() {
    let Some(dev) = engine(
        "dispatch_reports_missing_argument_buffers",
        config(unimem::options::CopyMode::Direct, 8, 8, 64),
    ) else {
        return;
    };
    let source = kernel_source(&dev);
    let kernel = compile_wgsl_named("through_page_table.wgsl", &source, "main").unwrap();
    let pipeline = dev.device().create_pipeline(&kernel).unwrap();
    let err = dev
        .dispatch(&pipeline, &mut [], &0u32.to_ne_bytes(), [1, 1, 1])
        .unwrap_err();
    assert!(err.to_string().contains("@binding(4)"), "{err}");
    assert!(err.to_string().contains("0 argument buffers"), "{err}");
}
