/*
 * Coherence under LD_PRELOAD: memory whose only valid copy is on the device (the fake,
 * CPU-backed device: UNIMEM_DEVICE=fake) keeps working for everything a C program does.
 * One case per run: ./coherence <case>. Linked with -lunimem, run with LD_PRELOAD.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h" /* CHECK, and unimem.h */

#define MB (1u << 20)

static void to_device(const void *p, size_t len) {
    CHECK(unimem_prefetch(p, len, UNIMEM_DEVICE) == 0, "prefetch: %s", unimem_last_error());
}

static uint64_t *filled(size_t words, uint64_t seed) {
    uint64_t *p = malloc(words * 8);
    CHECK(p && unimem_is_managed(p), "malloc %zu words", words);
    for (size_t i = 0; i < words; i++) p[i] = i * 2654435761u + seed;
    return p;
}

static void check_filled(const uint64_t *p, size_t words, uint64_t seed, const char *what) {
    for (size_t i = 0; i < words; i++)
        CHECK(p[i] == i * 2654435761u + seed, "%s: word %zu is %llu", what, i, (unsigned long long)p[i]);
}

static unimem_stats stats(void) {
    unimem_stats s;
    CHECK(unimem_get_stats(&s) == 0, "get_stats");
    return s;
}

/* ---- threads + migrator: every value read matches a per-thread model. */
#define THREADS 3
#define SLOTS 200
static uint64_t *slot_ptr[THREADS][SLOTS];
static size_t slot_len[THREADS][SLOTS];
static volatile int stop_migrator;
static volatile long migrations;
static uintptr_t lo = UINTPTR_MAX, hi;

static uint64_t xs(uint64_t *x) {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    return *x;
}

static void *migrator(void *arg) {
    (void)arg;
    uint64_t x = 88172645463325252ull;
    while (!stop_migrator) {
        uintptr_t a = lo + xs(&x) % (hi - lo);
        size_t n = 65536 * (1 + xs(&x) % 4);
        if (a + n > hi) n = hi - a;
        int loc = xs(&x) % 2 ? UNIMEM_DEVICE : UNIMEM_HOST;
        CHECK(unimem_prefetch((void *)a, n, loc) == 0, "migrator: %s", unimem_last_error());
        __atomic_add_fetch(&migrations, 1, __ATOMIC_RELAXED);
    }
    return NULL;
}

static void *worker(void *arg) {
    long t = (long)arg;
    uint64_t *model[SLOTS];
    for (int s = 0; s < SLOTS; s++) model[s] = calloc(slot_len[t][s], 8);
    uint64_t x = 0x9e3779b97f4a7c15ull + t;
    long mismatches = 0, ops = 0;
    while (ops < 400000 || __atomic_load_n(&migrations, __ATOMIC_RELAXED) < 2000) {
        ops++;
        uint64_t r = xs(&x);
        int s = r % SLOTS;
        size_t w = (r >> 20) % slot_len[t][s];
        volatile uint64_t *cell = &slot_ptr[t][s][w];
        if (r & 1) {
            *cell = r;
            model[s][w] = r;
        } else if (*cell != model[s][w]) {
            mismatches++;
        }
    }
    for (int s = 0; s < SLOTS; s++) {
        if (memcmp(slot_ptr[t][s], model[s], slot_len[t][s] * 8) != 0) mismatches++;
        free(model[s]);
    }
    return (void *)mismatches;
}

static void case_stress(void) {
    uint64_t x = 42;
    for (int s = 0; s < SLOTS; s++)
        for (int t = 0; t < THREADS; t++) {
            slot_len[t][s] = 1 + xs(&x) % 700;
            slot_ptr[t][s] = calloc(slot_len[t][s], 8);
            uintptr_t a = (uintptr_t)slot_ptr[t][s];
            if (a < lo) lo = a;
            if (a + slot_len[t][s] * 8 > hi) hi = a + slot_len[t][s] * 8;
        }
    pthread_t m, w[THREADS];
    pthread_create(&m, NULL, migrator, NULL);
    for (long t = 0; t < THREADS; t++) pthread_create(&w[t], NULL, worker, (void *)t);
    long bad = 0;
    for (int t = 0; t < THREADS; t++) {
        void *r;
        pthread_join(w[t], &r);
        bad += (long)r;
    }
    stop_migrator = 1;
    pthread_join(m, NULL);
    unimem_stats st = stats();
    printf("stress: %ld migrations, %llu cpu faults\n", migrations, (unsigned long long)st.cpu_faults);
    CHECK(bad == 0, "%ld mismatches", bad);
    CHECK(st.cpu_faults > 100, "too few faults (%llu) for a meaningful stress", (unsigned long long)st.cpu_faults);
}

