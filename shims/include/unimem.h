/*
 * unimem.h - the C API of libunimem.so.
 *
 * Run a program with LD_PRELOAD=libunimem.so and every malloc, calloc, realloc,
 * posix_memalign, aligned_alloc, memalign, valloc and pvalloc comes from unimem's shared
 * virtual address arena: the same pointer is valid on the CPU and inside a device kernel.
 * Nothing else changes for the program; this header adds what it may want to ask or
 * control.
 *
 * Heaps. The arena is one reserved address range split into two heaps:
 *   - the managed heap: the program's data; the runtime may migrate its blocks to a
 *     device and back;
 *   - the internal heap: memory of the runtime itself and of the Vulkan driver; never
 *     migrated.
 * A thread allocates internally between unimem_internal_enter() and the matching
 * unimem_internal_exit(); threads created (with pthread_create) while internal allocate
 * internally for their whole life.
 *
 * Errors in the program's use of the heap (double free, freeing a pointer the heap does
 * not own, freeing an interior pointer) print one line naming the address on stderr and
 * abort the process.
 *
 * Every function here is thread-safe and may be called at any time, including before
 * main() and before the first allocation. The Rust definitions are in shims/src/capi.rs;
 * the test shims/tests/header.rs checks that the two agree.
 */
#ifndef UNIMEM_H
#define UNIMEM_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Which heap an address belongs to (unimem_heap_of). */
enum unimem_heap {
    UNIMEM_HEAP_NONE = 0,     /* not in the arena: stack, globals, mmap, another allocator */
    UNIMEM_HEAP_MANAGED = 1,  /* the managed (migratable) heap */
    UNIMEM_HEAP_INTERNAL = 2  /* the internal heap (runtime and driver memory) */
};

/* 1 if p lies in the managed heap's address range, else 0. Any pointer value is
 * accepted; p need not be the start of a live allocation. */
int unimem_is_managed(const void *p);

/* Which heap's address range p lies in: an enum unimem_heap value. */
int unimem_heap_of(const void *p);

/* From now until the matching unimem_internal_exit(), this thread allocates from the
 * internal heap, and threads it creates are internal for life. Nestable. */
void unimem_internal_enter(void);

/* Undo one unimem_internal_enter(). Calling it without a matching enter is an error
 * (debug builds of the library abort; release builds ignore the call). */
void unimem_internal_exit(void);

/* 1 if this thread allocates from the internal heap now, else 0. */
int unimem_is_internal(void);

/* ---- Migration. The runtime starts on first use: it opens the device chosen by
 * UNIMEM_DEVICE (a Vulkan device, or "fake" for the CPU-backed test device) and puts the
 * managed heap under coherence. Memory on the device comes home by itself when the CPU
 * touches it, and before the system calls the library wraps read or write it: read, write
 * and their p/v/socket forms, fread, fwrite, the open/stat/access/mkdir/unlink/rename/
 * readlink families and other calls on paths, getcwd, pipe, poll, select, epoll_wait,
 * nanosleep, the wait family, the exec family, posix_spawn, system (with their 64-bit and
 * _FORTIFY_SOURCE names). Other system calls given a buffer allocated before a kernel moved
 * its block (ioctl, connect, getsockopt, uname into an old struct, ...) fail with EFAULT in
 * migrating mode: docs/ARCHITECTURE.md lists both. Functions returning int give 0 on
 * success and -1 on failure, with unimem_last_error() saying why; data is never lost. A
 * zero-length range (len 0) is a successful no-op for any pointer, NULL included, in
 * unimem_prefetch, unimem_discard and unimem_advise (a bad location or advice value is
 * still an error).
 *
 * fork: the child of a fork taken while the runtime ran inherits the memory, all of it on
 * the host (the fork brings device blocks home first), but not the device, which stays with
 * the parent. There, unimem_prefetch to UNIMEM_HOST, unimem_sync and unimem_advise with
 * UNIMEM_ADVISE_PREFERRED_HOST or UNIMEM_ADVISE_CLEAR succeed with nothing to do; kernels,
 * prefetch to the device, other advice and unimem_discard fail (-1, the message says the
 * process is the child of a fork). Exec a new program to use unimem in it. If the device
 * failed so that a block could not come home before the fork (the parent prints why), the
 * child has no copy of it: touching it faults (with a message naming the block), and
 * unimem_prefetch to UNIMEM_HOST or the PREFERRED_HOST advice on it fail (-1). */

/* Where unimem_prefetch moves memory. */
enum unimem_location {
    UNIMEM_HOST = 0,   /* host RAM: device copies dropped */
    UNIMEM_DEVICE = 1  /* the device: its copy becomes the only valid one until touched
                          (in place, the blocks are mapped for kernels where they are and
                          nothing is copied) */
};

/* Counters since the runtime started (unimem_get_stats). */
typedef struct unimem_stats {
    uint64_t cpu_faults;      /* CPU accesses that brought memory home */
    uint64_t device_faults;   /* kernel accesses to memory not on the device */
    uint64_t replay_rounds;   /* kernel re-dispatches after device faults */
    uint64_t launches;        /* kernel launches that ran invocations (failed ones too) */
    uint64_t bytes_to_device;
    uint64_t bytes_to_host;
    uint64_t evictions;       /* blocks pushed out of a full device */
    uint64_t discards;        /* device copies dropped without copying back (free, discard) */
    uint64_t fault_ns;        /* time spent serving CPU faults, nanoseconds */
    uint64_t mapped_in_place; /* blocks a kernel reads and writes in host RAM (in-place mode) */
    uint64_t write_merges;    /* blocks both the CPU (another thread) and a running kernel wrote,
                                 merged byte by byte (migrating mode; nothing was lost) */
} unimem_stats;

