/* A fork after kernels ran: the parent allocates, a kernel writes the memory (migrating, its
 * blocks are then on the device), and the parent forks. The child inherits the memory, all
 * of it on the host (the fork brought device blocks home first), but not the device: it
 * reads the kernel's results, writes and allocates; prefetch to the host, sync and the
 * advice that keeps memory home succeed (nothing to do); a launch, a kernel's creation, a
 * prefetch to the device, other advice and discard fail, with a message that says why (the
 * child of a fork), not that the runtime "failed to start earlier". The parent's memory is
 * its own, and it keeps launching. Linked with -lunimem; without a Vulkan device it prints
 * "SKIP" and exits 0, unless UNIMEM_REQUIRE_DEVICE=1. */
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"

static const char *FILL =
    "fn fill(id: u32) {\n"
    "    unimem_store_u32(unimem_arg_ptr(0u) + u64(id) * 4lu, id * 3u + unimem_arg_u32(2u));\n"
    "}\n";

enum { N = 1 << 16 }; /* 256 KiB: several blocks */

static int filled(const uint32_t *v, uint32_t add) {
    for (uint32_t i = 0; i < N; i++)
        if (v[i] != i * 3u + add) return 0;
    return 1;
}

/* The last error must say the child of a fork cannot do `what`, and not that the runtime
 * failed to start. */
static void refused_in_child(const char *what) {
    const char *e = unimem_last_error();
    CHECK(e && strstr(e, "fork") && strstr(e, "exec"), "%s in the child: %s", what, e ? e : "(no message)");
    CHECK(!strstr(e, "failed to start"), "%s in the child: %s", what, e);
}

static void child(unimem_kernel *k, uint32_t *v) {
    alarm(30); /* a hung child dies of SIGALRM instead of hanging the test */
    CHECK(filled(v, 1), "the kernel's results did not reach the child");
    size_t bytes = N * sizeof *v;
    int local = 0;
    /* Everything is home: these have nothing to do. */
    CHECK(unimem_prefetch(v, bytes, UNIMEM_HOST) == 0, "prefetch to the host: %s", unimem_last_error());
    CHECK(unimem_sync() == 0, "sync: %s", unimem_last_error());
    CHECK(unimem_advise(v, bytes, UNIMEM_ADVISE_PREFERRED_HOST) == 0, "advise host: %s", unimem_last_error());
    CHECK(unimem_advise(v, bytes, UNIMEM_ADVISE_CLEAR) == 0, "advise clear: %s", unimem_last_error());
    /* Still validated: a range outside the heap, a bad location. */
    CHECK(unimem_prefetch(&local, sizeof local, UNIMEM_HOST) == -1, "prefetch of a stack variable succeeded");
    CHECK(strstr(unimem_last_error(), "not in the managed heap"), "%s", unimem_last_error());
    CHECK(unimem_prefetch(v, bytes, 7) == -1, "prefetch to location 7 succeeded");
    /* What needs the device. */
    struct { uint32_t *p; uint32_t add; } a = {v, 5};
    CHECK(unimem_launch(k, N, &a, sizeof a) == -1, "a launch in the child succeeded");
    refused_in_child("a launch");
    CHECK(filled(v, 1), "a refused launch changed memory");
    CHECK(unimem_prefetch(v, bytes, UNIMEM_DEVICE) == -1, "prefetch to the device succeeded in the child");
    refused_in_child("prefetch to the device");
    CHECK(unimem_advise(v, bytes, UNIMEM_ADVISE_READ_MOSTLY) == -1, "advise read-mostly succeeded in the child");
    refused_in_child("advise read-mostly");
    CHECK(unimem_discard(v, bytes) == -1, "discard succeeded in the child");
    refused_in_child("discard");
    CHECK(unimem_kernel_create(FILL, "fill") == NULL, "a kernel was created in the child");
    refused_in_child("kernel creation");
    /* Plain memory: written, allocated, freed. */
    for (uint32_t i = 0; i < N; i++) v[i] = 7;
    uint32_t *w = malloc(bytes);
    CHECK(w, "malloc in the child");
    expect_managed(w);
    memcpy(w, v, bytes);
    free(w);
    unimem_kernel_destroy(k); /* touches no device in the child */
    exit(0);
}

int main(void) {
    shim_init();
    unimem_kernel *k = unimem_kernel_create(FILL, "fill");
    if (!k) kernel_create_failed("kernel_fork");
    uint32_t *v = malloc(N * sizeof *v);
    CHECK(v, "malloc");
    expect_managed(v);
    struct { uint32_t *p; uint32_t add; } a = {v, 1};
    CHECK(unimem_launch(k, N, &a, sizeof a) == 0, "%s", unimem_last_error());
    /* v is not read here: migrating, its blocks are on the device when the fork comes, and
     * the fork brings them home (bytes_to_host grows). */
    const char *mode = getenv("UNIMEM_IN_PLACE");
    int migrating = mode && strcmp(mode, "off") == 0;
    unimem_stats before, after;
    CHECK(unimem_get_stats(&before) == 0, "stats");
    fflush(stdout);
    pid_t pid = fork();
    CHECK(pid >= 0, "fork: errno %d", errno);
    if (pid == 0) child(k, v);
    int status;
    CHECK(waitpid(pid, &status, 0) == pid, "waitpid");
    CHECK(!(WIFSIGNALED(status) && WTERMSIG(status) == SIGALRM), "the child hung (killed by its 30 s alarm)");
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child status %#x", status);
    CHECK(unimem_get_stats(&after) == 0, "stats");
    CHECK(!migrating || after.bytes_to_host >= before.bytes_to_host + N * sizeof *v,
          "migrating, the fork brought %llu bytes home, not the kernel's %zu",
          (unsigned long long)(after.bytes_to_host - before.bytes_to_host), N * sizeof *v);
    /* The child's writes were its own; the parent keeps launching. */
    CHECK(filled(v, 1), "the parent's memory changed");
    a.add = 2;
    CHECK(unimem_launch(k, N, &a, sizeof a) == 0, "launch after the fork: %s", unimem_last_error());
    CHECK(filled(v, 2), "the launch after the fork");
    CHECK(unimem_prefetch(v, N * sizeof *v, UNIMEM_DEVICE) == 0, "%s", unimem_last_error());
    CHECK(filled(v, 2), "after a prefetch to the device");
    unimem_kernel_destroy(k);
    free(v);
    pass("kernel_fork");
    return 0;
}
