/* Sample: libc's own I/O keeps working around kernels. glibc fills and empties stream
 * buffers (FILE, DIR) with system calls it makes internally, and a program passes fresh
 * heap memory to system calls the shim does not interpose (stat): the kernel returns EFAULT
 * for memory without host access instead of faulting it home. When a kernel writes an object
 * that shares a block with such a buffer, the block moves to the device (migrating mode),
 * so before the fix a stream after a launch read nothing ("end of file"), a stream flushed
 * after a launch lost its output, and stat into a fresh struct failed.
 *
 * The fix keeps libc's stream buffers in the internal heap (checked directly) and makes
 * every fresh allocation host-writable. The test also packs buffers among objects of their
 * size that a kernel then writes (holes freed among them, where the allocator puts the next
 * allocation of that size), in both orders: buffer allocated after the launch (read, stat)
 * and before it (write, flush).
 * Linked with -lunimem. Without a Vulkan device it prints "SKIP" and exits 0, unless
 * UNIMEM_REQUIRE_DEVICE=1. */
#include "check.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

/* Writes the first word of every object in the pointer array (argument words 0-1). */
static const char *TOUCH =
    "fn touch(id: u32) {\n"
    "    let p = unimem_load_ptr(unimem_arg_ptr(0u) + u64(id) * 8lu);\n"
    "    if (p != 0lu) { unimem_store_u32(p, id + 1u); }\n"
    "}\n";

enum { CROWD = 96, LINES = 500 };

static unimem_kernel *touch;

/* CROWD objects of `size` bytes; every other one freed (NULL in the array), leaving holes
 * for the next allocations of that size between objects that a kernel will write. */
static void **crowd(size_t size) {
    void **objs = calloc(CROWD, sizeof *objs);
    CHECK(objs, "calloc");
    for (int i = 0; i < CROWD; i++) CHECK(objs[i] = malloc(size), "malloc(%zu)", size);
    for (int i = 0; i < CROWD; i += 2) {
        free(objs[i]);
        objs[i] = NULL;
    }
    return objs;
}

/* A kernel writes every object left in `objs`: their blocks move to the device. */
static void launch_over(void **objs) {
    uint64_t arg = (uint64_t)(uintptr_t)objs;
    CHECK(unimem_launch(touch, CROWD, &arg, sizeof arg) == 0, "%s", unimem_last_error());
    for (int i = 1; i < CROWD; i += 2) CHECK(*(uint32_t *)objs[i] == (uint32_t)i + 1, "object %d", i);
}

static void release(void **objs) {
    for (int i = 0; i < CROWD; i++) free(objs[i]);
    free(objs);
}

static size_t block_size_of(const char *path) {
    struct stat st;
    CHECK(stat(path, &st) == 0, "stat %s: %s", path, strerror(errno));
    return (size_t)st.st_blksize;
}

static void write_lines(const char *path) {
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    CHECK(fd >= 0, "open %s: %s", path, strerror(errno));
    char line[32];
    for (int i = 0; i < LINES; i++) {
        int n = snprintf(line, sizeof line, "line %d\n", i);
        CHECK(write(fd, line, (size_t)n) == n, "write: %s", strerror(errno));
    }
    CHECK(close(fd) == 0, "close");
}

/* The file holds exactly lines 0..LINES-1, read with read(2) (interposed). */
static void check_lines(const char *path) {
    static char all[LINES * 16], want[32];
    int fd = open(path, O_RDONLY);
    CHECK(fd >= 0, "open %s: %s", path, strerror(errno));
    ssize_t n = read(fd, all, sizeof all - 1);
    CHECK(n > 0, "read %s: %s", path, strerror(errno));
    all[n] = 0;
    close(fd);
    char *p = all;
    for (int i = 0; i < LINES; i++) {
        int len = snprintf(want, sizeof want, "line %d\n", i);
        CHECK(strncmp(p, want, (size_t)len) == 0, "%s: line %d is missing or wrong (file has %zd bytes)", path, i, n);
        p += len;
    }
    CHECK(*p == 0, "%s: extra bytes after line %d", path, LINES - 1);
}

