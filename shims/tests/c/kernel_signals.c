/* Signal handling of a language runtime next to blocks a kernel left on the device (they are
 * with UNIMEM_IN_PLACE=off): a worker thread created with every signal blocked reads them; so
 * do a SIGBUS handler of the program's (a truncated file mapping) before it siglongjmps, a
 * stop-the-world handler installed with a full sa_mask, and a SIGPROF sampling handler that
 * interrupts the main thread's own faults (and siglongjmps out of its loop). A SIGBUS handler
 * set with sigset, sysv_signal, bsd_signal or __sysv_signal is chained as one set with
 * sigaction (glibc sets those past the interposed sigaction). A chained
 * SIGSEGV handler runs with its own sa_mask, not the runtime's, and one installed with
 * SA_RESETHAND runs once: the next genuine fault kills, as without the runtime. Linked with -lunimem.
 * Without a Vulkan device it prints "SKIP" and exits 0, unless UNIMEM_REQUIRE_DEVICE=1. */

#include "check.h"
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

enum { N = 1 << 18 }; /* 1 MiB of u32: 16 blocks of 64 KiB */


static unimem_kernel *k;
static uint32_t *volatile arr;
static sigjmp_buf jb;
static volatile uint64_t handler_sum;
static volatile int segv_seen, mask_ok;
static volatile int in_loop;
static pid_t main_tid;
static volatile unsigned long samples, jumps;

static void launch_fill(uint32_t *out, uint32_t add) {
    struct fill_args a = {out, add, 0};
    CHECK(unimem_launch(k, N, &a, sizeof a) == 0, "%s", unimem_last_error());
}

static uint32_t want(uint32_t i, uint32_t add) { return i * 3u + add; }

static void *worker(void *x) {
    (void)x;
    uint64_t s = 0;
    for (uint32_t i = 0; i < N; i += 97) s += arr[i];
    return (void *)(uintptr_t)s;
}

static void on_bus(int sig, siginfo_t *si, void *ctx) {
    (void)sig, (void)si, (void)ctx;
    handler_sum = arr[N / 2];
    siglongjmp(jb, 1);
}

/* Exported by glibc, declared by <signal.h> only for old X/Open modes. */
extern __sighandler_t bsd_signal(int, __sighandler_t);

static void on_bus_plain(int sig) {
    (void)sig;
    handler_sum = arr[N / 2];
    siglongjmp(jb, 1);
}

static void on_usr1(int sig) {
    (void)sig;
    handler_sum = arr[N / 3];
}

static void on_segv(int sig, siginfo_t *si, void *ctx) {
    (void)sig, (void)ctx;
    sigset_t now;
    pthread_sigmask(SIG_SETMASK, NULL, &now);
    /* Its sa_mask (SIGUSR2) is blocked, what it did not ask for (SIGALRM) is not. */
    mask_ok = sigismember(&now, SIGUSR2) == 1 && sigismember(&now, SIGALRM) == 0;
    segv_seen++;
    handler_sum = arr[N / 4];
    mprotect((void *)((uintptr_t)si->si_addr & ~(uintptr_t)4095), 4096, PROT_READ | PROT_WRITE);
}

static volatile int once_seen;

static void on_segv_once(int sig, siginfo_t *si, void *ctx) {
    (void)sig, (void)ctx;
    once_seen++;
    handler_sum = arr[N / 5];
    mprotect((void *)((uintptr_t)si->si_addr & ~(uintptr_t)4095), 4096, PROT_READ | PROT_WRITE);
}

static void on_prof(int sig) {
    (void)sig;
    samples++;
    uint32_t *a = arr;
    if (a) handler_sum += a[(samples * 4099) % N];
    if (in_loop && gettid() == main_tid && samples % 3 == 0) {
        in_loop = 0;
        jumps++;
        siglongjmp(jb, 1);
    }
}

