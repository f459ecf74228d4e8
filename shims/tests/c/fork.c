/* fork while other threads are busy inside malloc and free: the child must find the heap
 * usable (no lock left held by a thread that does not exist in the child), allocate, free,
 * start a thread, and exit 0. A child that deadlocks is killed by its own alarm and
 * reported. Forks come from the main thread and from a worker. */
#include "check.h"

#include <pthread.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#define WORKERS 4
#define FORKS 24

static volatile int stop;

static void *busy(void *arg) {
    uint64_t rng = 0x9999 + (uint64_t)(intptr_t)arg;
    void *keep[64] = {0};
    while (!stop) {
        size_t k = (size_t)(rnd(&rng) % 64);
        free(keep[k]);
        uint64_t r = rnd(&rng);
        size_t size = r % 8 == 0 ? (size_t)(r >> 8) % 400000 : (size_t)(r >> 8) % 1000;
        switch (r % 4) {
        case 0: keep[k] = calloc(1, size); break;
        case 1: keep[k] = realloc(malloc(size / 2 + 1), size + 1); break;
        default: keep[k] = malloc(size); break;
        }
        CHECK(keep[k], "allocation of %zu in a busy worker", size);
        memset(keep[k], 1, size < 64 ? size : 64);
    }
    for (int k = 0; k < 64; k++) free(keep[k]);
    return NULL;
}

static void *child_thread(void *arg) {
    (void)arg;
    for (int i = 0; i < 1000; i++) free(malloc((size_t)i * 13));
    return malloc(10);
}

/* Everything the child does. Exit status 0 on success. */
static void child(void) {
    alarm(10); /* a deadlocked child dies of SIGALRM instead of hanging the test */
    uint64_t rng = 0x4242;
    void *keep[256] = {0};
    for (int i = 0; i < 5000; i++) {
        size_t k = (size_t)(rnd(&rng) % 256);
        free(keep[k]);
        uint64_t r = rnd(&rng);
        size_t size = r % 16 == 0 ? (size_t)(r >> 8) % 300000 : (size_t)(r >> 8) % 3000;
        keep[k] = malloc(size);
        if (!keep[k]) _exit(2);
        expect_managed(keep[k]);
        memset(keep[k], 3, size);
    }
    for (int k = 0; k < 256; k++) free(keep[k]);
    pthread_t t;
    void *ret = NULL;
    if (pthread_create(&t, NULL, child_thread, NULL) != 0 || pthread_join(t, &ret) != 0 || !ret) _exit(3);
    free(ret);
    _exit(0);
}

static void fork_and_wait(const char *from, int i) {
    pid_t pid = fork();
    CHECK(pid >= 0, "fork: errno %d", errno);
    if (pid == 0) child();
    int status;
    CHECK(waitpid(pid, &status, 0) == pid, "waitpid");
    if (WIFSIGNALED(status) && WTERMSIG(status) == SIGALRM)
        CHECK(0, "fork %d from %s: the child deadlocked (killed by its 10 s alarm)", i, from);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "fork %d from %s: child status %#x", i, from, status);
}

static void *forking_worker(void *arg) {
    (void)arg;
    for (int i = 0; i < FORKS / 2; i++) {
        free(malloc(100));
        fork_and_wait("a worker", i);
    }
    return NULL;
}

int main(void) {
    shim_init();
    pthread_t th[WORKERS];
    for (int t = 0; t < WORKERS; t++) CHECK(pthread_create(&th[t], NULL, busy, (void *)(intptr_t)t) == 0, "create");
    usleep(20000);
    for (int i = 0; i < FORKS; i++) {
        fork_and_wait("main", i);
        usleep(1000);
    }
    pthread_t f;
    CHECK(pthread_create(&f, NULL, forking_worker, NULL) == 0, "create");
    pthread_join(f, NULL);
    stop = 1;
    for (int t = 0; t < WORKERS; t++) pthread_join(th[t], NULL);
    void *p = malloc(1000);
    expect_managed(p);
    free(p);
    pass("fork");
    return 0;
}
