//! Kernels on shared pointers in place, reaching the heap at its addresses whatever its size
//! (`UNIMEM_IN_PLACE_ACCESS=addresses`; by default small heaps go through windows). Cases in
//! `kernel_launch/cases.rs`.
const ACCESS: Option<&str> = Some("addresses");
const MIGRATING: bool = false;
mod kernel_common;
#[path = "kernel_launch/cases.rs"]
mod cases;