int main(void) {
    shim_init();
    touch = unimem_kernel_create(TOUCH, "touch");
    if (!touch) kernel_create_failed("kernel_io");
    char dir[] = "/tmp/unimem-kernel-io-XXXXXX";
    CHECK(mkdtemp(dir), "mkdtemp: %s", strerror(errno));
    char in[64], out[64];
    snprintf(in, sizeof in, "%s/in", dir);
    snprintf(out, sizeof out, "%s/out", dir);
    write_lines(in);
    size_t buffer = block_size_of(in);

    /* The standard streams' buffers never share a block with the program's objects. */
    fflush(stdout);
    CHECK(stdin->_IO_buf_base && !unimem_is_managed(stdin->_IO_buf_base), "stdin's buffer %p", (void *)stdin->_IO_buf_base);
    CHECK(stdout->_IO_buf_base && !unimem_is_managed(stdout->_IO_buf_base), "stdout's buffer %p", (void *)stdout->_IO_buf_base);

    /* Read after a launch: the stream's buffer is allocated after the kernel wrote its
     * neighbours. */
    void **objs = crowd(buffer);
    launch_over(objs);
    FILE *f = fopen(in, "r");
    CHECK(f, "fopen %s: %s", in, strerror(errno));
    char line[64];
    CHECK(fgets(line, sizeof line, f) && !unimem_is_managed(f->_IO_buf_base), "a stream's buffer (%p) is in the managed heap",
          (void *)f->_IO_buf_base);
    rewind(f);
    int lines = 0;
    while (fgets(line, sizeof line, f)) lines++;
    CHECK(!ferror(f) && lines == LINES, "read %d of %d lines after a launch (ferror %d, errno %s)", lines, LINES,
          ferror(f), strerror(errno));
    CHECK(fclose(f) == 0, "fclose");
    int a = -1, b = -1;
    f = fopen(in, "r");
    CHECK(f && fscanf(f, "line %d\nline %d", &a, &b) == 2 && a == 0 && b == 1, "fscanf after a launch: %d %d", a, b);
    fclose(f);
    release(objs);

    /* Write, launch, flush: the stream's buffer is filled before the kernel writes its
     * neighbours, and emptied after. */
    objs = crowd(block_size_of(dir));
    FILE *w = fopen(out, "w");
    CHECK(w, "fopen %s: %s", out, strerror(errno));
    for (int i = 0; i < LINES / 2; i++) fprintf(w, "line %d\n", i);
    CHECK(!unimem_is_managed(w->_IO_buf_base), "a stream's buffer (%p) is in the managed heap", (void *)w->_IO_buf_base);
    launch_over(objs);
    for (int i = LINES / 2; i < LINES; i++) fprintf(w, "line %d\n", i);
    launch_over(objs);
    CHECK(fclose(w) == 0, "fclose after a launch: %s", strerror(errno));
    check_lines(out);
    release(objs);

    /* A fresh struct passed to a system call the shim does not interpose. */
    objs = crowd(sizeof(struct stat));
    launch_over(objs);
    struct stat *st = malloc(sizeof *st);
    expect_managed(st);
    CHECK(stat(in, st) == 0, "stat into a fresh heap struct after a launch: %s", strerror(errno));
    CHECK(st->st_size > 0, "size %ld", (long)st->st_size);
    free(st);
    release(objs);

    /* A directory stream read after a launch. */
    objs = crowd(4096);
    DIR *d = opendir(dir);
    CHECK(d, "opendir: %s", strerror(errno));
    CHECK(!unimem_is_managed(d), "a directory stream (%p) is in the managed heap", (void *)d);
    launch_over(objs);
    int names = 0;
    errno = 0;
    for (struct dirent *e; (e = readdir(d));) names += strcmp(e->d_name, "in") == 0 || strcmp(e->d_name, "out") == 0;
    CHECK(errno == 0 && names == 2, "readdir after a launch: %d of 2 names, errno %s", names, strerror(errno));
    closedir(d);
    release(objs);

    unlink(in);
    unlink(out);
    rmdir(dir);
    unimem_kernel_destroy(touch);
    unimem_stats s;
    CHECK(unimem_get_stats(&s) == 0, "%s", unimem_last_error());
    printf("PASS kernel_io (%lu launches, %lu bytes to host)\n", (unsigned long)s.launches, (unsigned long)s.bytes_to_host);
    return 0;
}
