/* unimem_sync waits for a launch running on another thread: a thread launches a kernel that
 * takes a while, the main thread sees it running (in place its stores reach host memory as
 * they happen), calls unimem_sync, and then every result must be there (migrating the test
 * cannot tell that the launch started, so it only runs sync beside it). Also: a launch with fewer argument
 * bytes than the last one reads zeros past them, not the last launch's arguments. Linked with
 * -lunimem; without a Vulkan device it prints "SKIP" and exits 0, unless
 * UNIMEM_REQUIRE_DEVICE=1. */
#include <pthread.h>
#include <stdatomic.h>

#include "check.h"

static const char *SPIN =
    "fn spin(id: u32) {\n"
    "    var x = id;\n"
    "    for (var i = 0u; i < 20000u; i++) { x = x * 1664525u + 1013904223u; }\n"
    "    unimem_store_u32(unimem_arg_ptr(0u) + u64(id) * 4lu, x | 1u);\n"
    "}\n";

static const char *BUMP =
    "fn bump(id: u32) {\n"
    "    let p = unimem_arg_ptr(0u);\n"
    "    unimem_store_u32(p, unimem_load_u32(p) + 1u);\n"
    "}\n";

enum { N = 1 << 16 };
static uint32_t *v;
static atomic_int returned;

static void *launcher(void *k) {
    struct { uint32_t *p; } a = {v};
    CHECK(unimem_launch(k, N, &a, sizeof a) == 0, "%s", unimem_last_error());
    atomic_store(&returned, 1);
    return NULL;
}

int main(void) {
    unimem_kernel *k = unimem_kernel_create(SPIN, "spin");
    if (!k) kernel_create_failed("kernel_sync");
    const char *mode = getenv("UNIMEM_IN_PLACE");
    int in_place = !(mode && strcmp(mode, "off") == 0);
    v = calloc(N, sizeof *v);
    CHECK(v, "calloc");
    pthread_t t;
    CHECK(pthread_create(&t, NULL, launcher, k) == 0, "pthread_create");
    if (in_place) {
        /* Wait until the kernel has stored something: the launch is running. */
        for (;;) {
            int seen = 0;
            for (int i = 0; i < N && !seen; i++) seen = ((volatile uint32_t *)v)[i] != 0;
            if (seen || atomic_load(&returned)) break;
        }
    }
    CHECK(unimem_sync() == 0, "%s", unimem_last_error());
    /* In place the launch had started, so it is over when sync returns (its thread may not
     * have seen it return yet): every result is there before the join. Migrating, the launch
     * may not have started yet; the results are checked after the join. */
    if (in_place)
        for (int i = 0; i < N; i++) CHECK(v[i] != 0, "result %d missing after unimem_sync", i);
    CHECK(pthread_join(t, NULL) == 0, "pthread_join");
    for (int i = 0; i < N; i++) CHECK(v[i] != 0, "result %d missing", i);
    unimem_kernel_destroy(k);

    /* Arguments: the second launch passes none, so reading its pointer is an error (not the
     * first launch's pointer). */
    unimem_kernel *b = unimem_kernel_create(BUMP, "bump");
    CHECK(b, "%s", unimem_last_error());
    uint32_t *c = calloc(1, sizeof *c);
    struct { uint32_t *p; } a = {c};
    CHECK(unimem_launch(b, 1, &a, sizeof a) == 0, "%s", unimem_last_error());
    CHECK(*c == 1, "bumped once: %u", *c);
    CHECK(unimem_launch(b, 1, NULL, 0) == -1, "a launch without its pointer argument must fail");
    const char *e = unimem_last_error();
    CHECK(e && strstr(e, "read an argument word the launch did not pass (argument word 0; the launch passed 0 words"), "%s", e ? e : "(null)");
    CHECK(*c == 1, "the earlier launch's argument was used again: %u", *c);
    unimem_kernel_destroy(b);
    /* free leaves errno alone also when the runtime's free hook drops device copies. */
    errno = EDOM;
    free(c);
    free(v);
    CHECK(errno == EDOM, "free of memory kernels used changed errno to %d", errno);
    printf("PASS kernel_sync\n");
    return 0;
}
