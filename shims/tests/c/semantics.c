/* The C contract of malloc, free, calloc, realloc, reallocarray and malloc_usable_size:
 * unique pointers for malloc(0), free(NULL), zeroing, overflow and absurd sizes (NULL +
 * ENOMEM), content preservation across realloc, realloc(NULL, n) and realloc(p, 0), and
 * usable sizes. Passes against glibc too (the baseline run). */
#include "check.h"

#include <malloc.h>

static int cmp_ptr(const void *a, const void *b) {
    uintptr_t x = (uintptr_t) * (void *const *)a, y = (uintptr_t) * (void *const *)b;
    return x < y ? -1 : x > y;
}

static void test_malloc_zero(void) {
    enum { N = 2000 };
    static void *p[N];
    for (int i = 0; i < N; i++) {
        p[i] = malloc(0);
        CHECK(p[i] != NULL, "malloc(0) #%d returned NULL", i);
        expect_managed(p[i]);
    }
    qsort(p, N, sizeof p[0], cmp_ptr);
    for (int i = 1; i < N; i++) CHECK(p[i] != p[i - 1], "malloc(0) returned %p twice", p[i]);
    for (int i = 0; i < N; i++) free(p[i]);
    free(NULL);
    free(OPAQUE(p[0]) = NULL);
}

static void test_calloc(void) {
    static const size_t sizes[] = {1, 7, 16, 100, 4096, 65536, 100000, 1 << 20, 5 << 20};
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        size_t n = sizes[k];
        /* Dirty memory of this size first, so a reused block must really be zeroed. */
        for (int round = 0; round < 3; round++) {
            void *d[8];
            for (int i = 0; i < 8; i++) {
                d[i] = malloc(n);
                CHECK(d[i], "malloc(%zu)", n);
                memset(d[i], 0xAB, n);
            }
            for (int i = 0; i < 8; i++) free(d[i]);
            unsigned char *z[8];
            for (int i = 0; i < 8; i++) {
                z[i] = calloc(1, n);
                CHECK(z[i], "calloc(1, %zu)", n);
                expect_managed(z[i]);
                for (size_t j = 0; j < n; j++) CHECK(z[i][j] == 0, "calloc(1, %zu)[%zu] = %#x", n, j, z[i][j]);
                memset(z[i], 0xCD, n);
            }
            for (int i = 0; i < 8; i++) free(z[i]);
        }
        unsigned char *a = calloc(n, 3);
        CHECK(a, "calloc(%zu, 3)", n);
        for (size_t j = 0; j < 3 * n; j++) CHECK(a[j] == 0, "calloc(%zu, 3)[%zu]", n, j);
        free(a);
    }
    size_t big = SIZE_MAX / 2 + 1;
    errno = 0;
    CHECK(calloc(OPAQUE(big), 2) == NULL && errno == ENOMEM, "calloc overflow: errno %d", errno);
    errno = 0;
    CHECK(calloc(2, OPAQUE(big)) == NULL && errno == ENOMEM, "calloc overflow: errno %d", errno);
    size_t max = SIZE_MAX;
    errno = 0;
    CHECK(calloc(OPAQUE(max), OPAQUE(max)) == NULL && errno == ENOMEM, "calloc overflow: errno %d", errno);
    errno = 0;
    CHECK(calloc(1, OPAQUE(max)) == NULL && errno == ENOMEM, "calloc(1, SIZE_MAX): errno %d", errno);
    size_t zero = 0;
    void *z = calloc(OPAQUE(zero), OPAQUE(max));
    CHECK(z != NULL, "calloc(0, SIZE_MAX) is a zero-byte request");
    free(z);
}

static void test_realloc(void) {
    /* Grow one block from 1 byte to 8 MiB and back, checking the preserved prefix. */
    size_t n = 1;
    unsigned char *p = realloc(NULL, n);
    CHECK(p, "realloc(NULL, 1)");
    expect_managed(p);
    fill(p, n, 7);
    size_t sizes[64];
    int count = 0;
    for (size_t s = 2; s <= (8u << 20); s = s * 2 + (s & 1 ? 0 : 3)) sizes[count++] = s;
    for (int i = 0; i < count; i++) {
        size_t s = sizes[i];
        p = realloc(p, s);
        CHECK(p, "realloc grow to %zu", s);
        expect_managed(p);
        CHECK(verify(p, n, 7), "realloc grow to %zu lost the first %zu bytes", s, n);
        fill(p, s, 7);
        n = s;
    }
    for (int i = count - 1; i >= 0; i--) {
        size_t s = sizes[i] / 3 + 1;
        p = realloc(p, s);
        CHECK(p, "realloc shrink to %zu", s);
        CHECK(verify(p, s, 7), "realloc shrink to %zu lost content", s);
        n = s;
    }
    /* Same-size and tiny changes keep content too. */
    for (int i = 0; i < 100; i++) {
        size_t s = 1000 + (size_t)(i % 7) * 13;
        p = realloc(p, s);
        CHECK(p && verify(p, s < n ? s : n, 7), "realloc %zu -> %zu", n, s);
        fill(p, s, 7);
        n = s;
    }
    /* A failed realloc returns NULL + ENOMEM and leaves the block alone. */
    size_t huge = SIZE_MAX;
    errno = 0;
    CHECK(realloc(p, OPAQUE(huge)) == NULL && errno == ENOMEM, "realloc(p, SIZE_MAX): errno %d", errno);
    CHECK(verify(p, n, 7), "failed realloc damaged the block");
    huge = SIZE_MAX / 2;
    errno = 0;
    CHECK(realloc(p, OPAQUE(huge)) == NULL && errno == ENOMEM, "realloc(p, SIZE_MAX/2): errno %d", errno);
    CHECK(verify(p, n, 7), "failed realloc damaged the block");
    /* realloc(p, 0) frees p and returns NULL (glibc). */
    size_t zero = 0;
    CHECK(realloc(p, OPAQUE(zero)) == NULL, "realloc(p, 0) returned a block");
    /* realloc(NULL, 0) is malloc(0). */
    void *q = realloc(NULL, OPAQUE(zero));
    CHECK(q, "realloc(NULL, 0)");
    expect_managed(q);
    free(q);
}