/* Move [p, p+len) to location (an enum unimem_location value). Like unimem_discard and
 * unimem_advise, waits for a kernel launch running on another thread to return. */
int unimem_prefetch(const void *p, size_t len, int location);

/* Forget the contents of the whole blocks inside [p, p+len): nothing is copied back, and
 * the memory reads as zero afterwards. */
int unimem_discard(void *p, size_t len);

/* Finish outstanding runtime work (waits for a kernel launch running on another thread). */
int unimem_sync(void);

/* Fill *out with the counters (all zero before the runtime starts; this call does not start
 * it). -1 if out is NULL. */
int unimem_get_stats(unimem_stats *out);

/* Advice for unimem_advise. Applied when called, and remembered for the address range
 * until UNIMEM_ADVISE_CLEAR covers it or the memory is freed (an object freed among advised
 * neighbours keeps the advice while its block holds live allocations: advice acts on
 * blocks). */
enum unimem_advice {
    UNIMEM_ADVISE_CLEAR = 0,            /* forget earlier advice for the range */
    UNIMEM_ADVISE_READ_MOSTLY = 1,      /* read-duplicated on the device before every launch */
    UNIMEM_ADVISE_PREFERRED_HOST = 2,   /* brought home now and after every launch */
    UNIMEM_ADVISE_PREFERRED_DEVICE = 3, /* moved to the device now and before every launch */
    UNIMEM_ADVISE_MIRROR = 4            /* as READ_MOSTLY */
};

/* Advise where [p, p+len) should live (an enum unimem_advice value). -1 when the range is
 * outside unimem's heap, or when 4096 ranges already carry advice. */
int unimem_advise(const void *p, size_t len, int advice);

/* ---- Kernels. A kernel is WGSL source defining `fn <entry>(id: u32)`, run once per
 * invocation id in 0..n. It reaches memory through the prelude's accessors, on ordinary
 * pointers (u64 host addresses):
 *   unimem_arg_u32(i) / unimem_arg_u64(i) / unimem_arg_ptr(i)   argument word i (byte offset / 4;
 *       a word past args_size is an error, not 0)
 *   unimem_load_{u32,i32,f32,u64,i64,ptr}(p)   unimem_store_{u32,i32,f32,u64,i64,ptr}(p, v)
 *   unimem_load_f64(p)   unimem_store_f64(p, v)   (double; devices with shaderFloat64)
 *   unimem_atomic_{add,min,max,exchange}_u32(p, v)   unimem_atomic_compare_exchange_u32(p, cmp, v)
 *   unimem_running()   false once the invocation faulted (accessors then return 0)
 * Accesses to memory not on the device fault and the invocation is replayed; stores and
 * atomics are applied once (docs/MEMORY-MODEL.md). Helper functions and var<private> are
 * fine; a kernel declares no buffers, textures, var<workgroup> or barriers of its own (a
 * replayed invocation runs outside its workgroup), uses no other unimem_ names, declares
 * no name beginning with unimem_, UNIMEM_ or Unimem (reserved for the prelude: functions,
 * structs, constants, variables, parameters and locals alike), and does not redeclare at
 * module scope a WGSL built-in the runtime's code calls (fn select, ...).
 * Every loop counts its iterations: past the step limit (2^24; 60 000 on lavapipe) the
 * launch fails, naming the invocation, instead of hanging the device (UNIMEM_LOOP_GUARD=off
 * leaves loops unguarded). Needs a Vulkan device. */
typedef struct unimem_kernel unimem_kernel;

/* Compile a kernel; NULL on failure (unimem_last_error() says why, with the WGSL line). */
unimem_kernel *unimem_kernel_create(const char *wgsl, const char *entry);

/* Free a kernel (NULL is ignored). */
void unimem_kernel_destroy(unimem_kernel *k);

/* Set how many accessor calls, and how many loop iterations, one invocation of k may make
 * in one round before its launch fails as a runaway (default 2^24; 60 000 on lavapipe, whose
 * driver cuts loops after 65535 iterations). Clamped to 1..2^32-2. 0 or -1 (k NULL). */
int unimem_kernel_set_max_steps(unimem_kernel *k, uint32_t steps);

/* Run invocations 0..n with the args_size bytes at args (a struct of at most 3968 bytes);
 * returns when all completed. Any n: more than 2^23 invocations run in chunks of 2^23 (2^22
 * for kernels with atomics when blocks migrate, on lavapipe), in order. Before the dispatch, the allocations the struct's aligned 8-byte words point into
 * are prefetched and, when blocks migrate, what their data points to, transitively
 * (UNIMEM_DISCOVER). A freed object among live ones is caught only with
 * UNIMEM_CHECK_OBJECTS=on (set when the kernel is created; for debugging, it slows every
 * access). On failure (a bad pointer, a runaway loop, ...) the message names the
 * kernel, the lowest failing invocation and its address; the runtime stays usable (what
 * failed invocations leave in memory: docs/MEMORY-MODEL.md). k NULL, or args NULL with
 * args_size not 0: -1. On lavapipe, an invocation
 * whose loops run more than 60 000 iterations in total fails (the driver would cut them
 * short after 65535); split such work over more invocations. */
int unimem_launch(unimem_kernel *k, uint32_t n, const void *args, size_t args_size);

/* The message of this thread's last failed unimem_* call, or NULL if none failed. A
 * successful call does not clear it; the text stays valid until the thread's next failing
 * call. */
const char *unimem_last_error(void);

#ifdef __cplusplus
}
#endif

#endif /* UNIMEM_H */
