/* Sample: system calls on old heap buffers. When a kernel writes an object, the object's whole
 * block moves to the device (migrating mode) and its host pages lose their access; a CPU
 * access brings it home through the fault handler, but a system call that touches such a
 * page gets EFAULT from the kernel instead. So a path string, a struct stat, an exit status,
 * a pollfd array, an argv allocated before a kernel wrote one of its neighbours failed
 * (stat and open with EFAULT, system and posix_spawn with a child that could not exec, exec
 * returning EFAULT), unless the library wraps the call and brings the buffers home first.
 *
 * Every buffer here is allocated between two neighbours of its size (consecutive
 * allocations of one size class share a 64 KiB block, checked), and each call runs right
 * after a launch that writes every neighbour, so its buffers are on the device; in
 * migrating mode the test also checks that the call brought memory home (unimem_get_stats),
 * which shows the buffers were away. The names are the ones programs link to: the plain
 * ones, the 64-bit ones of -D_FILE_OFFSET_BITS=64, the fortified ones of -D_FORTIFY_SOURCE
 * and the __xstat and __xmknod families of programs built against glibc before 2.33
 * (declared below). A few calls need no wrapper (libc copies the struct in user space, where
 * a fault is handled); they run here too, marked, to show it (sigaction, fstatvfs, futimes).
 * The exec family runs last: the program re-executes itself with execve, then execv, then
 * execvp, each from old buffers, and the last image prints the PASS line.
 *
 * Linked with -lunimem. Without a Vulkan device it prints "SKIP" and exits 0, unless
 * UNIMEM_REQUIRE_DEVICE=1. */
#include "check.h"

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/epoll.h>
#include <sys/inotify.h>
#include <sys/ioctl.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/select.h>
#include <sys/sendfile.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/statvfs.h>
#include <sys/swap.h>
#include <sys/sysinfo.h>
#include <sys/time.h>
#include <sys/timerfd.h>
#include <sys/times.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>
#include <utime.h>

extern char **environ;

/* Names of fortified programs (-D_FORTIFY_SOURCE) and of programs built against glibc < 2.33. */
extern int __open_2(const char *, int);
extern int __open64_2(const char *, int);
extern int __openat_2(int, const char *, int);
extern int __openat64_2(int, const char *, int);
extern ssize_t __read_chk(int, void *, size_t, size_t);
extern ssize_t __pread_chk(int, void *, size_t, off_t, size_t);
extern ssize_t __pread64_chk(int, void *, size_t, off64_t, size_t);
extern ssize_t __recv_chk(int, void *, size_t, size_t, int);
extern ssize_t __recvfrom_chk(int, void *, size_t, size_t, int, struct sockaddr *, socklen_t *);
extern size_t __fread_chk(void *, size_t, size_t, size_t, FILE *);
extern ssize_t __readlink_chk(const char *, char *, size_t, size_t);
extern ssize_t __readlinkat_chk(int, const char *, char *, size_t, size_t);
extern char *__getcwd_chk(char *, size_t, size_t);
extern int __poll_chk(struct pollfd *, nfds_t, int, size_t);
extern int __ppoll_chk(struct pollfd *, nfds_t, const struct timespec *, const sigset_t *, size_t);
extern int __xstat(int, const char *, struct stat *);
extern int __xstat64(int, const char *, struct stat64 *);
extern int __lxstat(int, const char *, struct stat *);
extern int __lxstat64(int, const char *, struct stat64 *);
extern int __fxstat(int, int, struct stat *);
extern int __fxstat64(int, int, struct stat64 *);
extern int __fxstatat(int, int, const char *, struct stat *, int);
extern int __fxstatat64(int, int, const char *, struct stat64 *, int);
extern int __xmknod(int, const char *, mode_t, dev_t *);
extern int __xmknodat(int, int, const char *, mode_t, dev_t *);
enum { STAT_VER = 1, MKNOD_VER = 0 }; /* _STAT_VER_LINUX and _MKNOD_VER_LINUX on x86-64 */

/* Rewrites the first word of every object in the pointer array (argument words 0-1) with
 * its value: the objects are written (their blocks move) and unchanged (so libc's own
 * allocations can be touched too). */
static const char *TOUCH =
    "fn touch(id: u32) {\n"
    "    let p = unimem_load_ptr(unimem_arg_ptr(0u) + u64(id) * 8lu);\n"
    "    unimem_store_u32(p, unimem_load_u32(p));\n"
    "}\n";

enum { MAX_NEIGHBOURS = 2048, SIZE = 1000 };

static unimem_kernel *touch;
static void **neighbours; /* in the heap: the kernel reads it */
static unsigned n_neighbours;
static int launched, migrating; /* blocks move (known after the first launch) */
static uint64_t home_before;
static unsigned long calls; /* calls checked on old buffers */
static intptr_t ret;        /* what the last TRY's call returned, and its errno */
static int err;
static char self[4096], dir[64];

static uint64_t bytes_to_host(void) {
    unimem_stats s;
    CHECK(unimem_get_stats(&s) == 0, "%s", unimem_last_error());
    return s.bytes_to_host;
}

/* `size` bytes of heap (at least 16) between two neighbours of that size, allocated one
 * after the other: one size class, so at least one neighbour shares the 64 KiB block. */
static void *old(size_t size) {
    if (size < 16) size = 16;
    void *before = malloc(size), *p = malloc(size), *after = malloc(size);
    CHECK(before && p && after, "malloc(%zu)", size);
    expect_managed(p);
    uintptr_t block = (uintptr_t)p >> 16;
    CHECK((uintptr_t)before >> 16 == block || (uintptr_t)after >> 16 == block,
          "%p (%zu bytes) shares no 64 KiB block with its neighbours %p and %p", p, size, before, after);
    CHECK(n_neighbours + 2 <= MAX_NEIGHBOURS, "more than %d neighbours", MAX_NEIGHBOURS);
    neighbours[n_neighbours++] = before;
    neighbours[n_neighbours++] = after;
    return p;
}

/* The next launches write `p` (a live allocation) too. */
static void touched(void *p) {
    CHECK(n_neighbours < MAX_NEIGHBOURS, "more than %d neighbours", MAX_NEIGHBOURS);
    neighbours[n_neighbours++] = p;
}

