//! The `kernel_big_heap` case, shared by `kernel_big_heap` (the default in-place access: at
//! addresses beyond two windows) and `kernel_big_heap_windows` (`UNIMEM_IN_PLACE_ACCESS=windows`),
//! each setting `WINDOWS`. A binary each: the heap the case commits stays committed (the
//! allocator keeps its high-water mark). Device-test rule of `unimem::device::test_support`.

use crate::kernel_common::{kernel, serial};
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
    spread_into(k, &mut vec![0u32; words], n)
}

/// [`spread_over`] the zeroed words of `big`.
fn spread_into(k: &unimem::Kernel, big: &mut [u32], n: u32) -> Result<(), unimem::Error> {
    let words = big.len();
    let stride = ((words - 2) / (n as usize - 1)) as u32 & !1;
    let mut out = vec![0u32; n as usize];
    k.launch(n, &Args::new().ptr_mut(&mut *big).u32(stride).u32(0).ptr_mut(&mut out[..]))?;
    for id in 0..n as usize {
        assert_eq!(big[id * stride as usize], id as u32 + 1, "word {}", id * stride as usize);
        assert_eq!(out[id], id as u32 + 8, "invocation {id}");
    }
    Ok(())
}

#[test]
fn a_heap_larger_than_the_shader_can_bind_in_place_is_reached_at_addresses_or_an_error() {
    if crate::WINDOWS {
        std::env::set_var("UNIMEM_IN_PLACE_ACCESS", "windows");
    }
    let _s = serial();
    let test = "a_heap_larger_than_the_shader_can_bind_in_place_is_reached_at_addresses_or_an_error";
    let Some(k) = kernel(test, SPREAD, "spread") else { return };
    let (_, dev) = unimem::vulkan_runtime().unwrap();
    // 1.75 GiB: more windows than fit with their 64-bit views on lavapipe (12), fewer than
    // without them (24). It used to bind 32 storage buffers of windows and views.
    spread_over(&k, (1792 << 20) / 4, 64).expect("a 1.75 GiB heap");
    // Beyond two windows, in place, kernels reach the heap at its addresses (lavapipe's
    // device addresses are its host addresses) unless windows are asked for.
    assert_eq!(dev.in_place_addressed(), dev.in_place() && !crate::WINDOWS, "at addresses");
    // 4.5 GiB: through windows, more than the device can bind at all (36 of 128 MiB, more
    // than lavapipe's 32 storage buffers, the runtime's own not even counted).
    let mut huge = vec![0u32; (4608 << 20) / 4];
    let result = spread_over(&k, 1 << 20, 16);
    let windows = dev.window_bytes().map(|w| unimem_alloc::managed_committed() as u64 / w);
    match windows {
        Some(n) if n > u64::from(dev.device().report().max_storage_buffers) && !dev.in_place_addressed() => {
            let e = result.expect_err("in place through windows, a heap beyond the bindings").to_string();
            for want in ["maxPerStageDescriptorStorageBuffers", "MiB of heap are committed now", "Set UNIMEM_IN_PLACE=off"] {
                assert!(e.contains(want), "{e:?} lacks {want:?}");
            }
            // Kernels made now say so too; the process is fine.
            let e = unimem::Kernel::new(SPREAD, "spread").unwrap_err().to_string();
            assert!(e.contains("Set UNIMEM_IN_PLACE=off"), "{e}");
        }
        _ => result.expect("at addresses, migrating (or a device with room for the windows), any heap"),
    }
    if dev.in_place_addressed() {
        // The last 16 MiB of the 4.5 GiB vector, more than 4 GiB into the heap (past what a
        // 32-bit offset reaches), written and read by a kernel.
        let len = huge.len();
        let tail = &mut huge[len - (4 << 20)..];
        let (base, _) = unimem_alloc::managed_range();
        assert!(tail.as_ptr() as usize - base > 4 << 30, "{:p} is not 4 GiB into the heap", tail.as_ptr());
        spread_into(&k, tail, 64).expect("words past 4 GiB of heap");
    }
    drop(huge);
}
