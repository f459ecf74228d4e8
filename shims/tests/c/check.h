/*
 * Helpers shared by the C (and C++) tests of libunimem.so (compiled and run by the Rust tests in shims/tests).
 *
 * Each test runs twice: under LD_PRELOAD=libunimem.so (UNIMEM_TEST_SHIM unset or 1),
 * where it must prove the shim served its allocations, and without the shim
 * (UNIMEM_TEST_SHIM=0), where the same checks run against glibc's malloc: the baseline
 * that shows the shim has glibc's semantics. Checks that only hold for unimem (heap
 * membership, C17 aligned_alloc) are guarded by shim_active().
 *
 * The unimem functions are looked up with dlsym, so the programs link and run without
 * the library; their types come from unimem.h, so a header change that breaks them
 * breaks the build.
 */
#ifndef UNIMEM_TEST_CHECK_H
#define UNIMEM_TEST_CHECK_H

#ifndef _GNU_SOURCE /* g++ defines it */
#define _GNU_SOURCE
#endif
#include <dlfcn.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "unimem.h"

#define CHECK(cond, ...)                                                              \
    do {                                                                              \
        if (!(cond)) {                                                                \
            fprintf(stderr, "%s:%d: check failed: %s: ", __FILE__, __LINE__, #cond);  \
            fprintf(stderr, __VA_ARGS__);                                             \
            fputc('\n', stderr);                                                      \
            exit(1);                                                                  \
        }                                                                             \
    } while (0)

/* A kernel for the kernel tests: `fill` stores id * 3 + k at out[id], with the launch
 * arguments it reads (kernel tests link -lunimem and create it themselves). */
#define FILL_WGSL                                                                                      \
    "fn fill(id: u32) {\n"                                                                             \
    "    unimem_store_u32(unimem_arg_ptr(0u) + u64(id) * 4lu, id * 3u + unimem_arg_u32(2u));\n"       \
    "}\n"
struct fill_args { uint32_t *out; uint32_t k, pad; };

/* The unimem API, resolved at run time (null without the shim). */
static __typeof__(unimem_is_managed) *u_is_managed;
static __typeof__(unimem_heap_of) *u_heap_of;
static __typeof__(unimem_internal_enter) *u_internal_enter;
static __typeof__(unimem_internal_exit) *u_internal_exit;
static __typeof__(unimem_is_internal) *u_is_internal;
static unsigned long shim_checked; /* allocations proven to come from unimem */

/* Resolve the unimem API and check the shim is present exactly when it should be. Safe to
 * call more than once (constructors call it before main). */
__attribute__((unused)) static void shim_init(void) {
    const char *want = getenv("UNIMEM_TEST_SHIM");
    int expect = !want || strcmp(want, "0") != 0;
    u_is_managed = (__typeof__(u_is_managed))dlsym(RTLD_DEFAULT, "unimem_is_managed");
    u_heap_of = (__typeof__(u_heap_of))dlsym(RTLD_DEFAULT, "unimem_heap_of");
    u_internal_enter = (__typeof__(u_internal_enter))dlsym(RTLD_DEFAULT, "unimem_internal_enter");
    u_internal_exit = (__typeof__(u_internal_exit))dlsym(RTLD_DEFAULT, "unimem_internal_exit");
    u_is_internal = (__typeof__(u_is_internal))dlsym(RTLD_DEFAULT, "unimem_is_internal");
    if (expect) {
        CHECK(u_is_managed && u_heap_of && u_internal_enter && u_internal_exit && u_is_internal,
              "libunimem.so is not loaded (run with LD_PRELOAD=.../libunimem.so)");
    } else {
        CHECK(!u_is_managed, "libunimem.so is loaded but UNIMEM_TEST_SHIM=0");
    }
}

__attribute__((unused)) static int shim_active(void) { return u_is_managed != NULL; }

/* Under the shim, p must be in the managed heap (a program's ordinary allocation). */
__attribute__((unused)) static void expect_managed_at(const void *p, const char *file, int line) {
    if (u_is_managed) {
        if (!u_is_managed(p)) {
            fprintf(stderr, "%s:%d: %p is not in unimem's managed heap\n", file, line, p);
            exit(1);
        }
        shim_checked++;
    }
}
#define expect_managed(p) expect_managed_at((p), __FILE__, __LINE__)

/* Under the shim, p must be in the given heap (enum unimem_heap). */
__attribute__((unused)) static void expect_heap_at(const void *p, int heap, const char *file, int line) {
    if (u_heap_of) {
        int h = u_heap_of(p);
        if (h != heap) {
            fprintf(stderr, "%s:%d: %p is in heap %d, expected %d\n", file, line, p, h, heap);
            exit(1);
        }
        shim_checked++;
    }
}
#define expect_heap(p, h) expect_heap_at((p), (h), __FILE__, __LINE__)

/* The last line of every test: the Rust side checks it. */
__attribute__((unused)) static void pass(const char *name) {
    if (shim_active()) {
        CHECK(shim_checked > 0, "no allocation was checked against the shim");
        printf("PASS %s (unimem: %lu allocations checked)\n", name, shim_checked);
    } else {
        printf("PASS %s (glibc)\n", name);
    }
    fflush(stdout);
}

/* A deterministic byte pattern for content checks. */
__attribute__((unused)) static unsigned char pattern(uint64_t seed, size_t i) {
    uint64_t x = (seed + i) * 0x9E3779B97F4A7C15ull;
    return (unsigned char)(x >> 56);
}

__attribute__((unused)) static void fill(void *p, size_t n, uint64_t seed) {
    unsigned char *b = (unsigned char *)p;
    for (size_t i = 0; i < n; i++) b[i] = pattern(seed, i);
}

__attribute__((unused)) static int verify(const void *p, size_t n, uint64_t seed) {
    const unsigned char *b = (const unsigned char *)p;
    for (size_t i = 0; i < n; i++)
        if (b[i] != pattern(seed, i)) return 0;
    return 1;
}

/* A small xorshift generator (each thread keeps its own state). */
__attribute__((unused)) static uint64_t rnd(uint64_t *s) {
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *s = x;
}

/* Hide a value from the optimiser (so calls with absurd constant sizes stay calls). */
#define OPAQUE(x) (*(volatile __typeof__(x) *)&(x))

/* UNIMEM_REQUIRE_DEVICE as the Rust tests read it: on (1, on, yes, true) or off (unset, 0,
 * off, no, false), in any case; any other value is a failed check naming it. */
__attribute__((unused)) static int device_required(void) {
    static const char *const on[] = {"1", "on", "yes", "true"}, *const off[] = {"0", "off", "no", "false"};
    const char *req = getenv("UNIMEM_REQUIRE_DEVICE");
    if (!req || !*req) return 0;
    for (int i = 0; i < 4; i++) {
        if (strcasecmp(req, on[i]) == 0) return 1;
        if (strcasecmp(req, off[i]) == 0) return 0;
    }
    CHECK(0, "UNIMEM_REQUIRE_DEVICE=\"%s\" is not one of on, off; set one of those or unset it", req);
    return 1;
}

/* After unimem_kernel_create returned NULL: without a Vulkan device, print "SKIP <name>" and
 * exit 0, unless UNIMEM_REQUIRE_DEVICE is on; any other failure is a failed check. */
__attribute__((unused)) static void kernel_create_failed(const char *name) {
    const char *e = unimem_last_error();
    int required = device_required();
    if (!required && e && (strstr(e, "Vulkan") || strstr(e, "device"))) {
        printf("SKIP %s: %s\n", name, e);
        exit(0);
    }
    CHECK(0, "unimem_kernel_create: %s", e ? e : "(no message)");
}

#endif