int main(void) {
    main_tid = gettid();
    k = unimem_kernel_create(FILL_WGSL, "fill");
    if (!k) kernel_create_failed("kernel_signals");
    uint32_t *a = malloc(N * sizeof *a);
    arr = a;

    /* 1. A worker thread created with every signal blocked. */
    launch_fill(a, 1);
    sigset_t all, old;
    sigfillset(&all);
    CHECK(pthread_sigmask(SIG_BLOCK, &all, &old) == 0, "pthread_sigmask");
    pthread_t t;
    CHECK(pthread_create(&t, NULL, worker, NULL) == 0, "pthread_create");
    CHECK(pthread_sigmask(SIG_SETMASK, &old, NULL) == 0, "pthread_sigmask");
    void *r;
    pthread_join(t, &r);
    uint64_t s = 0;
    for (uint32_t i = 0; i < N; i += 97) s += want(i, 1);
    CHECK((uint64_t)(uintptr_t)r == s, "worker read %lu, expected %lu", (unsigned long)(uintptr_t)r, (unsigned long)s);
    /* The same thread blocking everything itself. */
    launch_fill(a, 2);
    CHECK(sigprocmask(SIG_BLOCK, &all, &old) == 0, "sigprocmask");
    CHECK(a[5] == want(5, 2), "read with all signals blocked: %u", a[5]);
    CHECK(sigprocmask(SIG_SETMASK, &old, NULL) == 0, "sigprocmask");

    /* 2. The program's SIGBUS handler reads device data, then siglongjmps. */
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_bus;
    sa.sa_flags = SA_SIGINFO;
    sigemptyset(&sa.sa_mask);
    CHECK(sigaction(SIGBUS, &sa, NULL) == 0, "sigaction");
    launch_fill(a, 3);
    char path[] = "/tmp/unimem-kernel-signals-XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0, "mkstemp");
    unlink(path);
    CHECK(ftruncate(fd, 4096) == 0, "ftruncate");
    volatile char *m = mmap(NULL, 8192, PROT_READ, MAP_SHARED, fd, 0);
    CHECK(m != MAP_FAILED, "mmap");
    if (sigsetjmp(jb, 1) == 0) {
        (void)m[4096 + 1];
        CHECK(0, "no SIGBUS past the end of the file");
    }
    CHECK(handler_sum == want(N / 2, 3), "SIGBUS handler read %lu", (unsigned long)handler_sum);

    /* 2b. The same handler set by glibc's other names (which call its internal sigaction):
     * device faults are still served, and a genuine SIGBUS reaches the handler. */
    typedef __sighandler_t (*setter)(int, __sighandler_t);
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
    setter setters[] = {sigset, sysv_signal, bsd_signal, __sysv_signal};
#pragma GCC diagnostic pop
    for (volatile uint32_t s = 0; s < sizeof setters / sizeof *setters; s++) {
        CHECK(setters[s](SIGBUS, on_bus_plain) != SIG_ERR, "setter %u", s);
        launch_fill(a, 20 + s);
        CHECK(a[3] == want(3, 20 + s), "setter %u: read %u", s, a[3]);
        handler_sum = 0;
        if (sigsetjmp(jb, 1) == 0) {
            (void)m[4096 + 1];
            CHECK(0, "setter %u: no SIGBUS past the end of the file", s);
        }
        CHECK(handler_sum == want(N / 2, 20 + s), "setter %u: the SIGBUS handler read %lu", s, (unsigned long)handler_sum);
    }

    /* 3. A stop-the-world handler with every signal in its sa_mask. */
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_usr1;
    sigfillset(&sa.sa_mask);
    CHECK(sigaction(SIGUSR1, &sa, NULL) == 0, "sigaction");
    launch_fill(a, 4);
    raise(SIGUSR1);
    CHECK(handler_sum == want(N / 3, 4), "SIGUSR1 handler read %lu", (unsigned long)handler_sum);

    /* 4. A chained SIGSEGV handler (a write barrier) runs with its own mask. */
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_segv;
    sa.sa_flags = SA_SIGINFO;
    sigemptyset(&sa.sa_mask);
    sigaddset(&sa.sa_mask, SIGUSR2);
    CHECK(sigaction(SIGSEGV, &sa, NULL) == 0, "sigaction");
    char *guard = mmap(NULL, 4096, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    launch_fill(a, 5);
    guard[7] = 1;
    CHECK(segv_seen == 1 && guard[7] == 1, "SIGSEGV handler ran %d times", segv_seen);
    CHECK(mask_ok, "the SIGSEGV handler did not run with its own mask");
    CHECK(handler_sum == want(N / 4, 5), "SIGSEGV handler read %lu", (unsigned long)handler_sum);

    /* 4b. With SA_RESETHAND it runs once (it reads device data), the action then reads as
     * SIG_DFL, and the next genuine fault kills (a child shows it). */
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_segv_once;
    sa.sa_flags = SA_SIGINFO | SA_RESETHAND;
    sigemptyset(&sa.sa_mask);
    CHECK(sigaction(SIGSEGV, &sa, NULL) == 0, "sigaction");
    char *guard2 = mmap(NULL, 8192, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    launch_fill(a, 6);
    guard2[3] = 1;
    CHECK(once_seen == 1 && guard2[3] == 1, "SA_RESETHAND handler ran %d times", once_seen);
    CHECK(handler_sum == want(N / 5, 6), "SA_RESETHAND handler read %lu", (unsigned long)handler_sum);
    struct sigaction now;
    CHECK(sigaction(SIGSEGV, NULL, &now) == 0 && now.sa_handler == SIG_DFL, "after SA_RESETHAND the action is not SIG_DFL");
    fflush(stdout);
    pid_t child = fork();
    CHECK(child >= 0, "fork");
    if (child == 0) {
        guard2[4096 + 3] = 1;
        _exit(0);
    }
    int status = 0;
    CHECK(waitpid(child, &status, 0) == child, "waitpid");
    CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGSEGV, "the second fault did not kill the child (status %#x, handler ran %d times)", status, once_seen);

    /* 5. A sampling profiler reads the heap while the main thread faults blocks home, and
     * siglongjmps out of the main thread's loop now and then. */
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_prof;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    CHECK(sigaction(SIGPROF, &sa, NULL) == 0, "sigaction");
    struct itimerval it = {{0, 50}, {0, 50}};
    CHECK(setitimer(ITIMER_PROF, &it, NULL) == 0, "setitimer");
    for (volatile uint32_t round = 0; round < 100; round++) {
        arr = NULL;
        launch_fill(a, round);
        arr = a;
        if (sigsetjmp(jb, 1)) continue;
        in_loop = 1;
        uint64_t got = 0, w = 0;
        for (uint32_t i = 0; i < N; i += 1024) got += a[i], w += want(i, round);
        in_loop = 0;
        CHECK(got == w, "round %u: read %lu, expected %lu", round, (unsigned long)got, (unsigned long)w);
    }
    memset(&it, 0, sizeof it);
    setitimer(ITIMER_PROF, &it, NULL);
    sa.sa_handler = SIG_IGN;
    sigaction(SIGPROF, &sa, NULL);
    /* Every block still moves (nothing was left locked by a jump). */
    launch_fill(a, 7);
    CHECK(a[N - 1] == want(N - 1, 7), "after the profiler: %u", a[N - 1]);

    unimem_stats st;
    CHECK(unimem_get_stats(&st) == 0, "%s", unimem_last_error());
    printf("PASS kernel_signals (%lu samples, %lu jumps, %lu CPU faults)\n", samples, jumps, (unsigned long)st.cpu_faults);
    unimem_kernel_destroy(k);
    return 0;
}
