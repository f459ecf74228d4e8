//! libunimem.so: the `LD_PRELOAD` face of unimem.
//!
//! Loaded before libc, this library takes over the C allocation API so every `malloc` of an
//! unmodified program comes from unimem's shared-virtual-address arena, and exports the C
//! API declared in `shims/include/unimem.h`.
//!
//! Module map:
//! - `malloc`: the malloc family (`malloc` .. `pvalloc`, C23 `free_sized`, glibc's
//!   `__libc_*` names), each a thin forward to one `unimem_alloc` call plus C's errno rules;
//! - `threads`: the `pthread_create` wrapper that keeps threads created by internal code
//!   (the runtime, the Vulkan driver) on the internal heap for life;
//! - `capi`: the `unimem_*` functions of `unimem.h`;
//! - from the runtime crate (`runtime/src/interpose.rs`), exported from here too: `read`,
//!   `write`, `open`, `stat`, `waitpid`, `execve` and the other system calls on buffers
//!   (buffers on the device come home first),
//!   `sigaction`/`signal` (a program's SIGSEGV/SIGBUS handler is chained, not installed over
//!   unimem's), and `fopen`, `opendir` and their kin (libc's stream buffers in the internal
//!   heap; the standard streams' too, from a load-time constructor).
//!
//! Rules for every exported function (they run before `main`, inside libc, in fork
//! children and in threads being torn down):
//! - never allocate except through `unimem_alloc`, never format through `std`, never touch
//!   a `std` facility that needs initialisation (the arena initialises itself on first use,
//!   reading options from `environ` without allocating);
//! - never panic: no indexing, no unchecked arithmetic on caller-supplied sizes, no
//!   `unwrap`. A panic inside an `extern "C"` function aborts the process;
//! - report errors the C way (a null return plus `errno`, or an error code), and the
//!   program's own heap corruption (double free, foreign pointer) with one line on stderr
//!   and `abort()`, which `unimem_alloc` does.

#![warn(unsafe_op_in_unsafe_fn)]

pub mod capi;
pub mod malloc;
pub mod threads;

// Link the runtime's interposed entry points into the library.
pub use unimem_rt::interpose;

/// Runs when the library is loaded, before `main` (after libc's own initialisation: libc
/// is loaded first). Gives the standard streams their buffers in the internal heap
/// (`interpose::std_streams_internal`): glibc fills and empties them with system calls
/// that are not interposed, which fail on a block a kernel moved to the device.
extern "C" fn on_load() {
    interpose::std_streams_internal();
}

#[used]
#[link_section = ".init_array"]
static ON_LOAD: extern "C" fn() = on_load;