static char *old_str(const char *s) { return strcpy(old(strlen(s) + 1), s); }

/* "<dir>/<name>" in an old buffer. */
static char *old_path(const char *name) {
    char p[256];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    return old_str(p);
}

/* A NULL-terminated copy of `v` without UNIMEM_TEST_MARK, plus `extra` (if not NULL): array
 * and strings old. */
static char **old_strv(char *const *v, const char *extra) {
    size_t n = 0, kept = 0;
    while (v[n]) n++;
    char **copy = old((n + 2) * sizeof *copy);
    for (size_t i = 0; i < n; i++)
        if (strncmp(v[i], "UNIMEM_TEST_MARK=", 17) != 0) copy[kept++] = old_str(v[i]);
    if (extra) copy[kept++] = old_str(extra);
    copy[kept] = NULL;
    return copy;
}

/* A kernel writes every neighbour: in migrating mode every old buffer is on the device when
 * this returns. Nothing touches the buffers between this and the call under test. */
static void away(void) {
    uint64_t arg = (uint64_t)(uintptr_t)neighbours;
    CHECK(unimem_launch(touch, n_neighbours, &arg, sizeof arg) == 0, "%s", unimem_last_error());
    if (!launched++) {
        unimem_stats s;
        CHECK(unimem_get_stats(&s) == 0, "%s", unimem_last_error());
        migrating = s.mapped_in_place == 0;
    }
    home_before = bytes_to_host();
}

/* Launch, run `call` on old buffers, check `ok` (`ret` and `err` hold its result and errno),
 * and in migrating mode that the call brought memory home: its buffers were away. */