/* ---- system calls and stdio on device-owned buffers. */
static void case_io(void) {
    size_t words = 2 * MB / 8;
    uint64_t *src = filled(words, 1), *dst = calloc(words, 8);
    char path[] = "/tmp/unimem-io-XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0, "mkstemp");
    unlink(path);
    to_device(src, words * 8);
    to_device(dst, words * 8);
    CHECK(write(fd, src, words * 8) == (ssize_t)(words * 8), "write: %s", strerror(errno));
    CHECK(pread(fd, dst, words * 8, 0) == (ssize_t)(words * 8), "pread: %s", strerror(errno));
    check_filled(dst, words, 1, "write+pread");
    to_device(src, words * 8);
    memset(dst, 0, words * 8);
    to_device(dst, words * 8);
    CHECK(pwrite(fd, src, 4096, 8192) == 4096, "pwrite: %s", strerror(errno));
    CHECK(lseek(fd, 0, SEEK_SET) == 0, "lseek");
    CHECK(read(fd, dst, words * 8) == (ssize_t)(words * 8), "read: %s", strerror(errno));
    CHECK(memcmp((char *)dst + 8192, src, 4096) == 0, "pwrite+read");
    close(fd);

    int sv[2];
    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0, "socketpair");
    to_device(src, 65536);
    to_device(dst, 65536);
    struct iovec wv[2] = {{src, 1000}, {(char *)src + 5000, 3000}};
    CHECK(writev(sv[0], wv, 2) == 4000, "writev: %s", strerror(errno));
    struct iovec rv[1] = {{dst, 4000}};
    CHECK(readv(sv[1], rv, 1) == 4000, "readv: %s", strerror(errno));
    CHECK(memcmp(dst, src, 1000) == 0 && memcmp((char *)dst + 1000, (char *)src + 5000, 3000) == 0, "writev+readv");
    to_device(src, 65536);
    to_device(dst, 65536);
    CHECK(send(sv[0], src, 8000, 0) == 8000, "send: %s", strerror(errno));
    CHECK(recv(sv[1], dst, 8000, MSG_WAITALL) == 8000, "recv: %s", strerror(errno));
    CHECK(memcmp(dst, src, 8000) == 0, "send+recv");
    close(sv[0]);
    close(sv[1]);

    FILE *f = tmpfile();
    to_device(src, words * 8);
    CHECK(fwrite(src, 8, words, f) == words, "fwrite: %s", strerror(errno));
    rewind(f);
    memset(dst, 0, words * 8);
    to_device(dst, words * 8);
    CHECK(fread(dst, 8, words, f) == words, "fread: %s", strerror(errno));
    check_filled(dst, words, 1, "fwrite+fread");
    fclose(f);
    free(src);
    free(dst);
}

/* ---- fork: the child sees everything. */
static void case_fork(void) {
    size_t words = MB / 8;
    uint64_t *p = filled(words, 7);
    to_device(p, words * 8);
    pid_t pid = fork();
    CHECK(pid >= 0, "fork");
    if (pid == 0) {
        check_filled(p, words, 7, "child");
        p[0] = 99; /* private to the child */
        _exit(0);
    }
    int status;
    CHECK(waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0, "child status %#x", status);
    check_filled(p, words, 7, "parent after fork");
    free(p);
}

/* ---- realloc, memcpy, memcmp across device-owned blocks. */
static void case_memops(void) {
    size_t words = 3 * MB / 8;
    uint64_t *a = filled(words, 3), *b = malloc(words * 8);
    to_device(a, words * 8);
    to_device(b, words * 8);
    memcpy(b, a, words * 8);
    CHECK(memcmp(a, b, words * 8) == 0, "memcpy/memcmp");
    to_device(b, words * 8);
    b = realloc(b, words * 16);
    CHECK(b, "realloc");
    check_filled(b, words, 3, "realloc kept the prefix");
    uint64_t *small = filled(100, 5);
    to_device(small, 800);
    small = realloc(small, 100000);
    check_filled(small, 100, 5, "small realloc");
    free(a);
    free(b);
    free(small);
}

/* ---- the program's own SIGSEGV handler, via sigaction or signal. */
static volatile sig_atomic_t hits;
static char *guard;
static void on_segv_info(int sig, siginfo_t *si, void *ctx) {
    (void)sig, (void)ctx;
    if ((char *)si->si_addr >= guard && (char *)si->si_addr < guard + 4096) {
        hits++;
        mprotect(guard, 4096, PROT_READ | PROT_WRITE);
    }
}
static sigjmp_buf jb;
static void on_segv_plain(int sig) {
    (void)sig;
    hits++;
    siglongjmp(jb, 1);
}

