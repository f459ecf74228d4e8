/* Aligned allocation: posix_memalign, aligned_alloc, memalign, valloc and pvalloc for
 * every power-of-two alignment from 1 byte to 16 MiB and sizes around it, glibc's
 * rounding of a non-power-of-two memalign alignment, and the EINVAL cases. */
#include "check.h"

#include <malloc.h>
#include <unistd.h>

#define MAX_ALIGN ((size_t)16 << 20)

/* Check one block: non-null, aligned, in the managed heap, usable for `size` bytes. */
static void check_block(const char *fn, void *p, size_t align, size_t size) {
    CHECK(p != NULL, "%s(align %zu, size %zu) returned NULL (errno %d)", fn, align, size, errno);
    CHECK((uintptr_t)p % align == 0, "%s(align %zu, size %zu) = %p is misaligned", fn, align, size, p);
    expect_managed(p);
    size_t u = malloc_usable_size(p);
    CHECK(u >= size, "%s(align %zu, size %zu): usable size %zu", fn, align, size, u);
    if (size <= ((size_t)1 << 20)) {
        memset(p, 0x77, size);
    } else if (size > 0) {
        ((volatile char *)p)[0] = 1; /* touch the ends only: stay light on memory */
        ((volatile char *)p)[size - 1] = 1;
    }
}

static void test_powers_of_two(void) {
    for (size_t align = 1; align <= MAX_ALIGN; align *= 2) {
        size_t sizes[] = {0, 1, align / 2 + 1, align, align + 1, 3 * align + 5};
        for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
            size_t size = sizes[k];
            void *p;
            if (align % sizeof(void *) == 0) {
                p = NULL;
                int rc = posix_memalign(&p, align, size);
                CHECK(rc == 0, "posix_memalign(align %zu, size %zu) = %d", align, size, rc);
                check_block("posix_memalign", p, align, size);
                free(p);
            }
            p = aligned_alloc(align, size);
            check_block("aligned_alloc", p, align, size);
            free(p);
            p = memalign(align, size);
            check_block("memalign", p, align, size);
            free(p);
        }
    }
}

/* Many live aligned blocks at once: distinct and aligned (not just the first of a span). */
static void test_many_live(void) {
    enum { N = 300 };
    static void *p[N];
    for (size_t align = 32; align <= ((size_t)1 << 20); align *= 4) {
        for (int i = 0; i < N; i++) {
            p[i] = memalign(align, (size_t)(i % 5) * 24 + 1);
            check_block("memalign", p[i], align, (size_t)(i % 5) * 24 + 1);
            memset(p[i], i & 0xff, 1);
        }
        for (int i = 0; i < N; i++) {
            CHECK(*(unsigned char *)p[i] == (i & 0xff), "block %d (%p) overwritten", i, p[i]);
            free(p[i]);
        }
    }
}

static size_t next_pow2(size_t a) {
    size_t p = 1;
    while (p < a) p *= 2;
    return p;
}

static void test_memalign_rounding(void) {
    size_t odd[] = {3, 12, 24, 48, 100, 1000, 3000, 5000, 65537, 1000000};
    for (size_t k = 0; k < sizeof odd / sizeof odd[0]; k++) {
        size_t a = odd[k];
        void *p = memalign(a, 100);
        check_block("memalign", p, a <= 16 ? 16 : next_pow2(a), 100);
        free(p);
    }
    void *p = memalign(0, 100);
    check_block("memalign", p, 16, 100);
    free(p);
    size_t bad[] = {SIZE_MAX / 2 + 2, SIZE_MAX};
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        errno = 0;
        CHECK(memalign(OPAQUE(bad[k]), 10) == NULL && errno == EINVAL, "memalign(%#zx): errno %d", bad[k], errno);
    }
}

static void test_einval(void) {
    size_t bad[] = {0, 1, 2, 4, 12, 24, 40, 48, 100, 3 * sizeof(void *), 4096 + 8, SIZE_MAX};
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        size_t a = bad[k];
        if (a >= sizeof(void *) && (a & (a - 1)) == 0) continue;
        void *p = (void *)0x1234;
        errno = EDOM;
        int rc = posix_memalign(&p, OPAQUE(a), 10);
        CHECK(rc == EINVAL, "posix_memalign(align %zu) = %d, expected EINVAL", a, rc);
        CHECK(p == (void *)0x1234, "posix_memalign(align %zu) wrote *memptr on failure", a);
        CHECK(errno == EDOM, "posix_memalign(align %zu) changed errno to %d", a, errno);
    }
    /* aligned_alloc follows C17 (and glibc >= 2.38) under unimem: a non-power-of-two
     * alignment fails with EINVAL. glibc 2.36 treats it as memalign instead. */
    size_t odd[] = {0, 3, 24, 48, 100, 4097};
    for (size_t k = 0; k < sizeof odd / sizeof odd[0]; k++) {
        errno = 0;
        void *p = aligned_alloc(OPAQUE(odd[k]), 10);
        if (shim_active())
            CHECK(p == NULL && errno == EINVAL, "aligned_alloc(align %zu) = %p, errno %d", odd[k], p, errno);
        free(p);
    }
}

static void test_page_allocs(void) {
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    size_t sizes[] = {0, 1, page - 1, page, page + 1, 10 * page + 3, (size_t)1 << 20, 3 << 20};
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        size_t s = sizes[k];
        void *p = valloc(s);
        check_block("valloc", p, page, s);
        free(p);
        size_t rounded = (s + page - 1) / page * page;
        p = pvalloc(s);
        check_block("pvalloc", p, page, rounded);
        free(p);
    }
}

int main(void) {
    shim_init();
    test_powers_of_two();
    test_many_live();
    test_memalign_rounding();
    test_einval();
    test_page_allocs();
    pass("aligned");
    return 0;
}