#define TRY(call, ok)                                                                                      \
    do {                                                                                                   \
        away();                                                                                            \
        errno = 0;                                                                                         \
        ret = (intptr_t)(call);                                                                            \
        err = errno;                                                                                       \
        CHECK(ok, "%s returned %ld, errno %d (%s)", #call, (long)ret, err, strerror(err));                 \
        CHECK(!migrating || bytes_to_host() > home_before, "%s brought nothing home: its buffers were not " \
              "on the device", #call);                                                                     \
        calls++;                                                                                           \
    } while (0)

static void write_file(const char *path, size_t size) {
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    CHECK(fd >= 0, "open %s: %s", path, strerror(errno));
    char b[SIZE];
    fill(b, sizeof b, 7);
    CHECK(size <= sizeof b && write(fd, b, size) == (ssize_t)size, "write: %s", strerror(errno));
    CHECK(close(fd) == 0, "close");
}

static mode_t mode_of(const char *path) {
    struct stat st;
    CHECK(stat(path, &st) == 0, "stat %s: %s", path, strerror(errno));
    return st.st_mode & 07777;
}

/* stat and its kin: a path in, a struct out. */
static void stats(void) {
    char *file = old_path("in");
    int fd = open(file, O_RDONLY);
    CHECK(fd >= 0, "open: %s", strerror(errno));
    struct stat *st = old(sizeof *st);
    struct stat64 *st64 = old(sizeof *st64);
    struct statx *stx = old(sizeof *stx);
    TRY(stat(file, st), ret == 0 && st->st_size == SIZE);
    TRY(stat64(file, st64), ret == 0 && st64->st_size == SIZE);
    TRY(lstat(file, st), ret == 0 && st->st_size == SIZE);
    TRY(lstat64(file, st64), ret == 0 && st64->st_size == SIZE);
    TRY(fstat(fd, st), ret == 0 && st->st_size == SIZE);
    TRY(fstat64(fd, st64), ret == 0 && st64->st_size == SIZE);
    TRY(fstatat(AT_FDCWD, file, st, 0), ret == 0 && st->st_size == SIZE);
    TRY(fstatat64(AT_FDCWD, file, st64, 0), ret == 0 && st64->st_size == SIZE);
    TRY(statx(AT_FDCWD, file, 0, STATX_SIZE, stx), ret == 0 && stx->stx_size == SIZE);
    /* Record locks: the struct flock the kernel reads and writes back. */
    struct flock *fl = old(sizeof *fl);
    struct flock64 *fl64 = old(sizeof *fl64);
    *fl = (struct flock){.l_type = F_RDLCK, .l_whence = SEEK_SET};
    TRY(fcntl(fd, F_GETLK, fl), ret == 0 && fl->l_type == F_UNLCK);
    *fl64 = (struct flock64){.l_type = F_RDLCK, .l_whence = SEEK_SET};
    TRY(fcntl64(fd, F_GETLK64, fl64), ret == 0 && fl64->l_type == F_UNLCK);
    /* An ioctl whose request encodes its size: _IOR('f', 1, long), the inode flags (a file
     * system without them says ENOTTY or EOPNOTSUPP, not EFAULT). */
    long *flags = old(sizeof *flags);
    TRY(ioctl(fd, _IOR('f', 1, long), flags), ret == 0 || err == ENOTTY || err == EOPNOTSUPP || err == EINVAL);
    TRY(__xstat(STAT_VER, file, st), ret == 0 && st->st_size == SIZE);
    TRY(__xstat64(STAT_VER, file, st64), ret == 0 && st64->st_size == SIZE);
    TRY(__lxstat(STAT_VER, file, st), ret == 0 && st->st_size == SIZE);
    TRY(__lxstat64(STAT_VER, file, st64), ret == 0 && st64->st_size == SIZE);
    TRY(__fxstat(STAT_VER, fd, st), ret == 0 && st->st_size == SIZE);
    TRY(__fxstat64(STAT_VER, fd, st64), ret == 0 && st64->st_size == SIZE);
    TRY(__fxstatat(STAT_VER, AT_FDCWD, file, st, 0), ret == 0 && st->st_size == SIZE);
    TRY(__fxstatat64(STAT_VER, AT_FDCWD, file, st64, 0), ret == 0 && st64->st_size == SIZE);
    close(fd);
}

/* The open family; a mode passed through the variadic wrappers must arrive. */
static void opens(void) {
    char *file = old_path("in");
    const char *names[] = {"open", "open64", "openat", "openat64", "creat", "creat64"};
    char *created[6];
    for (int i = 0; i < 6; i++) created[i] = old_path(names[i]);
    TRY(open(file, O_RDONLY), ret >= 0);
    close((int)ret);
    TRY(open(created[0], O_WRONLY | O_CREAT, 0640), ret >= 0 && mode_of(created[0]) == 0640);
    close((int)ret);
    TRY(open64(created[1], O_WRONLY | O_CREAT, 0604), ret >= 0 && mode_of(created[1]) == 0604);
    close((int)ret);
    TRY(openat(AT_FDCWD, created[2], O_WRONLY | O_CREAT, 0600), ret >= 0 && mode_of(created[2]) == 0600);
    close((int)ret);
    TRY(openat64(AT_FDCWD, created[3], O_WRONLY | O_CREAT, 0644), ret >= 0 && mode_of(created[3]) == 0644);
    close((int)ret);
    TRY(creat(created[4], 0660), ret >= 0 && mode_of(created[4]) == 0660);
    close((int)ret);
    TRY(creat64(created[5], 0606), ret >= 0 && mode_of(created[5]) == 0606);
    close((int)ret);
    TRY(__open_2(file, O_RDONLY), ret >= 0);
    close((int)ret);
    TRY(__open64_2(file, O_RDONLY), ret >= 0);
    close((int)ret);
    TRY(__openat_2(AT_FDCWD, file, O_RDONLY), ret >= 0);
    close((int)ret);
    TRY(__openat64_2(AT_FDCWD, file, O_RDONLY), ret >= 0);
    close((int)ret);
    TRY(open(created[0], O_RDONLY | O_CREAT | O_EXCL, 0600), ret == -1 && err == EEXIST);
    for (int i = 0; i < 6; i++) unlink(created[i]);
}

/* Calls that only take paths. */
static void paths(void) {
    char *file = old_path("in"), *sub = old_path("sub"), *a = old_path("a"), *b = old_path("b"),
         *c = old_path("c"), *link_to = old_path("hard"), *sym = old_path("sym"), *missing = old_path("missing");
    struct timespec *times = old(2 * sizeof *times);
    times[0] = (struct timespec){1000000, 0};
    times[1] = (struct timespec){2000000, 0};
    TRY(access(file, R_OK), ret == 0);
    TRY(access(missing, R_OK), ret == -1 && err == ENOENT);
    TRY(faccessat(AT_FDCWD, file, R_OK, 0), ret == 0);
    TRY(mkdir(sub, 0700), ret == 0 && mode_of(sub) == 0700);
    TRY(rmdir(sub), ret == 0);
    TRY(mkdirat(AT_FDCWD, sub, 0750), ret == 0 && mode_of(sub) == 0750);
    TRY(chdir(sub), ret == 0);
    CHECK(chdir(dir) == 0, "chdir %s: %s", dir, strerror(errno));
    TRY(unlinkat(AT_FDCWD, sub, AT_REMOVEDIR), ret == 0);
    write_file(a, 10);
    TRY(rename(a, b), ret == 0 && access(a, F_OK) != 0);
    TRY(renameat(AT_FDCWD, b, AT_FDCWD, c), ret == 0 && access(b, F_OK) != 0);
    TRY(renameat2(AT_FDCWD, c, AT_FDCWD, a, RENAME_NOREPLACE), ret == 0 && access(c, F_OK) != 0);
    TRY(link(a, link_to), ret == 0);
    TRY(symlink(file, sym), ret == 0);
    TRY(chmod(a, 0604), ret == 0 && mode_of(a) == 0604);
    TRY(chown(a, getuid(), getgid()), ret == 0);
    TRY(truncate(a, 3), ret == 0);
    TRY(truncate64(a, 5), ret == 0);
    struct stat st;
    CHECK(stat(a, &st) == 0 && st.st_size == 5, "size %ld after truncate", (long)st.st_size);
    TRY(utimensat(AT_FDCWD, a, times, 0), ret == 0);
    CHECK(stat(a, &st) == 0 && st.st_mtime == 2000000, "mtime %ld after utimensat", (long)st.st_mtime);
    TRY(unlink(a), ret == 0);
    TRY(unlink(link_to), ret == 0);
    TRY(unlink(missing), ret == -1 && err == ENOENT);
    /* The symbolic link stays for `buffers`. */
}

static time_t mtime_of(const char *path) {
    struct stat st;
    CHECK(stat(path, &st) == 0, "stat %s: %s", path, strerror(errno));
    return st.st_mtime;
}

/* Makes a FIFO at `path` with `call`, checks it and removes it. */
#define TRY_FIFO(path, call)                                                          \
    do {                                                                              \
        struct stat st_;                                                              \
        TRY(call, ret == 0 && stat(path, &st_) == 0 && S_ISFIFO(st_.st_mode));        \
        CHECK(unlink(path) == 0, "unlink %s: %s", path, strerror(errno));             \
    } while (0)

/* More path calls: at-variants, times, special files, watches, privileged ones. */
static void more_paths(void) {
    char *file = old_path("in"), *a = old_path("a"), *hard = old_path("hardat"), *sym = old_path("symat"),
         *fifo = old_path("fifo"), *missing = old_path("missing"), *slash = old_str("/");
    write_file(a, 10);
    TRY(fchmodat(AT_FDCWD, a, 0640, 0), ret == 0 && mode_of(a) == 0640);
    TRY(fchownat(AT_FDCWD, a, getuid(), getgid(), 0), ret == 0);
    TRY(lchown(a, getuid(), getgid()), ret == 0);
    TRY(linkat(AT_FDCWD, a, AT_FDCWD, hard, 0), ret == 0);
    TRY(symlinkat(file, AT_FDCWD, sym), ret == 0);
    CHECK(unlink(hard) == 0 && unlink(sym) == 0, "unlink: %s", strerror(errno));

    struct utimbuf *ut = old(sizeof *ut);
    *ut = (struct utimbuf){1000000, 2000000};
    struct timeval *tv = old(2 * sizeof *tv);
    struct timespec *ts = old(2 * sizeof *ts);
    TRY(utime(a, ut), ret == 0 && mtime_of(a) == 2000000);
    tv[0] = tv[1] = (struct timeval){3000000, 0};
    TRY(utimes(a, tv), ret == 0 && mtime_of(a) == 3000000);
    tv[1].tv_sec = 3100000;
    TRY(lutimes(a, tv), ret == 0 && mtime_of(a) == 3100000);
    tv[1].tv_sec = 3200000;
    TRY(futimesat(AT_FDCWD, a, tv), ret == 0 && mtime_of(a) == 3200000);
    int fd = open(a, O_RDWR);
    CHECK(fd >= 0, "open %s: %s", a, strerror(errno));
    ts[0] = ts[1] = (struct timespec){4000000, 0};
    TRY(futimens(fd, ts), ret == 0 && mtime_of(a) == 4000000);
    /* Needs no wrapper: glibc converts the times in user space, where a fault is handled. */
    tv[1].tv_sec = 5000000;
    TRY(futimes(fd, tv), ret == 0 && mtime_of(a) == 5000000);

    dev_t *dev = old(sizeof *dev);
    *dev = 0;
    TRY_FIFO(fifo, mknod(fifo, S_IFIFO | 0600, 0));
    TRY_FIFO(fifo, mknodat(AT_FDCWD, fifo, S_IFIFO | 0600, 0));
    TRY_FIFO(fifo, mkfifo(fifo, 0600));
    TRY_FIFO(fifo, mkfifoat(AT_FDCWD, fifo, 0600));
    TRY_FIFO(fifo, __xmknod(MKNOD_VER, fifo, S_IFIFO | 0600, dev));
    TRY_FIFO(fifo, __xmknodat(MKNOD_VER, AT_FDCWD, fifo, S_IFIFO | 0600, dev));

    int in = inotify_init1(IN_CLOEXEC);
    CHECK(in >= 0, "inotify_init1: %s", strerror(errno));
    TRY(inotify_add_watch(in, a, IN_MODIFY), ret >= 1);
    close(in);
    /* Privileged: without the capability they fail with EPERM (chroot after reading the
     * path, the others before: the check that memory came home shows the wrapper ran). As
     * root, chroot("/") changes nothing and the others find no file. */
    TRY(chroot(slash), ret == 0 || err == EPERM);
    TRY(acct(missing), ret == -1 && (err == ENOENT || err == EPERM));
    TRY(swapon(missing, 0), ret == -1 && (err == ENOENT || err == EPERM));
    TRY(swapoff(missing), ret == -1 && (err == ENOENT || err == EPERM));

    /* File systems. */
    struct statfs *sfs = old(sizeof *sfs);
    struct statfs64 *sfs64 = old(sizeof *sfs64);
    struct statvfs *svfs = old(sizeof *svfs);
    struct statvfs64 *svfs64 = old(sizeof *svfs64);
    TRY(statfs(file, sfs), ret == 0 && sfs->f_bsize > 0);
    TRY(statfs64(file, sfs64), ret == 0 && sfs64->f_bsize > 0);
    TRY(fstatfs(fd, sfs), ret == 0 && sfs->f_bsize > 0);
    TRY(fstatfs64(fd, sfs64), ret == 0 && sfs64->f_bsize > 0);
    TRY(statvfs(file, svfs), ret == 0 && svfs->f_bsize > 0);
    TRY(statvfs64(file, svfs64), ret == 0 && svfs64->f_bsize > 0);
    /* Need no wrapper: glibc fills the struct in user space from a statfs of its own. */
    TRY(fstatvfs(fd, svfs), ret == 0 && svfs->f_bsize > 0);
    TRY(fstatvfs64(fd, svfs64), ret == 0 && svfs64->f_bsize > 0);

    /* Extended attributes (a file system without them fails with ENOTSUP, not EFAULT). */
    char *name = old_str("user.unimem"), *value = old_str("value"), *got = old(64), *list = old(256);
    int xattrs = fsetxattr(fd, "user.probe", "x", 1, 0) == 0 || errno != ENOTSUP;
#define XATTR(ok) (xattrs ? (ok) : ret >= 0 || err == ENOTSUP)
#define GOT_VALUE XATTR(ret == 5 && memcmp(got, "value", 5) == 0)
#define LISTED XATTR(ret > 0 && memmem(list, (size_t)ret, "user.unimem", 12) != NULL)
    TRY(setxattr(a, name, value, 5, XATTR_CREATE), XATTR(ret == 0));
    TRY(getxattr(a, name, got, 64), GOT_VALUE);
    TRY(lsetxattr(a, name, value, 5, XATTR_REPLACE), XATTR(ret == 0));
    TRY(lgetxattr(a, name, got, 64), GOT_VALUE);
    TRY(fsetxattr(fd, name, value, 5, XATTR_REPLACE), XATTR(ret == 0));
    TRY(fgetxattr(fd, name, got, 64), GOT_VALUE);
    TRY(listxattr(a, list, 256), LISTED);
    TRY(llistxattr(a, list, 256), LISTED);
    TRY(flistxattr(fd, list, 256), LISTED);
    TRY(removexattr(a, name), XATTR(ret == 0));
    setxattr(a, "user.unimem", "value", 5, 0);
    TRY(lremovexattr(a, name), XATTR(ret == 0));
    setxattr(a, "user.unimem", "value", 5, 0);
    TRY(fremovexattr(fd, name), XATTR(ret == 0));
    close(fd);
    unlink(a);

    /* Directory entries. */
    int dfd = open(dir, O_RDONLY | O_DIRECTORY);
    CHECK(dfd >= 0, "open %s: %s", dir, strerror(errno));
    char *entries = old(4096);
    off_t *base = old(sizeof *base);
    off64_t *base64 = old(sizeof *base64);
    TRY(getdents64(dfd, entries, 4096), ret > 0);
    CHECK(lseek(dfd, 0, SEEK_SET) == 0, "lseek: %s", strerror(errno));
    TRY(getdirentries(dfd, entries, 4096, base), ret > 0 && *base == 0);
    CHECK(lseek(dfd, 0, SEEK_SET) == 0, "lseek: %s", strerror(errno));
    TRY(getdirentries64(dfd, entries, 4096, base64), ret > 0 && *base64 == 0);
    close(dfd);
}

/* Sockets: addresses in and out, options, arrays of messages. */
static void sockets(void) {
    struct sockaddr_un *addr = old(sizeof *addr), *name = old(sizeof *name);
    socklen_t *len = old(sizeof *len);
    addr->sun_family = AF_UNIX;
    snprintf(addr->sun_path, sizeof addr->sun_path, "%s/sock", dir);
    int srv = socket(AF_UNIX, SOCK_STREAM, 0), cli = socket(AF_UNIX, SOCK_STREAM, 0), cli2 = socket(AF_UNIX, SOCK_STREAM, 0);
    CHECK(srv >= 0 && cli >= 0 && cli2 >= 0, "socket: %s", strerror(errno));
    TRY(bind(srv, (struct sockaddr *)addr, sizeof *addr), ret == 0);
    CHECK(listen(srv, 4) == 0, "listen: %s", strerror(errno));
    TRY(connect(cli, (struct sockaddr *)addr, sizeof *addr), ret == 0);
    CHECK(connect(cli2, (struct sockaddr *)addr, sizeof *addr) == 0, "connect: %s", strerror(errno));
    *len = sizeof *name;
    TRY(accept(srv, (struct sockaddr *)name, len), ret >= 0 && *len == sizeof(sa_family_t));
    close((int)ret);
    *len = sizeof *name;
    TRY(accept4(srv, (struct sockaddr *)name, len, SOCK_CLOEXEC), ret >= 0 && (fcntl((int)ret, F_GETFD) & FD_CLOEXEC));
    close((int)ret);
    *len = sizeof *name;
    TRY(getsockname(srv, (struct sockaddr *)name, len), ret == 0 && strcmp(name->sun_path, addr->sun_path) == 0);
    *len = sizeof *name;
    TRY(getpeername(cli, (struct sockaddr *)name, len), ret == 0 && strcmp(name->sun_path, addr->sun_path) == 0);
    int *value = old(sizeof *value);
    *value = 65536;
    TRY(setsockopt(cli, SOL_SOCKET, SO_SNDBUF, value, sizeof *value), ret == 0);
    *len = sizeof *value;
    TRY(getsockopt(cli, SOL_SOCKET, SO_TYPE, value, len), ret == 0 && *value == SOCK_STREAM && *len == sizeof *value);
    close(srv);
    close(cli);
    close(cli2);
    unlink(addr->sun_path);

    /* Two datagrams sent in one call and received in one: the arrays, their iovecs, the
     * data and the timeout (which the kernel updates) old. */
    int sv[2];
    CHECK(socketpair(AF_UNIX, SOCK_DGRAM, 0, sv) == 0, "socketpair: %s", strerror(errno));
    struct mmsghdr *msgs = old(2 * sizeof *msgs);
    struct iovec *iov = old(2 * sizeof *iov);
    char *data = old(64);
    struct timespec *timeout = old(sizeof *timeout);
    memset(msgs, 0, 2 * sizeof *msgs);
    strcpy(data, "first");
    strcpy(data + 32, "second");
    for (int i = 0; i < 2; i++) {
        iov[i] = (struct iovec){data + 32 * i, strlen(data + 32 * i)};
        msgs[i].msg_hdr.msg_iov = &iov[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
    }
    TRY(sendmmsg(sv[0], msgs, 2, 0), ret == 2 && msgs[0].msg_len == 5 && msgs[1].msg_len == 6);
    memset(data, 0, 64);
    iov[0].iov_len = iov[1].iov_len = 32;
    *timeout = (struct timespec){5, 0};
    TRY(recvmmsg(sv[1], msgs, 2, 0, timeout), ret == 2 && msgs[1].msg_len == 6 && strcmp(data, "first") == 0 &&
                                                   strcmp(data + 32, "second") == 0);
    close(sv[0]);
    close(sv[1]);
}

/* Copies between descriptors with offsets in the heap, and between address spaces (our own). */
static void transfers(void) {
    char *file = old_path("in"), *copy = old_path("copy");
    int in = open(file, O_RDONLY), out = open(copy, O_WRONLY | O_CREAT | O_TRUNC, 0600), p[2];
    CHECK(in >= 0 && out >= 0 && pipe(p) == 0, "open: %s", strerror(errno));
    off_t *off = old(sizeof *off);
    off64_t *off64 = old(sizeof *off64), *off_out = old(sizeof *off_out);
    *off = 0;
    TRY(sendfile(out, in, off, 100), ret == 100 && *off == 100);
    *off64 = 100;
    TRY(sendfile64(out, in, off64, 100), ret == 100 && *off64 == 200);
    *off64 = 0;
    TRY(splice(in, off64, p[1], NULL, 100, 0), ret == 100 && *off64 == 100);
    *off64 = 0;
    *off_out = 200;
    TRY(copy_file_range(in, off64, out, off_out, 100, 0), ret == 100 && *off64 == 100 && *off_out == 300);
    close(in);
    close(out);
    close(p[0]);
    close(p[1]);
    unlink(copy);

    char *local = old(SIZE), *remote = old(SIZE);
    struct iovec *liov = old(sizeof *liov), *riov = old(sizeof *riov);
    fill(remote, SIZE, 9);
    *liov = (struct iovec){local, SIZE};
    *riov = (struct iovec){remote, SIZE};
    TRY(process_vm_readv(getpid(), liov, 1, riov, 1, 0), ret == SIZE && verify(local, SIZE, 9));
    fill(local, SIZE, 11);
    TRY(process_vm_writev(getpid(), liov, 1, riov, 1, 0), ret == SIZE && verify(remote, SIZE, 11));
}

static void on_alarm(int sig) { (void)sig; }

/* What the kernel reports on the process and the system, limits, timers. */
static void system_info(void) {
    struct utsname *u = old(sizeof *u);
    struct rusage *usage = old(sizeof *usage);
    struct sysinfo *info = old(sizeof *info);
    struct tms *t = old(sizeof *t);
    TRY(uname(u), ret == 0 && strcmp(u->sysname, "Linux") == 0);
    TRY(getrusage(RUSAGE_SELF, usage), ret == 0 && usage->ru_maxrss > 0);
    TRY(sysinfo(info), ret == 0 && info->totalram > 0);
    /* On EFAULT glibc's times touches the struct (the fault handler brings it home) and
     * returns -EFAULT as a time: the struct shows whether the kernel wrote it. */
    t->tms_utime = -5;
    TRY(times(t), ret != -1 && t->tms_utime >= 0);

    struct rlimit *limit = old(sizeof *limit), *was = old(sizeof *was);
    struct rlimit64 *limit64 = old(sizeof *limit64), *was64 = old(sizeof *was64);
    TRY(getrlimit(RLIMIT_NOFILE, limit), ret == 0 && limit->rlim_cur > 0);
    TRY(getrlimit64(RLIMIT_NOFILE, limit64), ret == 0 && limit64->rlim_cur == limit->rlim_cur);
    TRY(setrlimit(RLIMIT_NOFILE, limit), ret == 0);
    TRY(setrlimit64(RLIMIT_NOFILE, limit64), ret == 0);
    TRY(prlimit(0, RLIMIT_NOFILE, limit, was), ret == 0 && was->rlim_cur == limit->rlim_cur);
    TRY(prlimit64(0, RLIMIT_NOFILE, limit64, was64), ret == 0 && was64->rlim_cur == limit64->rlim_cur);

    /* A virtual timer (process time) far off, read back, then stopped. */
    struct itimerval *it = old(sizeof *it), *it_was = old(sizeof *it_was), off = {{0, 0}, {0, 0}};
    *it = (struct itimerval){{0, 0}, {100, 0}};
    TRY(setitimer(ITIMER_VIRTUAL, it, it_was), ret == 0 && it_was->it_value.tv_sec == 0 && it_was->it_value.tv_usec == 0);
    TRY(getitimer(ITIMER_VIRTUAL, it_was), ret == 0 && it_was->it_value.tv_sec > 90);
    CHECK(setitimer(ITIMER_VIRTUAL, &off, NULL) == 0, "setitimer: %s", strerror(errno));
    int tfd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC);
    CHECK(tfd >= 0, "timerfd_create: %s", strerror(errno));
    struct itimerspec *its = old(sizeof *its), *its_was = old(sizeof *its_was);
    *its = (struct itimerspec){{0, 0}, {100, 0}};
    TRY(timerfd_settime(tfd, 0, its, its_was), ret == 0 && its_was->it_value.tv_sec == 0 && its_was->it_value.tv_nsec == 0);
    TRY(timerfd_gettime(tfd, its_was), ret == 0 && its_was->it_value.tv_sec > 90);
    close(tfd);

    /* Needs no wrapper: glibc copies the actions in user space, where a fault is handled. */
    struct sigaction *sa = old(sizeof *sa), *sa_was = old(sizeof *sa_was);
    *sa = (struct sigaction){.sa_handler = on_alarm};
    TRY(sigaction(SIGUSR1, sa, sa_was), ret == 0 && sa_was->sa_handler == SIG_DFL);
    signal(SIGUSR1, SIG_DFL);
}

/* Calls that fill a buffer: a link's target, the working directory, file data. */
static void buffers(void) {
    char *file = old_path("in"), *sym = old_path("sym");
    char *target = old(256), *cwd = old(4096);
    size_t len = strlen(dir) + 3;
    TRY(readlink(sym, target, 256), ret == (intptr_t)len && memcmp(target, dir, strlen(dir)) == 0);
    TRY(readlinkat(AT_FDCWD, sym, target, 256), ret == (intptr_t)len && strncmp(target + len - 2, "in", 2) == 0);
    TRY(__readlink_chk(sym, target, 256, 256), ret == (intptr_t)len);
    TRY(__readlinkat_chk(AT_FDCWD, sym, target, 256, 256), ret == (intptr_t)len);
    unlink(sym);
    TRY(getcwd(cwd, 4096), ret == (intptr_t)cwd && strcmp(cwd, dir) == 0);
    TRY(__getcwd_chk(cwd, 4096, 4096), ret == (intptr_t)cwd && strcmp(cwd, dir) == 0);

    int fd = open(file, O_RDONLY);
    FILE *f = fopen(file, "r");
    CHECK(fd >= 0 && f, "open %s: %s", file, strerror(errno));
    setvbuf(f, NULL, _IONBF, 0); /* fread reads into the caller's buffer */
    char *data = old(SIZE);
    TRY(__read_chk(fd, data, SIZE, SIZE), ret == SIZE && verify(data, SIZE, 7));
    TRY(__pread_chk(fd, data, SIZE, 0, SIZE), ret == SIZE && verify(data, SIZE, 7));
    TRY(__pread64_chk(fd, data, SIZE, 0, SIZE), ret == SIZE && verify(data, SIZE, 7));
    TRY(__fread_chk(data, SIZE, 1, SIZE, f), ret == SIZE && verify(data, SIZE, 7));
    TRY(getrandom(data, 64, 0), ret == 64);
    close(fd);
    fclose(f);

    /* Streams: libc opens the path with its internal open. */
    char *dir_path = old_str(dir);
    TRY(fopen(file, "r"), ret != 0);
    fclose((FILE *)ret);
    TRY(opendir(dir_path), ret != 0);
    closedir((DIR *)ret);

    int sv[2];
    CHECK(socketpair(AF_UNIX, SOCK_DGRAM, 0, sv) == 0, "socketpair: %s", strerror(errno));
    struct sockaddr_storage *from = old(sizeof *from);
    socklen_t *from_len = old(sizeof *from_len);
    *from_len = sizeof *from;
    CHECK(send(sv[0], "datagram", 8, 0) == 8, "send");
    TRY(__recv_chk(sv[1], data, SIZE, SIZE, 0), ret == 8 && memcmp(data, "datagram", 8) == 0);
    CHECK(send(sv[0], "datagram", 8, 0) == 8, "send");
    TRY(__recvfrom_chk(sv[1], data, SIZE, SIZE, 0, (struct sockaddr *)from, from_len), ret == 8);
    close(sv[0]);
    close(sv[1]);
}

/* A one-shot SIGALRM in 20 ms, without SA_RESTART: it interrupts a sleep. */
static int alarm_soon(void) {
    struct itimerval t = {{0, 0}, {0, 20000}};
    return setitimer(ITIMER_REAL, &t, NULL);
}

/* Pipes, waiting for descriptors, sleeping. */
static void waits(void) {
    int *fds = old(2 * sizeof *fds);
    TRY(pipe(fds), ret == 0 && fds[0] > 2 && fds[1] > 2);
    close(fds[0]);
    close(fds[1]);
    TRY(pipe2(fds, O_CLOEXEC), ret == 0 && fds[0] > 2 && fds[1] > 2);
    /* Reading `fds` after a launch would bring its block home, and with it the buffers that
     * share it: the calls below get the descriptors from locals. */
    int rd = fds[0], wr = fds[1];
    CHECK(write(wr, "x", 1) == 1, "write to a pipe");
    /* An ioctl older than the size encoding: FIONREAD writes an int. */
    int *avail = old(sizeof *avail);
    TRY(ioctl(rd, FIONREAD, avail), ret == 0 && *avail == 1);

    struct pollfd *p = old(sizeof *p);
    *p = (struct pollfd){.fd = rd, .events = POLLIN};
    struct timespec *zero = old(sizeof *zero);
    *zero = (struct timespec){0, 0};
    TRY(poll(p, 1, 0), ret == 1 && (p->revents & POLLIN));
    TRY(ppoll(p, 1, zero, NULL), ret == 1 && (p->revents & POLLIN));
    TRY(__poll_chk(p, 1, 0, sizeof *p), ret == 1 && (p->revents & POLLIN));
    TRY(__ppoll_chk(p, 1, zero, NULL, sizeof *p), ret == 1 && (p->revents & POLLIN));
    fd_set *r = old(sizeof *r);
    FD_ZERO(r);
    FD_SET(rd, r);
    struct timeval *tv = old(sizeof *tv);
    *tv = (struct timeval){0, 0};
    TRY(select(rd + 1, r, NULL, NULL, tv), ret == 1 && FD_ISSET(rd, r));
    TRY(pselect(rd + 1, r, NULL, NULL, zero, NULL), ret == 1 && FD_ISSET(rd, r));
    int ep = epoll_create1(EPOLL_CLOEXEC);
    CHECK(ep >= 0, "epoll_create1: %s", strerror(errno));
    struct epoll_event *ev = old(sizeof *ev);
    *ev = (struct epoll_event){.events = EPOLLIN, .data.u32 = 77};
    TRY(epoll_ctl(ep, EPOLL_CTL_ADD, rd, ev), ret == 0);
    struct epoll_event *events = old(4 * sizeof *events);
    TRY(epoll_wait(ep, events, 4, 0), ret == 1 && events[0].data.u32 == 77);
    sigset_t *mask = old(sizeof *mask);
    sigemptyset(mask);
    TRY(epoll_pwait(ep, events, 4, 0, mask), ret == 1 && events[0].data.u32 == 77);
    TRY(epoll_pwait2(ep, events, 4, zero, mask), ret == 1 && events[0].data.u32 == 77);
    close(ep);
    close(rd);
    close(wr);

    struct sigaction sa = {.sa_handler = on_alarm};
    CHECK(sigaction(SIGALRM, &sa, NULL) == 0, "sigaction: %s", strerror(errno));
    struct timespec *req = old(sizeof *req), *rem = old(sizeof *rem);
    *req = (struct timespec){0, 1000};
    TRY(nanosleep(req, rem), ret == 0);
    TRY(clock_nanosleep(CLOCK_MONOTONIC, 0, req, rem), ret == 0);
    /* Interrupted: the remainder is written, and errno is the call's. */
    *req = (struct timespec){5, 0};
    TRY((alarm_soon(), nanosleep(req, rem)), ret == -1 && err == EINTR && rem->tv_sec < 5 && rem->tv_sec * 1000000000L + rem->tv_nsec > 0);
    TRY((alarm_soon(), clock_nanosleep(CLOCK_MONOTONIC, 0, req, rem)), ret == EINTR && rem->tv_sec < 5);
}

/* Signal masks and sets: SIGUSR2 blocked, raised, waited for; a wait for SIGALRM. (Each
 * call must succeed: a SIGUSR2 raised while not blocked ends the program.) */
static void signal_sets(void) {
    sigset_t *set = old(sizeof *set), *was = old(sizeof *was), *none = old(sizeof *none), usr2;
    sigemptyset(set);
    sigaddset(set, SIGUSR2);
    sigemptyset(none);
    usr2 = *set;
    siginfo_t *info = old(sizeof *info);
    struct timespec *zero = old(sizeof *zero);
    *zero = (struct timespec){0, 0};
    int *sig = old(sizeof *sig);
    TRY(sigprocmask(SIG_BLOCK, set, was), ret == 0 && !sigismember(was, SIGUSR2));
    TRY(pthread_sigmask(SIG_BLOCK, set, was), ret == 0 && sigismember(was, SIGUSR2));
    raise(SIGUSR2);
    TRY(sigpending(was), ret == 0 && sigismember(was, SIGUSR2));
    TRY(sigtimedwait(set, info, zero), ret == SIGUSR2 && info->si_signo == SIGUSR2);
    raise(SIGUSR2);
    TRY(sigwaitinfo(set, info), ret == SIGUSR2 && info->si_signo == SIGUSR2);
    raise(SIGUSR2);
    TRY(sigwait(set, sig), ret == 0 && *sig == SIGUSR2);
    TRY(signalfd(-1, set, SFD_CLOEXEC), ret >= 0);
    close((int)ret);
    CHECK(sigprocmask(SIG_UNBLOCK, &usr2, NULL) == 0, "sigprocmask: %s", strerror(errno));
    /* SIGALRM (handled since `waits`) interrupts the wait. */
    TRY((alarm_soon(), sigsuspend(none)), ret == -1 && err == EINTR);
}

/* A child that exits with `code` at once. */
static pid_t child_exiting(int code) {
    pid_t pid = fork();
    CHECK(pid >= 0, "fork: %s", strerror(errno));
    if (pid == 0) _exit(code);
    return pid;
}

/* Waiting for children (the fork handler brings blocks home: the launch comes after). */
static void children(void) {
    int *status = old(sizeof *status);
    struct rusage *usage = old(sizeof *usage);
    siginfo_t *info = old(sizeof *info);
    pid_t pid = child_exiting(5);
    TRY(waitpid(pid, status, 0), ret == pid && WIFEXITED(*status) && WEXITSTATUS(*status) == 5);
    pid = child_exiting(6);
    TRY(wait(status), ret == pid && WEXITSTATUS(*status) == 6);
    pid = child_exiting(7);
    TRY(wait3(status, 0, usage), ret == pid && WEXITSTATUS(*status) == 7);
    pid = child_exiting(8);
    TRY(wait4(pid, status, 0, usage), ret == pid && WEXITSTATUS(*status) == 8);
    pid = child_exiting(9);
    TRY(waitid(P_PID, (id_t)pid, info, WEXITED), ret == 0 && info->si_pid == pid && info->si_status == 9);
}

/* Programs started from old buffers: a shell command, and this program as a child that
 * checks its argument and environment. */
static void programs(void) {
    char *command = old_str("exit 3");
    TRY(system(command), WIFEXITED(ret) && WEXITSTATUS(ret) == 3);
    char *echo = old_str("echo from popen");
    TRY(popen(echo, "r"), ret != 0);
    char line[64] = "";
    CHECK(fgets(line, sizeof line, (FILE *)ret) && strcmp(line, "from popen\n") == 0, "popen read '%s'", line);
    CHECK(pclose((FILE *)ret) == 0, "pclose");

    /* posix_spawn's child shares our memory and runs with every signal blocked: it reads the
     * attributes and glibc's array of file actions (touched by the launches), and opens the
     * path an action holds (glibc's copy) as descriptor 7. */
    char *argv[] = {self, "child", "7", NULL};
    char **args = old_strv(argv, NULL), **env = old_strv(environ, "UNIMEM_TEST_MARK=spawned");
    char *path = old_str(self), *in = old_path("in");
    pid_t *pid = old(sizeof *pid);
    posix_spawnattr_t *attr = old(sizeof *attr);
    CHECK(posix_spawnattr_init(attr) == 0, "posix_spawnattr_init");
    posix_spawn_file_actions_t *actions = old(sizeof *actions);
    CHECK(posix_spawn_file_actions_init(actions) == 0 && posix_spawn_file_actions_addopen(actions, 7, in, O_RDONLY, 0) == 0,
          "posix_spawn_file_actions_addopen");
    touched(actions->__actions);
    int status;
    TRY(posix_spawn(pid, path, actions, attr, args, env), ret == 0);
    CHECK(waitpid(*pid, &status, 0) == *pid && WIFEXITED(status) && WEXITSTATUS(status) == 42,
          "the spawned child exited with %#x", status);
    TRY(posix_spawnp(pid, path, actions, attr, args, env), ret == 0);
    CHECK(waitpid(*pid, &status, 0) == *pid && WIFEXITED(status) && WEXITSTATUS(status) == 42,
          "the spawned child exited with %#x", status);
    posix_spawn_file_actions_destroy(actions);
    posix_spawnattr_destroy(attr);
}

/* Phase `phase` of the exec chain: run the next image with execve (0), execv (1) or execvp
 * (2), its path, arguments and environment in old buffers. Returns only on failure. */
static void exec_next(int phase) {
    char next[16], count[32], mark[64];
    snprintf(next, sizeof next, "%d", phase + 1);
    snprintf(count, sizeof count, "%lu", calls + 1);
    snprintf(mark, sizeof mark, "UNIMEM_TEST_MARK=phase %d", phase + 1);
    char *argv[] = {self, "phase", next, count, NULL};
    char *path = old_str(self), **args = old_strv(argv, NULL), **env = old_strv(environ, mark);
    away();
    if (phase == 0) {
        execve(path, args, env);
    } else {
        environ = env;
        if (phase == 1)
            execv(path, args);
        else
            execvp(path, args);
    }
    CHECK(0, "exec from phase %d: %s", phase, strerror(errno));
}

int main(int argc, char **argv) {
    if (argc == 3 && strcmp(argv[1], "child") == 0) {
        /* Spawned by `programs`: the environment and descriptor it was given. */
        const char *mark = getenv("UNIMEM_TEST_MARK");
        return mark && strcmp(mark, "spawned") == 0 && fcntl(atoi(argv[2]), F_GETFD) != -1 ? 42 : 1;
    }
    int phase = argc == 4 && strcmp(argv[1], "phase") == 0 ? atoi(argv[2]) : 0;
    if (phase > 0) {
        char want[32];
        snprintf(want, sizeof want, "phase %d", phase);
        const char *mark = getenv("UNIMEM_TEST_MARK");
        CHECK(mark && strcmp(mark, want) == 0, "phase %d: UNIMEM_TEST_MARK is %s", phase, mark ? mark : "(unset)");
        calls = strtoul(argv[3], NULL, 10);
    }
    shim_init();
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    CHECK(n > 0, "readlink /proc/self/exe: %s", strerror(errno));
    if (phase == 3) {
        printf("PASS kernel_syscalls (%lu calls on old buffers)\n", calls);
        return 0;
    }
    touch = unimem_kernel_create(TOUCH, "touch");
    if (!touch) kernel_create_failed("kernel_syscalls");
    neighbours = calloc(MAX_NEIGHBOURS, sizeof *neighbours);
    CHECK(neighbours, "calloc");
    if (phase == 0) {
        umask(0);
        strcpy(dir, "/tmp/unimem-kernel-syscalls-XXXXXX");
        CHECK(mkdtemp(dir), "mkdtemp: %s", strerror(errno));
        char in[128];
        snprintf(in, sizeof in, "%s/in", dir);
        write_file(in, SIZE);
        CHECK(chdir(dir) == 0, "chdir: %s", strerror(errno));
        stats();
        opens();
        paths();
        more_paths();
        buffers();
        sockets();
        transfers();
        waits();
        system_info();
        signal_sets();
        children();
        programs();
        unlink(in);
        CHECK(chdir("/") == 0 && rmdir(dir) == 0, "rmdir %s: %s", dir, strerror(errno));
    }
    exec_next(phase);
    return 1;
}
