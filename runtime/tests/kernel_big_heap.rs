//! A managed heap larger than a shader can bind in place, reached at its addresses (the
//! default beyond two windows, where the device's addresses are the host's). Through windows
//! (`kernel_big_heap_windows`), kernels reach the heap through 128 MiB windows (lavapipe),
//! one or two storage buffers each, and a shader may bind only
//! `maxPerStageDescriptorStorageBuffers` (32 on lavapipe): binding more crashed the driver's
//! threads (a segfault of the whole process from 2 GiB of heap). There the 64-bit views are
//! dropped when they would not fit, and a heap too large even without them is an error that
//! says what to do. Migrating, the heap's size does not matter. Case in
//! `kernel_big_heap/case.rs`.

const WINDOWS: bool = false;
mod kernel_common;
#[path = "kernel_big_heap/case.rs"]
mod case;
