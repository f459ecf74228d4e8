//! A managed heap larger than a shader can bind in place, through windows
//! (`UNIMEM_IN_PLACE_ACCESS=windows`): an error that says what to do, not a crash. Case in
//! `kernel_big_heap/case.rs`.
const WINDOWS: bool = true;
mod kernel_common;
#[path = "kernel_big_heap/case.rs"]
mod case;
