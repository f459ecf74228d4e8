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

#ifdef __cplusplus
}
#endif

#endif /* UNIMEM_H */
