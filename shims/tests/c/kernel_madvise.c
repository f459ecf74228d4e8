/* A garbage collector gives back the pages of a part of its malloc'ed heap it no longer uses
 * with madvise(MADV_DONTNEED), and reuses them: the part must read as zero and stay usable by
 * the CPU, by system calls and by kernels, also where a kernel left blocks on the device (they
 * are, with UNIMEM_IN_PLACE=off) and where the pages are dropped by a raw system call past
 * the shim. MADV_FREE may keep the content or zero it; either way the memory stays usable.
 * Linked with -lunimem. Without a Vulkan device it prints "SKIP" and exits 0, unless
 * UNIMEM_REQUIRE_DEVICE=1. */

#include "check.h"
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

enum { HEAP = 8 << 20, N = HEAP / 4 };


static unimem_kernel *k;

static void launch_fill(uint32_t *out, uint32_t n, uint32_t add) {
    struct fill_args a = {out, add, 0};
    CHECK(unimem_launch(k, n, &a, sizeof a) == 0, "%s", unimem_last_error());
}

/* Every byte of [p, p+len) is zero. */
static void all_zero(const char *p, size_t len, const char *what) {
    for (size_t i = 0; i < len; i++) CHECK(p[i] == 0, "%s: byte %zu is %d, not 0", what, i, p[i]);
}

int main(void) {
    k = unimem_kernel_create(FILL_WGSL, "fill");
    if (!k) kernel_create_failed("kernel_madvise");
    uint32_t *heap;
    CHECK(posix_memalign((void **)&heap, 1 << 16, HEAP) == 0, "posix_memalign");
    char *bytes = (char *)heap;
    memset(heap, 7, HEAP);
    /* The whole heap goes through a kernel: its granules are registered, and migrating, its
     * blocks are on the device. */
    launch_fill(heap, N, 1);

    /* 1. MADV_DONTNEED on a part the kernel wrote: zero, though the blocks were on the device. */
    char *part = bytes + (2 << 20);
    CHECK(madvise(part, 1 << 20, MADV_DONTNEED) == 0, "madvise: %s", strerror(errno));
    all_zero(part, 1 << 20, "after MADV_DONTNEED");
    CHECK(heap[(2 << 20) / 4 - 1] == (2u << 20) / 4 - 1 + ((2u << 20) / 4 - 1) * 2 + 1, "the word before the part kept its value");
    CHECK(heap[(3 << 20) / 4] == (3u << 20) / 4 * 3 + 1, "the word after the part kept its value");
    /* Reused by the CPU, by a system call (read into it from a pipe), and by a kernel. */
    part[100] = 42;
    CHECK(part[100] == 42, "write after MADV_DONTNEED");
    int fds[2];
    CHECK(pipe(fds) == 0, "pipe");
    CHECK(write(fds[1], "hello", 5) == 5, "write");
    CHECK(read(fds[0], part + 4096, 5) == 5, "read into dropped pages: %s", strerror(errno));
    CHECK(memcmp(part + 4096, "hello", 5) == 0, "read content");
    launch_fill((uint32_t *)part, (1 << 20) / 4, 5);
    CHECK(((uint32_t *)part)[77] == 77 * 3 + 5, "kernel on dropped pages");

    /* 2. The pages dropped by a raw system call (past the shim): zero at the next touch. */
    char *raw = bytes + (5 << 20);
    for (int i = 0; i < 1 << 16; i++) raw[i] = 9;
    CHECK(syscall(SYS_madvise, raw, 1 << 16, MADV_DONTNEED) == 0, "raw madvise: %s", strerror(errno));
    all_zero(raw, 1 << 16, "after a raw MADV_DONTNEED");
    raw[5] = 3;
    CHECK(raw[5] == 3, "write after a raw MADV_DONTNEED");

    /* 3. MADV_FREE: the content is kept or zero, and the memory stays usable. */
    char *freed = bytes + (6 << 20);
    CHECK(madvise(freed, 1 << 16, MADV_FREE) == 0, "MADV_FREE: %s", strerror(errno));
    uint32_t v = ((uint32_t *)freed)[10];
    uint32_t was = (6u << 20) / 4 + 10;
    CHECK(v == 0 || v == was * 3 + 1, "after MADV_FREE: %u", v);
    freed[0] = 1;
    CHECK(freed[0] == 1, "write after MADV_FREE");

    /* 4. Outside the heap, madvise is libc's: an anonymous mapping reads zero, misalignment
     * is refused. */
    char *m = mmap(NULL, 1 << 16, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    CHECK(m != MAP_FAILED, "mmap");
    m[10] = 4;
    CHECK(madvise(m, 1 << 16, MADV_DONTNEED) == 0 && m[10] == 0, "anonymous mapping after MADV_DONTNEED");
    CHECK(madvise(part + 1, 4096, MADV_DONTNEED) == -1 && errno == EINVAL, "misaligned madvise must fail with EINVAL");
    munmap(m, 1 << 16);

    /* The rest of the heap is intact. */
    for (uint32_t i = 0; i < N; i += 4099) {
        char *at = (char *)&heap[i];
        if ((at >= part && at < part + (1 << 20)) || (at >= raw && at < raw + (1 << 16)) || (at >= freed && at < freed + (1 << 16))) continue;
        CHECK(heap[i] == i * 3 + 1, "heap[%u] = %u", i, heap[i]);
    }
    free(heap);
    unimem_kernel_destroy(k);
    printf("PASS kernel_madvise\n");
    return 0;
}