static void test_reallocarray(void) {
    int *a = reallocarray(NULL, 10, sizeof(int));
    CHECK(a, "reallocarray(NULL, 10, 4)");
    expect_managed(a);
    for (int i = 0; i < 10; i++) a[i] = i * i;
    a = reallocarray(a, 100000, sizeof(int));
    CHECK(a, "reallocarray grow");
    for (int i = 0; i < 10; i++) CHECK(a[i] == i * i, "reallocarray lost a[%d]", i);
    size_t big = SIZE_MAX / 2;
    errno = 0;
    CHECK(reallocarray(a, OPAQUE(big), 3) == NULL && errno == ENOMEM, "reallocarray overflow: errno %d", errno);
    for (int i = 0; i < 10; i++) CHECK(a[i] == i * i, "failed reallocarray damaged a[%d]", i);
    errno = 0;
    CHECK(reallocarray(NULL, 3, OPAQUE(big)) == NULL && errno == ENOMEM, "reallocarray overflow: errno %d", errno);
    free(a);
}

static void test_usable_size(void) {
    CHECK(malloc_usable_size(NULL) == 0, "malloc_usable_size(NULL)");
    for (size_t s = 0; s < (3u << 20); s = s < 300 ? s + 1 : s * 5 / 4) {
        unsigned char *p = malloc(s);
        CHECK(p, "malloc(%zu)", s);
        expect_managed(p);
        size_t u = malloc_usable_size(p);
        CHECK(u >= s, "malloc_usable_size = %zu < %zu", u, s);
        memset(p, 0x5A, u); /* all of it is usable */
        free(p);
    }
}

static void test_absurd_sizes(void) {
    size_t sizes[] = {SIZE_MAX, SIZE_MAX - 4095, SIZE_MAX / 2 + 1, SIZE_MAX / 2, (size_t)1 << 50};
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        size_t s = sizes[k];
        errno = 0;
        CHECK(malloc(OPAQUE(s)) == NULL && errno == ENOMEM, "malloc(%#zx): errno %d", s, errno);
        errno = 0;
        CHECK(calloc(1, OPAQUE(s)) == NULL && errno == ENOMEM, "calloc(1, %#zx): errno %d", s, errno);
        errno = 0;
        CHECK(memalign(4096, OPAQUE(s)) == NULL && errno == ENOMEM, "memalign(4096, %#zx): errno %d", s, errno);
        errno = 0;
        CHECK(aligned_alloc(64, OPAQUE(s)) == NULL && errno == ENOMEM, "aligned_alloc(64, %#zx): errno %d", s, errno);
        errno = 0;
        CHECK(valloc(OPAQUE(s)) == NULL && errno == ENOMEM, "valloc(%#zx): errno %d", s, errno);
        errno = 0;
        CHECK(pvalloc(OPAQUE(s)) == NULL && errno == ENOMEM, "pvalloc(%#zx): errno %d", s, errno);
        void *p = (void *)0x1234;
        errno = EDOM;
        int rc = posix_memalign(&p, 64, OPAQUE(s));
        CHECK(rc == ENOMEM && p == (void *)0x1234, "posix_memalign(64, %#zx) = %d", s, rc);
        if (shim_active()) CHECK(errno == EDOM, "posix_memalign changed errno to %d", errno);
    }
}

static void test_errno_kept_by_free(void) {
    for (int i = 0; i < 1000; i++) {
        void *p = malloc((size_t)i * 97);
        errno = EDOM;
        free(p);
        CHECK(errno == EDOM, "free changed errno to %d", errno);
    }
}

int main(void) {
    shim_init();
    test_malloc_zero();
    test_calloc();
    test_realloc();
    test_reallocarray();
    test_usable_size();
    test_absurd_sizes();
    test_errno_kept_by_free();
    pass("semantics");
    return 0;
}
