/* A successful malloc or free leaves errno alone, also when threads contend for the
 * allocator's locks. Programs rely on it in loops like
 *     errno = 0; while ((e = readdir(d))) names[n++] = strdup(e->d_name); if (errno) ...
 * glibc never changes errno on success; a futex call that fails with EAGAIN inside the
 * allocator would. Many threads on few cores, large blocks (they take the page-heap lock). */
#include "check.h"

#include <pthread.h>
#include <time.h>

#define NT 32

static void *worker(void *arg) {
    (void)arg;
    long clobbered = 0;
    for (int i = 0; i < 20000; i++) {
        errno = 0;
        void *p = malloc(200000 + (size_t)(i % 7) * 65536);
        CHECK(p, "malloc");
        if (errno) clobbered++;
        errno = 0;
        free(p);
        if (errno) clobbered++;
    }
    return (void *)clobbered;
}

int main(void) {
    shim_init();
    /* Rounds for about three seconds: the window is small, so give it many chances. */
    time_t end = time(NULL) + 3;
    int rounds = 0;
    do {
        pthread_t t[NT];
        for (int i = 0; i < NT; i++) CHECK(pthread_create(&t[i], NULL, worker, NULL) == 0, "create");
        long total = 0;
        for (int i = 0; i < NT; i++) {
            void *r;
            pthread_join(t[i], &r);
            total += (long)r;
        }
        rounds++;
        CHECK(total == 0, "round %d: %ld successful malloc/free calls changed errno", rounds, total);
    } while (time(NULL) < end);
    void *p = malloc(100);
    expect_managed(p);
    free(p);
    pass("errno_contention");
    return 0;
}
