//! A managed heap larger than a shader can bind in place. In place, kernels reach the heap
//! through 128 MiB windows (lavapipe), one or two storage buffers each, and a shader may bind
//! only `maxPerStageDescriptorStorageBuffers` (32 on lavapipe): binding more crashed the
//! driver's threads (a segfault of the whole process from 2 GiB of heap). Now the 64-bit
//! views are dropped when they would not fit, and a heap too large even without them is an
//! error that says what to do. Migrating, the heap's size does not matter. A binary of its
//! own: the heap it commits stays committed (the allocator keeps its high-water mark).
//! Device-test rule of `unimem::device::test_support`.

mod kernel_common;

use kernel_common::{kernel, serial};
use unimem::Args;

#[global_allocator]
static A: unimem::Allocator = unimem::Allocator;

/// Stores `id + 1` at 32-bit word `id * stride` of argument 0, and reads it back through a
/// 64-bit load (the 64-bit views are what a large heap drops).
const SPREAD: &str = "
fn spread(id: u32) {
    let p = unimem_arg_ptr(0u) + u64(id) * u64(unimem_arg_u32(2u)) * 4lu;
    unimem_store_u32(p, id + 1u);
    unimem_store_u32(p + 4lu, 7u);
    let back = unimem_load_u64(p);
    unimem_store_u32(unimem_arg_ptr(4u) + u64(id) * 4lu, u32(back >> 32u) + u32(back & 0xfffffffflu));
}
";

/// `n` invocations over `words` zeroed words (fresh pages: nothing is touched before the
/// kernel): the kernel's stores land across the whole vector, the last one near its end.
fn spread_over(k: &unimem::Kernel, words: usize, n: u32) -> Result<(), unimem::Error> {
    let mut big = vec![0u32; words];
    let stride = ((words - 2) / (n as usize - 1)) as u32 & !1;
    let mut out = vec![0u32; n as usize];
    k.launch(n, &Args::new().ptr_mut(&mut big[..]).u32(stride).u32(0).ptr_mut(&mut out[..]))?;
    for id in 0..n as usize {
        assert_eq!(big[id * stride as usize], id as u32 + 1, "word {}", id * stride as usize);
        assert_eq!(out[id], id as u32 + 8, "invocation {id}");
    }
    Ok(())
}

#[test]
fn a_heap_larger_than_the_shader_can_bind_in_place_is_an_error_not_a_crash() {
    let _s = serial();
    let test = "a_heap_larger_than_the_shader_can_bind_in_place_is_an_error_not_a_crash";
    let Some(k) = kernel(test, SPREAD, "spread") else { return };
    let (_, dev) = unimem::vulkan_runtime().unwrap();
    // 1.75 GiB: more windows than fit with their 64-bit views on lavapipe (12), fewer than
    // without them (24). It used to bind 32 storage buffers of windows and views.
    spread_over(&k, (1792 << 20) / 4, 64).expect("a 1.75 GiB heap");
    // 4.5 GiB: in place, more windows than the device can bind at all (36 of 128 MiB, more
    // than lavapipe's 32 storage buffers, the runtime's own not even counted).
    let huge = vec![0u8; 4608 << 20];
    let result = spread_over(&k, 1 << 20, 16);
    let windows = dev.window_bytes().map(|w| unimem_alloc::managed_committed() as u64 / w);
    match windows {
        Some(n) if n > u64::from(dev.device().report().max_storage_buffers) => {
            let e = result.expect_err("in place, a heap beyond the bindings").to_string();
            for want in ["maxPerStageDescriptorStorageBuffers", "MiB of heap are committed now", "Set UNIMEM_IN_PLACE=off"] {
                assert!(e.contains(want), "{e:?} lacks {want:?}");
            }
            // Kernels made now say so too; the process is fine.
            let e = unimem::Kernel::new(SPREAD, "spread").unwrap_err().to_string();
            assert!(e.contains("Set UNIMEM_IN_PLACE=off"), "{e}");
        }
        _ => result.expect("migrating (or a device with room for the windows), any heap"),
    }
    drop(huge);
}
