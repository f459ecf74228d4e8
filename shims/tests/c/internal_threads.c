/* Threads created while the creator is internal (unimem_internal_enter) allocate from the
 * internal heap for their whole life, and so do the threads they create; threads created
 * outside internal mode allocate in the managed heap. Also: nesting of enter/exit, a
 * wrapped thread that ends with pthread_exit or is cancelled, and a failing
 * pthread_create while internal. Needs the shim (there is no baseline run). */
#include "check.h"

#include <pthread.h>

static const size_t sizes[] = {1, 16, 100, 1000, 5000, 40000, 131072, 200000, 1 << 20, 5 << 20};
#define NSIZES (sizeof sizes / sizeof sizes[0])

/* Allocate one block of each size and check every one is in `heap`. */
static void alloc_all_in(int heap, const char *who) {
    void *p[NSIZES];
    for (size_t i = 0; i < NSIZES; i++) {
        p[i] = malloc(sizes[i]);
        CHECK(p[i], "%s: malloc(%zu)", who, sizes[i]);
        expect_heap(p[i], heap);
        memset(p[i], 0x11, sizes[i]);
    }
    void *c = calloc(100, 100), *a = aligned_alloc(4096, 5000), *r = realloc(NULL, 300);
    expect_heap(c, heap);
    expect_heap(a, heap);
    expect_heap(r, heap);
    r = realloc(r, 300000);
    expect_heap(r, heap);
    free(c), free(a), free(r);
    for (size_t i = 0; i < NSIZES; i++) free(p[i]);
}

static void *grandchild(void *arg) {
    CHECK(u_is_internal() == 1, "a thread created by an always-internal thread is not internal");
    alloc_all_in(UNIMEM_HEAP_INTERNAL, "grandchild");
    return arg;
}

struct job {
    void *managed_block; /* allocated by main in the managed heap; freed here */
};

static void *internal_child(void *arg) {
    struct job *job = arg;
    CHECK(u_is_internal() == 1, "a thread created while internal is not internal");
    alloc_all_in(UNIMEM_HEAP_INTERNAL, "internal child");
    /* Entering and leaving internal mode does not end the thread's lifelong mark. */
    u_internal_enter();
    u_internal_exit();
    CHECK(u_is_internal() == 1, "internal_exit ended an always-internal thread's mark");
    alloc_all_in(UNIMEM_HEAP_INTERNAL, "internal child after enter/exit");
    pthread_t g;
    CHECK(pthread_create(&g, NULL, grandchild, (void *)0x77) == 0, "create grandchild");
    void *ret;
    CHECK(pthread_join(g, &ret) == 0 && ret == (void *)0x77, "join grandchild");
    free(job->managed_block); /* a managed block freed by an internal thread */
    return malloc(64);        /* handed back to main: internal */
}

static void *managed_child(void *arg) {
    (void)arg;
    CHECK(u_is_internal() == 0, "a thread created outside internal mode is internal");
    alloc_all_in(UNIMEM_HEAP_MANAGED, "managed child");
    return NULL;
}

static volatile int really_exit = 1;

__attribute__((noinline)) static int exit_deep(int depth) {
    if (depth == 0) {
        if (really_exit) pthread_exit(malloc(32));
        return 0;
    }
    return exit_deep(depth - 1) + 1;
}

static void *exiting_child(void *arg) {
    (void)arg;
    exit_deep(5); /* pthread_exit unwinds through the shim's start trampoline */
    return NULL;
}

static void *cancelled_child(void *arg) {
    (void)arg;
    for (;;) {
        free(malloc(100));
        pthread_testcancel();
    }
    return NULL;
}

static void test_lifelong_internal(void) {
    CHECK(u_is_internal() == 0, "main starts internal");
    alloc_all_in(UNIMEM_HEAP_MANAGED, "main");

    struct job job = {malloc(500)};
    expect_heap(job.managed_block, UNIMEM_HEAP_MANAGED);
    u_internal_enter();
    CHECK(u_is_internal() == 1, "unimem_internal_enter did not make main internal");
    alloc_all_in(UNIMEM_HEAP_INTERNAL, "main (internal)");
    pthread_t t;
    CHECK(pthread_create(&t, NULL, internal_child, &job) == 0, "create internal child");
    u_internal_exit();
    CHECK(u_is_internal() == 0, "unimem_internal_exit did not end internal mode");
    /* The child keeps its mark after its creator left internal mode. */
    void *ret;
    CHECK(pthread_join(t, &ret) == 0, "join");
    expect_heap(ret, UNIMEM_HEAP_INTERNAL);
    free(ret);

    CHECK(pthread_create(&t, NULL, managed_child, NULL) == 0, "create managed child");
    CHECK(pthread_join(t, NULL) == 0, "join");
    alloc_all_in(UNIMEM_HEAP_MANAGED, "main after exit");
}

static void test_nesting(void) {
    u_internal_enter();
    u_internal_enter();
    u_internal_exit();
    CHECK(u_is_internal() == 1, "one exit after two enters left internal mode");
    void *p = malloc(10);
    expect_heap(p, UNIMEM_HEAP_INTERNAL);
    u_internal_exit();
    CHECK(u_is_internal() == 0, "two exits after two enters stayed internal");
    void *q = malloc(10);
    expect_heap(q, UNIMEM_HEAP_MANAGED);
    free(p), free(q);
}

static void test_exit_and_cancel(void) {
    u_internal_enter();
    pthread_t t;
    void *ret;
    CHECK(pthread_create(&t, NULL, exiting_child, NULL) == 0, "create");
    CHECK(pthread_join(t, &ret) == 0 && ret, "join a thread that called pthread_exit");
    expect_heap(ret, UNIMEM_HEAP_INTERNAL);
    free(ret);
    CHECK(pthread_create(&t, NULL, cancelled_child, NULL) == 0, "create");
    CHECK(pthread_cancel(t) == 0, "cancel");
    CHECK(pthread_join(t, &ret) == 0 && ret == PTHREAD_CANCELED, "join a cancelled thread: %p", ret);
    /* Many short-lived wrapped threads: start blocks are allocated and freed each time. */
    for (int i = 0; i < 200; i++) {
        CHECK(pthread_create(&t, NULL, grandchild, (void *)(intptr_t)(i + 1)) == 0, "create #%d", i);
        CHECK(pthread_join(t, &ret) == 0 && ret == (void *)(intptr_t)(i + 1), "join #%d", i);
    }
    /* A failing pthread_create (a stack no mmap can provide) reports its error code. */
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    CHECK(pthread_attr_setstacksize(&attr, (size_t)1 << 50) == 0, "setstacksize");
    int rc = pthread_create(&t, &attr, grandchild, NULL);
    CHECK(rc != 0, "pthread_create with a 1 PiB stack succeeded");
    pthread_attr_destroy(&attr);
    u_internal_exit();
}

int main(void) {
    shim_init();
    CHECK(shim_active(), "this test needs libunimem.so");
    test_lifelong_internal();
    test_nesting();
    test_exit_and_cancel();
    pass("internal_threads");
    return 0;
}
