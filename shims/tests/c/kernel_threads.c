/* A multi-threaded program around kernel launches, as C programs use unimem: particles
 * allocated with plain malloc are advanced by a WGSL kernel (their `pos` fields) while another
 * thread of the program writes their `tag` fields (other bytes of the same objects: no data
 * race), a third allocates, fills, checks and frees memory, and a fourth moves its own buffer
 * to the device and back with unimem_prefetch. Every side's results must be exact. Migrating
 * (UNIMEM_IN_PLACE=off) the particles' blocks are on the device while the CPU writes them,
 * and the launch merges both versions. Linked with -lunimem; without a Vulkan device it prints
 * "SKIP" and exits 0, unless UNIMEM_REQUIRE_DEVICE=1. */
#include <pthread.h>
#include <stdatomic.h>

#include "check.h"

struct particle {
    uint32_t pos;
    uint32_t vel;
    uint32_t tag; /* written by the tagging thread only */
    uint32_t pad;
};

/* The launch arguments, as the kernel reads them (word index = byte offset / 4). */
struct args {
    struct particle **ps; /* words 0-1: pointers to the particles */
    uint32_t steps;       /* word 2 */
};

static const char *ADVANCE =
    "fn advance(id: u32) {\n"
    "    let p = unimem_load_ptr(unimem_arg_ptr(0u) + u64(id) * 8lu);\n"
    "    let v = unimem_load_u32(p + 4lu);\n"
    "    var x = unimem_load_u32(p);\n"
    "    for (var i = 0u; i < unimem_arg_u32(2u); i++) {\n"
    "        x = x + v + (x >> 31u);\n"
    "    }\n"
    "    unimem_store_u32(p, x);\n"
    "}\n";

enum { N = 60000, STEPS = 3000, LAUNCHES = 3 };

static atomic_uint launching; /* the round of the launch about to run (never goes back) */
static atomic_int stop;

static uint32_t advance_cpu(uint32_t x, uint32_t v) {
    for (int i = 0; i < STEPS; i++) x = x + v + (x >> 31);
    return x;
}

struct tagger {
    struct particle **ps;
    uint32_t round;
};

/* Writes every particle's tag once per round, slowly, from when the round's launch starts. */
static void *tag_particles(void *arg) {
    struct tagger *t = arg;
    while (atomic_load(&launching) < t->round) {
    }
    for (int i = 0; i < N; i++) {
        t->ps[i]->tag = (uint32_t)i * 7u + t->round;
        for (volatile int spin = 0; spin < 300; spin++) {
        }
    }
    return NULL;
}

/* Allocates, fills, checks and frees memory of many sizes until told to stop. */
static void *churn(void *arg) {
    unsigned long *rounds = arg;
    uint32_t x = 12345;
    while (!atomic_load(&stop)) {
        void *blocks[64];
        size_t sizes[64];
        for (int i = 0; i < 64; i++) {
            x = x * 1664525u + 1013904223u;
            sizes[i] = 1 + (x >> 8) % (i % 8 == 0 ? 300000 : 2000);
            blocks[i] = malloc(sizes[i]);
            CHECK(blocks[i], "malloc(%zu)", sizes[i]);
            memset(blocks[i], i + 1, sizes[i]);
        }
        for (int i = 0; i < 64; i++) {
            unsigned char *b = blocks[i];
            CHECK(b[0] == i + 1 && b[sizes[i] - 1] == i + 1 && b[sizes[i] / 2] == i + 1, "churned block %d", i);
            free(b);
        }
        (*rounds)++;
    }
    return NULL;
}

/* Moves its own buffer to the device and home until told to stop; its data stays intact. */
static void *mover(void *arg) {
    unsigned long *rounds = arg;
    enum { WORDS = 1 << 20 };
    uint32_t *buf = malloc(WORDS * sizeof *buf);
    CHECK(buf, "malloc");
    for (uint32_t i = 0; i < WORDS; i++) buf[i] = i ^ 0xabcdu;
    while (!atomic_load(&stop)) {
        CHECK(unimem_prefetch(buf, WORDS * sizeof *buf, UNIMEM_DEVICE) == 0, "%s", unimem_last_error());
        CHECK(unimem_prefetch(buf, WORDS * sizeof *buf, UNIMEM_HOST) == 0, "%s", unimem_last_error());
        (*rounds)++;
    }
    for (uint32_t i = 0; i < WORDS; i++) CHECK(buf[i] == (i ^ 0xabcdu), "mover's word %u", i);
    free(buf);
    return NULL;
}

int main(void) {
    unimem_kernel *k = unimem_kernel_create(ADVANCE, "advance");
    if (!k) kernel_create_failed("kernel_threads");
    struct particle **ps = malloc(N * sizeof *ps);
    uint32_t *expect = malloc(N * sizeof *expect);
    CHECK(ps && expect, "malloc");
    for (int i = 0; i < N; i++) {
        ps[i] = malloc(sizeof **ps);
        CHECK(ps[i], "malloc");
        *ps[i] = (struct particle){(uint32_t)i, (uint32_t)(i % 13) + 1, 0, 0};
        expect[i] = (uint32_t)i;
    }
    unsigned long churned = 0, moved = 0;
    pthread_t churner, mover_thread;
    CHECK(pthread_create(&churner, NULL, churn, &churned) == 0, "pthread_create");
    CHECK(pthread_create(&mover_thread, NULL, mover, &moved) == 0, "pthread_create");
    struct args a = {ps, STEPS};
    for (uint32_t round = 1; round <= LAUNCHES; round++) {
        struct tagger t = {ps, round};
        pthread_t tagger;
        CHECK(pthread_create(&tagger, NULL, tag_particles, &t) == 0, "pthread_create");
        atomic_store(&launching, round);
        CHECK(unimem_launch(k, N, &a, sizeof a) == 0, "launch %u: %s", round, unimem_last_error());
        CHECK(pthread_join(tagger, NULL) == 0, "pthread_join");
        for (int i = 0; i < N; i++) {
            expect[i] = advance_cpu(expect[i], (uint32_t)(i % 13) + 1);
            CHECK(ps[i]->pos == expect[i], "launch %u, particle %d: pos %u, expected %u", round, i, ps[i]->pos, expect[i]);
            CHECK(ps[i]->tag == (uint32_t)i * 7u + round, "launch %u, particle %d: tag %u, expected %u (the CPU's write was lost)",
                  round, i, ps[i]->tag, (uint32_t)i * 7u + round);
            CHECK(ps[i]->vel == (uint32_t)(i % 13) + 1, "particle %d: vel", i);
        }
    }
    atomic_store(&stop, 1);
    CHECK(pthread_join(churner, NULL) == 0 && pthread_join(mover_thread, NULL) == 0, "pthread_join");
    CHECK(churned > 0 && moved > 0, "the helper threads ran (%lu churn rounds, %lu moves)", churned, moved);
    unimem_stats st;
    CHECK(unimem_get_stats(&st) == 0, "%s", unimem_last_error());
    /* Migrating, the tagger writes blocks the kernel has on the device and writes too. */
    const char *mode = getenv("UNIMEM_IN_PLACE");
    if (mode && strcmp(mode, "off") == 0)
        CHECK(st.write_merges > 0, "the tagger never wrote a block during a launch (%d launches)", LAUNCHES);
    unimem_kernel_destroy(k);
    for (int i = 0; i < N; i++) free(ps[i]);
    free(ps);
    free(expect);
    printf("PASS kernel_threads (%d launches, %lu blocks merged, %lu churn rounds, %lu moves)\n", LAUNCHES,
           (unsigned long)st.write_merges, churned, moved);
    return 0;
}