static void case_signals(void) {
    guard = mmap(NULL, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    size_t words = MB / 8;
    uint64_t *p = filled(words, 11);
    to_device(p, words * 8); /* start the runtime: its handler is installed now */
    struct sigaction sa, old;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_segv_info;
    sa.sa_flags = SA_SIGINFO;
    CHECK(sigaction(SIGSEGV, &sa, &old) == 0, "sigaction");
    guard[0] = 1; /* the program's own fault */
    CHECK(hits == 1, "program handler not called (%d)", (int)hits);
    check_filled(p, words, 11, "coherence after sigaction"); /* coherence faults still work */
    struct sigaction q;
    CHECK(sigaction(SIGSEGV, NULL, &q) == 0 && q.sa_sigaction == on_segv_info, "sigaction query");
    /* signal(): a plain handler that longjmps out of a fault outside the arena. */
    CHECK(signal(SIGSEGV, on_segv_plain) != SIG_ERR, "signal");
    mprotect(guard, 4096, PROT_NONE);
    if (sigsetjmp(jb, 1) == 0) {
        guard[1] = 2;
        CHECK(0, "fault did not reach the signal() handler");
    }
    CHECK(hits == 2, "signal() handler not called (%d)", (int)hits);
    to_device(p, words * 8);
    check_filled(p, words, 11, "coherence after signal");
    free(p);
}

/* ---- a genuine segfault still kills the process with SIGSEGV. */
static void case_segv(void) {
    uint64_t *p = filled(1000, 1);
    to_device(p, 8000); /* runtime up, handler installed */
    check_filled(p, 1000, 1, "before the crash");
    volatile char *bad = (char *)16;
    *bad = 1;
    CHECK(0, "still alive after writing to address 16");
}

/* ---- many blocks in alternating states stay far below vm.max_map_count. */
static int map_count(void) {
    FILE *f = fopen("/proc/self/maps", "r");
    int n = 0, c;
    while ((c = fgetc(f)) != EOF) n += c == '\n';
    fclose(f);
    return n;
}

static void case_vma(void) {
    size_t block = 4096, blocks = 200000; /* run with UNIMEM_BLOCK_SIZE=4K */
    char *p = malloc(block * blocks);
    memset(p, 1, block * blocks);
    int before = map_count();
    for (size_t i = 0; i < blocks; i += 2) to_device(p + i * block, block);
    int after = map_count();
    printf("vma: %d mappings before, %d after %zu alternating blocks\n", before, after, blocks / 2);
    CHECK(after < before + 1000, "mappings grew from %d to %d", before, after);
    for (size_t i = 0; i < blocks * block; i += 4093) CHECK(p[i] == 1, "byte %zu", i);
    free(p);
}

/* ---- free of device memory and discard copy nothing back. */
static void case_free(void) {
    size_t words = 4 * MB / 8;
    uint64_t *p = filled(words, 2);
    to_device(p, words * 8);
    unimem_stats before = stats();
    free(p);
    unimem_stats after = stats();
    CHECK(after.bytes_to_host == before.bytes_to_host, "free copied %llu bytes back",
          (unsigned long long)(after.bytes_to_host - before.bytes_to_host));
    CHECK(after.discards > before.discards, "free discarded nothing");
    uint64_t *q = filled(words, 3);
    to_device(q, words * 8);
    CHECK(unimem_discard(q, words * 8) == 0, "discard: %s", unimem_last_error());
    for (size_t i = 0; i < words; i++) CHECK(q[i] == 0, "discarded word %zu is %llu", i, (unsigned long long)q[i]);
    CHECK(stats().bytes_to_host == after.bytes_to_host, "discard copied back");
    CHECK(unimem_prefetch(q, 8, 7) == -1 && strstr(unimem_last_error(), "location 7"), "bad location accepted");
    free(q);
}

int main(int argc, char **argv) {
    CHECK(argc == 2, "usage: coherence <case>");
    const char *c = argv[1];
    if (!strcmp(c, "stress")) case_stress();
    else if (!strcmp(c, "io")) case_io();
    else if (!strcmp(c, "fork")) case_fork();
    else if (!strcmp(c, "memops")) case_memops();
    else if (!strcmp(c, "signals")) case_signals();
    else if (!strcmp(c, "segv")) case_segv();
    else if (!strcmp(c, "vma")) case_vma();
    else if (!strcmp(c, "free")) case_free();
    else CHECK(0, "unknown case %s", c);
    printf("PASS coherence %s\n", c);
    return 0;
}
