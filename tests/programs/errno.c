/* The errno sweep of tests/tests/sandbox.rs: file and socket calls the sandbox's supervisor
 * traps, in the error cases a program meets (missing paths, EEXIST, ENOTDIR, ELOOP, EISDIR,
 * O_EXCL, O_TMPFILE, dirfd-relative paths, AT_EMPTY_PATH, long names, trailing slashes, a
 * read-only mount). One line per case, "NAME ok" or "NAME ERRNO"; the test runs it under
 * native and under the sandbox and compares the lines. Run in a container whose /w is
 * writable and /ro a read-only mount. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

static void report(const char *name, long r)
{
    if (r < 0)
        printf("%s %s\n", name, strerrorname_np(errno));
    else
        printf("%s ok\n", name);
}

static long open_close(const char *path, int flags)
{
    int fd = open(path, flags, 0644);
    if (fd >= 0)
        close(fd);
    return fd;
}

static long unix_op(const char *path, int do_bind)
{
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    int s = socket(AF_UNIX, SOCK_STREAM, 0), r;
    if (s < 0)
        return -1;
    strncpy(a.sun_path, path, sizeof a.sun_path - 1);
    r = do_bind ? bind(s, (struct sockaddr *)&a, sizeof a) : connect(s, (struct sockaddr *)&a, sizeof a);
    int e = errno;
    close(s);
    errno = e;
    return r;
}

int main(void)
{
    char longname[300];
    struct stat st;
    memset(longname, 'n', sizeof longname);
    memcpy(longname, "/w/", 3);
    longname[sizeof longname - 1] = 0;

    mkdir("/w", 0755);
    close(open("/w/f", O_CREAT | O_WRONLY, 0644));
    mkdir("/w/d", 0755);
    symlink("loop2", "/w/loop1");
    symlink("loop1", "/w/loop2");
    symlink("f", "/w/ls");
    symlink("nowhere", "/w/dangling");

    report("open-missing", open_close("/w/nope", O_RDONLY));
    report("open-file", open_close("/w/f", O_RDONLY));
    report("open-through-file", open_close("/w/f/x", O_RDONLY));
    report("open-loop", open_close("/w/loop1", O_RDONLY));
    report("open-excl-existing", open_close("/w/f", O_CREAT | O_EXCL | O_WRONLY));
    report("open-nofollow-symlink", open_close("/w/ls", O_RDONLY | O_NOFOLLOW));
    report("open-dir-for-write", open_close("/w/d", O_WRONLY));
    report("open-file-as-directory", open_close("/w/f", O_RDONLY | O_DIRECTORY));
    report("open-dir-trailing-slash", open_close("/w/d/", O_RDONLY | O_DIRECTORY));
    report("open-file-trailing-slash", open_close("/w/f/", O_RDONLY));
    report("open-creat-trailing-slash", open_close("/w/new/", O_CREAT | O_WRONLY));
    report("open-creat-existing-dir", open_close("/w/d", O_CREAT | O_RDONLY));
    report("open-creat-existing-dir-slash", open_close("/w/d/", O_CREAT | O_RDONLY));
    report("open-creat-through-dangling", open_close("/w/dangling", O_CREAT | O_WRONLY));
    report("stat-created-through-dangling", stat("/w/nowhere", &st));
    report("open-creat-excl-dangling", open_close("/w/ls", O_CREAT | O_EXCL | O_WRONLY));
    report("open-tmpfile", open_close("/w", O_TMPFILE | O_RDWR));
    report("open-tmpfile-on-file", open_close("/w/f", O_TMPFILE | O_RDWR));
    report("open-long-name", open_close(longname, O_RDONLY));
    report("open-empty", open_close("", O_RDONLY));
    report("open-ro-mount-write", open_close("/ro/x", O_CREAT | O_WRONLY));
    report("open-ro-mount-read", open_close("/ro", O_RDONLY | O_DIRECTORY));

    int dir = open("/w", O_RDONLY | O_DIRECTORY);
    int file = open("/w/f", O_RDONLY);
    report("openat-relative", ({ int fd = openat(dir, "f", O_RDONLY); if (fd >= 0) close(fd); fd; }));
    report("openat-relative-missing", ({ int fd = openat(dir, "nope", O_RDONLY); if (fd >= 0) close(fd); fd; }));
    report("openat-file-dirfd", ({ int fd = openat(file, "x", O_RDONLY); if (fd >= 0) close(fd); fd; }));
    report("openat-bad-dirfd", ({ int fd = openat(9999, "x", O_RDONLY); if (fd >= 0) close(fd); fd; }));
    report("fstatat-empty-path", fstatat(file, "", &st, AT_EMPTY_PATH));
    report("fstatat-empty-no-flag", fstatat(file, "", &st, 0));
    report("fstatat-relative", fstatat(dir, "d", &st, 0));
    report("fstatat-nofollow-loop", fstatat(dir, "loop1", &st, AT_SYMLINK_NOFOLLOW));

    report("mkdir-existing", mkdir("/w/d", 0755));
    report("mkdir-root", mkdir("/", 0755));
    report("mkdir-missing-parent", mkdir("/w/nope/x", 0755));
    report("mkdir-under-file", mkdir("/w/f/x", 0755));
    report("mkdir-trailing-slash", mkdir("/w/d2/", 0755));
    report("mkdir-on-symlink", mkdir("/w/ls", 0755));
    report("mkdirat-relative", mkdirat(dir, "d3", 0755));
    report("mkdir-ro-mount", mkdir("/ro/x", 0755));

    report("rmdir-file", rmdir("/w/f"));
    report("rmdir-missing", rmdir("/w/nope"));
    report("rmdir-nonempty", rmdir("/w"));
    report("rmdir-dot", rmdir("/w/d/."));
    report("unlink-dir", unlink("/w/d"));
    report("unlink-missing", unlink("/w/nope"));
    report("unlinkat-removedir-file", unlinkat(dir, "f", AT_REMOVEDIR));

    report("rename-file-over-dir", rename("/w/f", "/w/d"));
    report("rename-dir-over-file", rename("/w/d", "/w/f"));
    report("rename-missing", rename("/w/nope", "/w/x"));
    report("rename-into-itself", rename("/w/d", "/w/d/sub"));
    report("renameat2-noreplace", renameat2(dir, "ls", dir, "f", RENAME_NOREPLACE));

    report("link-file", link("/w/f", "/w/f2"));
    report("link-existing", link("/w/f", "/w/f2"));
    report("link-dir", link("/w/d", "/w/d9"));
    report("symlink-existing", symlink("x", "/w/f"));
    report("symlink-missing-parent", symlink("x", "/w/nope/x"));

    char buf[64];
    report("readlink-file", readlink("/w/f", buf, sizeof buf));
    report("readlink-missing", readlink("/w/nope", buf, sizeof buf));
    report("readlink-symlink", readlink("/w/ls", buf, sizeof buf));

    report("stat-missing", stat("/w/nope", &st));
    report("stat-through-file", stat("/w/f/x", &st));
    report("lstat-symlink", lstat("/w/ls", &st));
    report("stat-loop", stat("/w/loop1", &st));
    report("access-write", access("/w/f", W_OK));
    report("access-missing", access("/w/nope", F_OK));
    report("access-ro-mount-write", access("/ro", W_OK));
    report("chmod-missing", chmod("/w/nope", 0600));
    report("chmod-file", chmod("/w/f", 0600));
    report("chown-missing", chown("/w/nope", 0, 0));
    report("truncate-dir", truncate("/w/d", 0));
    report("truncate-missing", truncate("/w/nope", 0));
    report("utimensat-missing", utimensat(AT_FDCWD, "/w/nope", NULL, 0));
    report("chdir-file", chdir("/w/f"));
    report("chdir-missing", chdir("/w/nope"));

    report("unix-bind-missing-dir", unix_op("/w/nope/sock", 1));
    report("unix-connect-missing", unix_op("/w/nosock", 0));
    report("unix-bind", unix_op("/w/sock", 1));
    report("unix-bind-existing", unix_op("/w/sock", 1));
    report("unix-connect-not-listening", unix_op("/w/sock", 0));
    report("unix-connect-file", unix_op("/w/f", 0));
    return 0;
}
