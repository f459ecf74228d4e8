//! Helpers shared by the `kernel_*` tests: compiling under the device-test rule, and a
//! Box-linked list node.

#![allow(dead_code)] // each test binary uses a different subset

use std::sync::{Mutex, MutexGuard};

use unimem::device::test_support::runtime_or_skip;
use unimem::Kernel;

static SERIAL: Mutex<()> = Mutex::new(());

/// Serialises the tests of one binary (launches share the device pool and the statistics).
pub fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// [`serial`], with blocks migrating into device frames (`UNIMEM_IN_PLACE=off`) for test
/// binaries about migration: set before the runtime starts, which reads it once.
pub fn serial_migrating() -> MutexGuard<'static, ()> {
    std::env::set_var("UNIMEM_IN_PLACE", "off");
    serial()
}

/// Compiles `src`, or skips (returns `None`) when there is no device, by the device-test rule
/// of `unimem::device::test_support`.
pub fn kernel(test: &str, src: &str, entry: &str) -> Option<Kernel> {
    runtime_or_skip(test, Kernel::new(src, entry))
}

/// A list node as kernels see it: `value` at byte 0, `next` at byte 8.
#[repr(C)]
pub struct Node {
    pub value: u32,
    pub next: *const Node,
}

/// A list of `len` boxed nodes with `value(i)`; returns the node pointers in list order.
pub fn build(len: usize, value: impl Fn(usize) -> u32) -> Vec<*const Node> {
    let mut nodes = Vec::with_capacity(len);
    let mut next: *const Node = std::ptr::null();
    for i in (0..len).rev() {
        next = Box::into_raw(Box::new(Node { value: value(i), next }));
        nodes.push(next);
    }
    nodes.reverse();
    nodes
}

/// Shuffles `items` in a fixed random order (xorshift from `seed`, non-zero; Fisher-Yates).
pub fn shuffle<T>(items: &mut [T], seed: u32) {
    let mut x = seed;
    for i in (1..items.len()).rev() {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        items.swap(i, x as usize % (i + 1));
    }
}

/// Frees a list made by [`build`].
pub fn free(nodes: Vec<*const Node>) {
    for p in nodes {
        // SAFETY: each node came from Box::into_raw in `build` and is freed once.
        drop(unsafe { Box::from_raw(p as *mut Node) });
    }
}
