/* Threads: cross-thread frees in lock-step rounds and through a shared pool (frees racing
 * with the owner's allocations), and threads that exit while holding memory which the
 * main thread verifies and frees afterwards. Every block carries its size and seed and is
 * verified byte for byte by whoever frees it. */
#include "check.h"

#include <pthread.h>

#define NT 8

struct block {
    size_t size; /* whole block, header included */
    uint64_t seed;
};

static void *make_block(uint64_t *rng) {
    uint64_t r = rnd(rng);
    size_t size = sizeof(struct block) + (r % 16 == 0 ? (size_t)(r >> 8) % 150000 : (size_t)(r >> 8) % 2000);
    struct block *b = malloc(size);
    CHECK(b, "malloc(%zu)", size);
    expect_managed(b);
    b->size = size;
    b->seed = rnd(rng);
    fill(b + 1, size - sizeof *b, b->seed);
    return b;
}

static void check_and_free(struct block *b) {
    CHECK(verify(b + 1, b->size - sizeof *b, b->seed), "block %p (%zu bytes) corrupted", (void *)b, b->size);
    free(b);
}

/* --- lock-step rounds: thread t frees what thread t+1 allocated ------------------------ */

#define ROUNDS 12
#define PER_ROUND 2000
static void *slots[NT][PER_ROUND];
static pthread_barrier_t barrier;

static void *rounds_worker(void *arg) {
    int t = (int)(intptr_t)arg;
    uint64_t rng = 0x1234567 + (uint64_t)t * 7919;
    for (int r = 0; r < ROUNDS; r++) {
        for (int i = 0; i < PER_ROUND; i++) slots[t][i] = make_block(&rng);
        pthread_barrier_wait(&barrier);
        int victim = (t + 1 + r) % NT;
        for (int i = 0; i < PER_ROUND; i++) check_and_free(slots[victim][i]);
        pthread_barrier_wait(&barrier);
    }
    return NULL;
}

static void test_rounds(void) {
    pthread_t th[NT];
    pthread_barrier_init(&barrier, NULL, NT);
    for (int t = 0; t < NT; t++) CHECK(pthread_create(&th[t], NULL, rounds_worker, (void *)(intptr_t)t) == 0, "create");
    for (int t = 0; t < NT; t++) pthread_join(th[t], NULL);
    pthread_barrier_destroy(&barrier);
}

/* --- a shared pool: any thread frees any block, while its owner keeps allocating ------- */

#define POOL 4096
static void *pool[POOL];
static pthread_mutex_t pool_lock = PTHREAD_MUTEX_INITIALIZER;

static void *pool_worker(void *arg) {
    uint64_t rng = 0xABCDEF + (uint64_t)(intptr_t)arg * 104729;
    for (int i = 0; i < 40000; i++) {
        void *mine = make_block(&rng);
        size_t k = (size_t)(rnd(&rng) % POOL);
        pthread_mutex_lock(&pool_lock);
        void *old = pool[k];
        pool[k] = mine;
        pthread_mutex_unlock(&pool_lock);
        if (old) check_and_free(old);
    }
    return NULL;
}

static void test_pool(void) {
    pthread_t th[NT];
    for (int t = 0; t < NT; t++) CHECK(pthread_create(&th[t], NULL, pool_worker, (void *)(intptr_t)t) == 0, "create");
    for (int t = 0; t < NT; t++) pthread_join(th[t], NULL);
    for (int k = 0; k < POOL; k++)
        if (pool[k]) check_and_free(pool[k]);
}

/* --- threads that exit holding memory --------------------------------------------------- */

struct hoard {
    int n;
    void *blocks[3000];
};

static void *hoarder(void *arg) {
    uint64_t rng = 0x5555 + (uint64_t)(intptr_t)arg;
    struct hoard *h = malloc(sizeof *h);
    CHECK(h, "malloc hoard");
    h->n = 3000;
    for (int i = 0; i < h->n; i++) h->blocks[i] = make_block(&rng);
    /* Free every third block here, so the spans the thread leaves are partly free. */
    for (int i = 0; i < h->n; i += 3) {
        check_and_free(h->blocks[i]);
        h->blocks[i] = NULL;
    }
    return h;
}

static void *churner(void *arg) {
    uint64_t rng = 0x7777 + (uint64_t)(intptr_t)arg;
    void *keep[500];
    for (int i = 0; i < 500; i++) keep[i] = make_block(&rng);
    for (int i = 0; i < 500; i++) check_and_free(keep[i]);
    return NULL;
}

static void test_exited_owners(void) {
    for (int gen = 0; gen < 5; gen++) {
        pthread_t th[NT];
        struct hoard *h[NT];
        for (int t = 0; t < NT; t++) CHECK(pthread_create(&th[t], NULL, hoarder, (void *)(intptr_t)(gen * NT + t)) == 0, "create");
        for (int t = 0; t < NT; t++) CHECK(pthread_join(th[t], (void **)&h[t]) == 0, "join");
        /* The owners are gone. New threads allocate (and may adopt their spans) while the
         * main thread frees the dead threads' blocks. */
        pthread_t ch[NT / 2];
        for (int t = 0; t < NT / 2; t++) CHECK(pthread_create(&ch[t], NULL, churner, (void *)(intptr_t)t) == 0, "create");
        for (int t = 0; t < NT; t++) {
            for (int i = 0; i < h[t]->n; i++)
                if (h[t]->blocks[i]) check_and_free(h[t]->blocks[i]);
            free(h[t]);
        }
        for (int t = 0; t < NT / 2; t++) pthread_join(ch[t], NULL);
    }
}

int main(void) {
    shim_init();
    test_rounds();
    test_pool();
    test_exited_owners();
    pass("threads");
    return 0;
}
