/* Escape attempts for the sandbox suite (tests/tests/sandbox.rs), built static at test time.
 *   escape race-path N     one thread opens the path in a shared buffer for writing while
 *                          another flips the buffer between /tmp/ok and /etc/raced
 *                          (the race modes stop early once the forbidden file exists, so a
 *                          busy machine that schedules the two threads badly only makes the
 *                          run longer, not the race lost)
 *   escape race-link N     one thread opens /tmp/flip for writing while another flips it
 *                          between a regular file and a symlink to /etc/linked
 *   escape dirfd           openat(open("/etc"), "viadirfd", O_CREAT|O_WRONLY)
 *   escape dirfd-rename    opens /tmp/d, says so by creating /tmp/opened, waits until /etc/d
 *                          exists (the test moves /tmp/d there from outside), then creates
 *                          "planted" through the fd it opened before the move
 *   escape socket FAMILY   socket(FAMILY, SOCK_DGRAM, 0)
 *   escape sendto IP PORT  one UDP datagram to IP:PORT from an unconnected socket
 *   escape sendmsg IP PORT the same with sendmsg(2), the destination in its msghdr
 *   escape sendmsg6 IP6 PORT  the same on an IPv6 socket
 *   escape chmod2 PATH     fchmodat2(AT_FDCWD, PATH, 0777, 0)
 *   escape touch PATH      utimensat(AT_FDCWD, PATH, NULL, 0)
 *   escape unix            ordinary Unix sockets: a stream listener bound at /tmp/s, reached
 *                          by a relative path from /tmp; a datagram sent to /tmp/d by path
 *   escape userns          clone(CLONE_NEWUSER) and clone3 with it; the child (whose every
 *                          capability holds in its own user namespace) makes a block device
 *                          node and a /dev/kmsg node and opens the latter
 *   escape open-dev PATH   open(PATH, O_RDONLY) of a device node
 *   escape memfd-exec      a copy of /bin/busybox in a memfd (flags 0, then MFD_EXEC), made
 *                          executable and run as `sh -c 'echo EXECUTED'`
 *   escape race-exec N KIND  one thread flips a path between /bin/notexec (in the exec set,
 *                          not executable: the supervisor lets it through, the kernel fails
 *                          it) and /proc/self/fd/F of a copy of busybox in a memfd (KIND
 *                          memfd) or an O_TMPFILE file in /tmp (KIND tmpfile); the other
 *                          calls execve on it N times (EXECUTED if the copy ever ran)
 *   escape fd-meta PATH    opens PATH read-only, then fchmod, fchown, futimens, fsetxattr,
 *                          fchmodat2 and fchownat with AT_EMPTY_PATH and chattr +d
 *                          (FS_IOC_SETFLAGS) through the fd
 *   escape tfo IP PORT     TCP fast open: sendto(MSG_FASTOPEN) of a few bytes to IP:PORT;
 *                          tfo-msg the same with sendmsg(2)
 *   escape listen ADDR PORT  a TCP listener on ADDR:PORT (PORT 0 and ADDR "auto": listen(2)
 *                          without bind); prints the port, then each accepted peer for 3 s
 *   escape abstract NAME   connect(2) to the abstract stream socket @NAME, and a datagram by
 *                          sendmsg(2) to the abstract datagram socket @NAME
 *   escape abstract-own NAME  binds and listens on @NAME, then connects to it
 *   escape udp-auto PORT   a datagram to 127.0.0.1:PORT from an unbound socket (which binds
 *                          it to every address), then prints the port and what arrives in 3 s
 *   escape unix-send ADDR [bind]  a Unix datagram to ADDR (a path, or @NAME for an abstract
 *                          name) by sendto(2), then by sendmsg(2); with "bind", from a receiver
 *                          bound at ADDR first, which then says how many arrived
 *   escape setversion PATH opens PATH read-only and sets the inode version (generation)
 *                          through the fd with EXT4_IOC_SETVERSION and FS_IOC_SETVERSION, then
 *                          says whether FS_IOC_GETVERSION reads another one
 *   escape tun NODE NAME   opens NODE (c 10:200) and attaches the tun device NAME to it, says
 *                          whether its own network namespace has NAME, and holds the device
 *                          until /tmp/release exists
 *   escape peercred-serve PATH  a Unix stream listener at PATH and a datagram socket at
 *                          PATH.dg (both mode 0777); prints the SO_PEERCRED of the first peer
 *                          and the SCM_CREDENTIALS of the first datagram
 *   escape peercred-connect PATH  connects to PATH and sends a datagram to PATH.dg
 *   escape pty c|q|h       opens a pty's slave without O_NOCTTY (whoever opens it may take it
 *                          as its controlling terminal), then types ^C (c) or ^\ (q) on the
 *                          master, or closes the master (h: a hang-up)
 *   escape fifo-leak PATH N  N opens of the FIFO PATH, which has no writer, each cut short by
 *                          SIGALRM after 3 ms
 *   escape unix-backlog PATH N  a Unix stream listener at PATH with a backlog of 0, and N
 *                          children connecting to it (all but the first wait); never returns
 *   escape lease PATH      takes a read lease on PATH, never gives it up, and has a child open
 *                          PATH for writing (which waits for the lease); never returns
 *   escape mem PID         reads 16 bytes of /proc/PID/mem at the first mapping of its maps
 *   escape self-exec       re-executes itself through /proc/self/exe
 *   escape tty             opens /dev/tty without a controlling terminal, then in a new
 *                          session with a pty as its terminal, and says which device it got
 *   escape umask-race DIR N  a child with umask 000 creates files in DIR from two threads
 *                          (so the supervisor serves on two threads), while this process,
 *                          umask 077, creates N files there; LEAKED if one of its files was
 *                          made with another caller's umask, else HELD
 * Prints what it managed (or the error); exit status 0. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <poll.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/sysmacros.h>
#include <sys/un.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/ioctl.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <sys/time.h>

static char path[64] = "/tmp/ok";
static volatile int stop;
static volatile int flipping;

static void *flip_path(void *arg) {
    (void)arg;
    flipping = 1;
    while (!stop) {
        /* The barriers keep the compiler from dropping the first, overwritten store. */
        memcpy(path, "/etc/raced", 11);
        __asm__ __volatile__("" ::: "memory");
        memcpy(path, "/tmp/ok\0\0\0", 11);
        __asm__ __volatile__("" ::: "memory");
    }
    return NULL;
}

static void *flip_link(void *arg) {
    (void)arg;
    flipping = 1;
    while (!stop) {
        unlink("/tmp/flip");
        symlink("/etc/linked", "/tmp/flip");
        unlink("/tmp/flip");
        close(open("/tmp/flip", O_CREAT | O_WRONLY, 0644));
    }
    return NULL;
}

/* One datagram to `to` by sendmsg(2), the destination in the msghdr. */
static int send_msg(int family, void *to, socklen_t len) {
    int fd = socket(family, SOCK_DGRAM, 0);
    struct iovec io = {.iov_base = "x", .iov_len = 1};
    struct msghdr m = {.msg_name = to, .msg_namelen = len, .msg_iov = &io, .msg_iovlen = 1};
    long n = fd < 0 ? -1 : sendmsg(fd, &m, 0);
    printf("%s\n", n == 1 ? "sent" : strerror(errno));
    return 0;
}

extern char **environ;

/* What the userns child tries: both would need capabilities of the init user namespace. */
static void in_new_userns(const char *how) {
    int m = mknod("/tmp/sda", S_IFBLK | 0600, makedev(8, 0));
    int k = mknod("/tmp/kmsg", S_IFCHR | 0600, makedev(1, 11));
    int o = open("/tmp/kmsg", O_RDONLY | O_NONBLOCK);
    printf("%s child: block node %s, kmsg node %s, kmsg %s\n", how, m == 0 ? "made" : "refused",
           k == 0 ? "made" : "refused", o >= 0 ? "opened" : "refused");
    fflush(stdout);
    _exit(0);
}

/* A copy of /bin/busybox in `fd`. */
static int copy_busybox(int fd) {
    int in = open("/bin/busybox", O_RDONLY);
    char buf[65536];
    long n;
    if (in < 0) return -1;
    while ((n = read(in, buf, sizeof buf)) > 0)
        if (write(fd, buf, n) != n) return -1;
    close(in);
    return 0;
}

static char race_path[64] = "/bin/notexec";
static char race_target[64];

static void *flip_exec(void *arg) {
    (void)arg;
    flipping = 1;
    while (!stop) {
        memcpy(race_path, race_target, sizeof race_path);
        __asm__ __volatile__("" ::: "memory");
        memcpy(race_path, "/bin/notexec\0", 14);
        __asm__ __volatile__("" ::: "memory");
    }
    return NULL;
}

/* chattr +d through the fd: FS_IOC_GETFLAGS, then FS_IOC_SETFLAGS with FS_NODUMP_FL, the
 * request's high bits set (the kernel reads 32). */
static int setflags_nodump(int fd) {
    long flags = 0;
    if (ioctl(fd, 0x80086601 /* FS_IOC_GETFLAGS */, &flags)) return -1;
    flags |= 0x40; /* FS_NODUMP_FL */
    return syscall(SYS_ioctl, fd, 0xffffffff40086602UL /* FS_IOC_SETFLAGS */, &flags) ? -1 : 0;
}

static int wait_readable(int fd, int ms) {
    struct pollfd p = {.fd = fd, .events = POLLIN};
    return poll(&p, 1, ms) == 1;
}

/* A sockaddr_un for ADDR: a path, or @NAME for the abstract NAME; returns its length. */
static socklen_t unix_addr(struct sockaddr_un *a, const char *addr) {
    size_t n = strlen(addr);
    memset(a, 0, sizeof *a);
    a->sun_family = AF_UNIX;
    if (n > sizeof a->sun_path - 1) n = sizeof a->sun_path - 1;
    memcpy(a->sun_path, addr, n);
    if (addr[0] == '@') {
        a->sun_path[0] = 0;
        return offsetof(struct sockaddr_un, sun_path) + n;
    }
    return offsetof(struct sockaddr_un, sun_path) + n + 1;
}

static void on_alarm(int sig) { (void)sig; }

/* A pty master, unlocked; its slave's path in `slave`. */
static int open_pty(char *slave, size_t len) {
    int m = open("/dev/ptmx", O_RDWR | O_NOCTTY);
    int n = -1, unlock = 0;
    if (m < 0 || ioctl(m, TIOCSPTLCK, &unlock) || ioctl(m, TIOCGPTN, &n)) return -1;
    snprintf(slave, len, "/dev/pts/%d", n);
    return m;
}

static const char *race_dir;

static void *create_loop(void *arg) {
    char p[256];
    for (long i = 0;; i++) {
        snprintf(p, sizeof p, "%s/b-%ld-%ld", race_dir, (long)arg, i % 64);
        int fd = open(p, O_CREAT | O_WRONLY, 0666);
        if (fd >= 0) close(fd);
    }
    return NULL;
}

static int umask_race(const char *dir, int n) {
    race_dir = dir;
    pid_t child = fork();
    if (child == 0) {
        umask(0);
        pthread_t t;
        pthread_create(&t, NULL, create_loop, (void *)1L);
        create_loop((void *)2L);
        _exit(0);
    }
    umask(077);
    usleep(100000);
    char p[256];
    int leaked = 0;
    for (int i = 0; i < n && !leaked; i++) {
        snprintf(p, sizeof p, "%s/a-%d", dir, i);
        int fd = open(p, O_CREAT | O_EXCL | O_WRONLY, 0666);
        if (fd < 0) { perror("open"); break; }
        struct stat st;
        if (fstat(fd, &st) == 0 && (st.st_mode & 077)) leaked = 1;
        close(fd);
        unlink(p);
    }
    kill(child, SIGKILL);
    waitpid(child, NULL, 0);
    printf("%s\n", leaked ? "LEAKED" : "HELD");
    return 0;
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc >= 4 && strcmp(argv[1], "umask-race") == 0)
        return umask_race(argv[2], atoi(argv[3]));
    if (argc >= 2 && strcmp(argv[1], "userns") == 0) {
        fflush(stdout);
        long r = syscall(SYS_clone, CLONE_NEWUSER | SIGCHLD, 0, 0, 0, 0);
        if (r == 0) in_new_userns("clone");
        if (r < 0) printf("clone: %s\n", strerror(errno)); else waitpid(r, NULL, 0);
        struct { unsigned long long flags, pidfd, child_tid, parent_tid, exit_signal, stack,
                 stack_size, tls; } ca = {.flags = CLONE_NEWUSER, .exit_signal = SIGCHLD};
        fflush(stdout);
        r = syscall(435 /* clone3 */, &ca, sizeof ca);
        if (r == 0) in_new_userns("clone3");
        if (r < 0) printf("clone3: %s\n", strerror(errno)); else waitpid(r, NULL, 0);
        return 0;
    }
    if (argc >= 3 && strcmp(argv[1], "open-dev") == 0) {
        int fd = open(argv[2], O_RDONLY | O_NONBLOCK);
        printf("%s\n", fd >= 0 ? "opened" : strerror(errno));
        return 0;
    }
    if (argc >= 2 && strcmp(argv[1], "memfd-exec") == 0) {
        char *av[] = {"sh", "-c", "echo EXECUTED", NULL};
        int fd = syscall(SYS_memfd_create, "x", 0x10 /* MFD_EXEC */);
        printf("memfd MFD_EXEC: %s\n", fd >= 0 ? "made" : strerror(errno));
        if (fd >= 0) close(fd);
        fd = syscall(SYS_memfd_create, "x", 0);
        if (fd < 0 || copy_busybox(fd)) { printf("memfd: %s\n", strerror(errno)); return 0; }
        printf("fchmod: %s\n", fchmod(fd, 0755) == 0 ? "changed" : strerror(errno));
        syscall(SYS_execveat, fd, "", av, environ, AT_EMPTY_PATH);
        printf("execveat: %s\n", strerror(errno));
        char p[64];
        snprintf(p, sizeof p, "/proc/self/fd/%d", fd);
        execve(p, av, environ);
        printf("execve: %s\n", strerror(errno));
        return 0;
    }
    if (argc >= 4 && strcmp(argv[1], "race-exec") == 0) {
        int n = atoi(argv[2]);
        int fd = strcmp(argv[3], "memfd") == 0 ? syscall(SYS_memfd_create, "x", 0)
                                                : open("/tmp", O_TMPFILE | O_RDWR, 0755);
        if (fd < 0 || copy_busybox(fd)) { printf("%s: %s\n", argv[3], strerror(errno)); return 0; }
        fchmod(fd, 0755);
        if (strcmp(argv[3], "tmpfile") == 0) {
            /* A file open for writing cannot be executed (ETXTBSY): reopen it read-only, by
             * /proc/self/fd or else by a name linked in /tmp, and drop the writer. */
            char p[64];
            snprintf(p, sizeof p, "/proc/self/fd/%d", fd);
            int ro = open(p, O_RDONLY);
            if (ro < 0 && linkat(fd, "", AT_FDCWD, "/tmp/tcopy", AT_EMPTY_PATH) == 0)
                ro = open("/tmp/tcopy", O_RDONLY);
            if (ro < 0) { printf("reopen: %s\n", strerror(errno)); return 0; }
            close(fd);
            fd = ro;
        }
        snprintf(race_target, sizeof race_target, "/proc/self/fd/%d", fd);
        char *av[] = {"sh", "-c", "echo EXECUTED", NULL};
        pthread_t t;
        pthread_create(&t, NULL, flip_exec, NULL);
        while (!flipping)
            sched_yield();
        for (int i = 0; i < n; i++)
            execve(race_path, av, environ);
        stop = 1;
        pthread_join(t, NULL);
        printf("not executed in %d tries\n", n);
        return 0;
    }
    if (argc >= 3 && strcmp(argv[1], "fd-meta") == 0) {
        int fd = open(argv[2], O_RDONLY);
        if (fd < 0) { printf("open: %s\n", strerror(errno)); return 0; }
        struct { const char *what; int r; } tries[] = {
            {"fchmod", fchmod(fd, 0777)},
            {"fchown", fchown(fd, 1, 1)},
            {"futimens", futimens(fd, NULL)},
            {"fsetxattr", fsetxattr(fd, "user.strata", "x", 1, 0)},
            {"fchmodat2", (int)syscall(452, fd, "", 0777, AT_EMPTY_PATH)},
            {"fchownat", fchownat(fd, "", 2, 2, AT_EMPTY_PATH)},
            {"setflags", setflags_nodump(fd)},
        };
        for (unsigned i = 0; i < sizeof tries / sizeof tries[0]; i++)
            printf("%s: %s\n", tries[i].what, tries[i].r == 0 ? "changed" : "refused");
        return 0;
    }
    if (argc >= 4 && (strcmp(argv[1], "tfo") == 0 || strcmp(argv[1], "tfo-msg") == 0)) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[3]))};
        inet_pton(AF_INET, argv[2], &to.sin_addr);
        long n;
        if (strcmp(argv[1], "tfo") == 0) {
            n = sendto(fd, "hello", 5, MSG_FASTOPEN, (struct sockaddr *)&to, sizeof to);
        } else {
            struct iovec io = {.iov_base = "hello", .iov_len = 5};
            struct msghdr m = {.msg_name = &to, .msg_namelen = sizeof to, .msg_iov = &io,
                               .msg_iovlen = 1};
            n = sendmsg(fd, &m, MSG_FASTOPEN);
        }
        printf("%s\n", n >= 0 ? "sent" : strerror(errno));
        if (n >= 0) sleep(1);
        return 0;
    }
    if (argc >= 4 && strcmp(argv[1], "listen") == 0) {
        int l = socket(AF_INET, SOCK_STREAM, 0), one = 1;
        setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (strcmp(argv[2], "auto") != 0) {
            struct sockaddr_in at = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[3]))};
            inet_pton(AF_INET, argv[2], &at.sin_addr);
            if (bind(l, (struct sockaddr *)&at, sizeof at)) {
                printf("bind: %s\n", strerror(errno));
                return 0;
            }
        }
        if (listen(l, 8)) { printf("listen: %s\n", strerror(errno)); return 0; }
        struct sockaddr_in me;
        socklen_t len = sizeof me;
        getsockname(l, (struct sockaddr *)&me, &len);
        printf("port %d\n", ntohs(me.sin_port));
        while (wait_readable(l, 3000)) {
            struct sockaddr_in from;
            len = sizeof from;
            int c = accept(l, (struct sockaddr *)&from, &len);
            char a[32];
            inet_ntop(AF_INET, &from.sin_addr, a, sizeof a);
            printf("accepted %s\n", c >= 0 ? a : strerror(errno));
            if (c >= 0) close(c);
        }
        printf("done\n");
        return 0;
    }
    if (argc >= 3 && (strcmp(argv[1], "abstract") == 0 || strcmp(argv[1], "abstract-own") == 0)) {
        struct sockaddr_un at = {.sun_family = AF_UNIX};
        size_t n = strlen(argv[2]);
        if (n > sizeof at.sun_path - 1) return 2;
        memcpy(at.sun_path + 1, argv[2], n); /* sun_path[0] = 0: abstract */
        socklen_t len = offsetof(struct sockaddr_un, sun_path) + 1 + n;
        if (strcmp(argv[1], "abstract-own") == 0) {
            int l = socket(AF_UNIX, SOCK_STREAM, 0);
            if (bind(l, (struct sockaddr *)&at, len) || listen(l, 1)) {
                printf("bind: %s\n", strerror(errno));
                return 0;
            }
        }
        int c = socket(AF_UNIX, SOCK_STREAM, 0);
        printf("%s\n", connect(c, (struct sockaddr *)&at, len) == 0 ? "connected" : strerror(errno));
        struct sockaddr_un d = {.sun_family = AF_UNIX};
        memcpy(d.sun_path + 1, argv[2], n);
        int g = socket(AF_UNIX, SOCK_DGRAM, 0);
        struct iovec io = {.iov_base = "x", .iov_len = 1};
        struct msghdr m = {.msg_name = &d, .msg_namelen = len, .msg_iov = &io, .msg_iovlen = 1};
        if (strcmp(argv[1], "abstract") == 0)
            printf("sendmsg: %s\n", sendmsg(g, &m, 0) == 1 ? "sent" : strerror(errno));
        return 0;
    }
    if (argc >= 3 && strcmp(argv[1], "udp-auto") == 0) {
        int fd = socket(AF_INET, SOCK_DGRAM, 0);
        struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[2]))};
        inet_pton(AF_INET, "127.0.0.1", &to.sin_addr);
        if (sendto(fd, "x", 1, 0, (struct sockaddr *)&to, sizeof to) != 1) {
            printf("sendto: %s\n", strerror(errno));
            return 0;
        }
        struct sockaddr_in me;
        socklen_t len = sizeof me;
        getsockname(fd, (struct sockaddr *)&me, &len);
        printf("port %d\n", ntohs(me.sin_port));
        char b[16];
        while (wait_readable(fd, 3000)) {
            struct sockaddr_in from;
            len = sizeof from;
            if (recvfrom(fd, b, sizeof b, 0, (struct sockaddr *)&from, &len) < 0) break;
            char a[32];
            inet_ntop(AF_INET, &from.sin_addr, a, sizeof a);
            printf("received from %s\n", a);
        }
        printf("done\n");
        return 0;
    }
    if (argc >= 3 && (strcmp(argv[1], "race-path") == 0 || strcmp(argv[1], "race-link") == 0)) {
        int n = atoi(argv[2]);
        int link = strcmp(argv[1], "race-link") == 0;
        pthread_t t;
        const char *victim = link ? "/etc/linked" : "/etc/raced";
        pthread_create(&t, NULL, link ? flip_link : flip_path, NULL);
        while (!flipping)
            sched_yield();
        int opened = 0;
        for (int i = 0; i < n; i++) {
            int fd = link ? open("/tmp/flip", O_WRONLY | O_CREAT, 0644)
                          : open(path, O_WRONLY | O_CREAT, 0644);
            if (fd >= 0) {
                opened++;
                write(fd, "x", 1);
                close(fd);
            }
            if (access(victim, F_OK) == 0)
                break;
        }
        stop = 1;
        pthread_join(t, NULL);
        printf("opened %d\n", opened);
        return 0;
    }
    if (argc >= 2 && strcmp(argv[1], "dirfd") == 0) {
        int dir = open("/etc", O_RDONLY | O_DIRECTORY);
        int fd = openat(dir, "viadirfd", O_CREAT | O_WRONLY, 0644);
        printf("%s\n", fd >= 0 ? "created" : "refused");
        return 0;
    }
    if (argc >= 2 && strcmp(argv[1], "dirfd-rename") == 0) {
        int dir = open("/tmp/d", O_RDONLY | O_DIRECTORY);
        if (dir < 0) { printf("no /tmp/d: %s\n", strerror(errno)); return 0; }
        close(open("/tmp/opened", O_CREAT | O_WRONLY, 0644));
        for (int i = 0; i < 1000 && access("/etc/d", F_OK) != 0; i++)
            usleep(10000);
        int fd = openat(dir, "planted", O_CREAT | O_WRONLY, 0644);
        printf("%s\n", fd >= 0 ? "created" : "refused");
        return 0;
    }
    if (argc >= 3 && strcmp(argv[1], "socket") == 0) {
        int fd = socket(atoi(argv[2]), SOCK_DGRAM, 0);
        printf("%s\n", fd >= 0 ? "made" : strerror(errno));
        return 0;
    }
    if (argc >= 4 && strcmp(argv[1], "sendto") == 0) {
        int fd = socket(AF_INET, SOCK_DGRAM, 0);
        struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[3]))};
        inet_pton(AF_INET, argv[2], &to.sin_addr);
        long n = fd < 0 ? -1 : sendto(fd, "x", 1, 0, (struct sockaddr *)&to, sizeof to);
        printf("%s\n", n == 1 ? "sent" : strerror(errno));
        return 0;
    }
    if (argc >= 4 && strcmp(argv[1], "sendmsg") == 0) {
        struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[3]))};
        inet_pton(AF_INET, argv[2], &to.sin_addr);
        return send_msg(AF_INET, &to, sizeof to);
    }
    if (argc >= 4 && strcmp(argv[1], "sendmsg6") == 0) {
        struct sockaddr_in6 to = {.sin6_family = AF_INET6, .sin6_port = htons(atoi(argv[3]))};
        inet_pton(AF_INET6, argv[2], &to.sin6_addr);
        return send_msg(AF_INET6, &to, sizeof to);
    }
    if (argc >= 3 && strcmp(argv[1], "chmod2") == 0) {
        long r = syscall(452 /* fchmodat2 */, AT_FDCWD, argv[2], 0777, 0);
        printf("%s\n", r == 0 ? "changed" : strerror(errno));
        return 0;
    }
    if (argc >= 3 && strcmp(argv[1], "touch") == 0) {
        int r = utimensat(AT_FDCWD, argv[2], NULL, 0);
        printf("%s\n", r == 0 ? "changed" : strerror(errno));
        return 0;
    }
    if (argc >= 2 && strcmp(argv[1], "unix") == 0) {
        struct sockaddr_un at = {.sun_family = AF_UNIX};
        strcpy(at.sun_path, "/tmp/s");
        int l = socket(AF_UNIX, SOCK_STREAM, 0);
        if (bind(l, (struct sockaddr *)&at, sizeof at) || listen(l, 1)) {
            printf("bind: %s\n", strerror(errno));
            return 0;
        }
        if (chdir("/tmp")) return 1;
        struct sockaddr_un rel = {.sun_family = AF_UNIX};
        strcpy(rel.sun_path, "s");
        int c = socket(AF_UNIX, SOCK_STREAM, 0);
        if (connect(c, (struct sockaddr *)&rel, sizeof rel)) {
            printf("connect: %s\n", strerror(errno));
            return 0;
        }
        char b = 0;
        int a = accept(l, NULL, NULL);
        if (write(c, "y", 1) != 1 || read(a, &b, 1) != 1 || b != 'y') {
            printf("stream: %s\n", strerror(errno));
            return 0;
        }
        struct sockaddr_un d = {.sun_family = AF_UNIX};
        strcpy(d.sun_path, "/tmp/d");
        int r = socket(AF_UNIX, SOCK_DGRAM, 0), w = socket(AF_UNIX, SOCK_DGRAM, 0);
        if (bind(r, (struct sockaddr *)&d, sizeof d) ||
            sendto(w, "z", 1, 0, (struct sockaddr *)&d, sizeof d) != 1 || read(r, &b, 1) != 1 ||
            b != 'z') {
            printf("datagram: %s\n", strerror(errno));
            return 0;
        }
        printf("unix ok\n");
        return 0;
    }
    if (argc >= 3 && strcmp(argv[1], "unix-send") == 0) {
        struct sockaddr_un a;
        socklen_t len = unix_addr(&a, argv[2]);
        int r = -1, s = socket(AF_UNIX, SOCK_DGRAM, 0);
        if (argc >= 4 && strcmp(argv[3], "bind") == 0) {
            r = socket(AF_UNIX, SOCK_DGRAM, 0);
            if (bind(r, (struct sockaddr *)&a, len)) { printf("bind: %s\n", strerror(errno)); return 0; }
        }
        long n = sendto(s, "t", 1, MSG_DONTWAIT, (struct sockaddr *)&a, len);
        printf("sendto: %s\n", n == 1 ? "sent" : strerror(errno));
        struct iovec io = {.iov_base = "m", .iov_len = 1};
        struct msghdr m = {.msg_name = &a, .msg_namelen = len, .msg_iov = &io, .msg_iovlen = 1};
        n = sendmsg(s, &m, MSG_DONTWAIT);
        printf("sendmsg: %s\n", n == 1 ? "sent" : strerror(errno));
        if (r >= 0) {
            char b[4];
            int got = 0;
            while (recv(r, b, sizeof b, MSG_DONTWAIT) > 0) got++;
            printf("received %d\n", got);
        }
        return 0;
    }
    if (argc >= 3 && strcmp(argv[1], "setversion") == 0) {
        int fd = open(argv[2], O_RDONLY);
        long before = 0, after = 0;
        if (fd < 0 || ioctl(fd, 0x80087601 /* FS_IOC_GETVERSION */, &before)) {
            printf("getversion: %s\n", strerror(errno));
            return 0;
        }
        struct { const char *name; unsigned long cmd; } sets[] = {
            {"EXT4_IOC_SETVERSION", 0x40086604}, {"FS_IOC_SETVERSION", 0x40087602}};
        for (unsigned i = 0; i < sizeof sets / sizeof sets[0]; i++) {
            long v = before + 1 + i;
            int r = ioctl(fd, sets[i].cmd, &v);
            printf("%s: %s\n", sets[i].name, r == 0 ? "changed" : strerror(errno));
        }
        ioctl(fd, 0x80087601, &after);
        printf("version %s\n", after == before ? "unchanged" : "changed");
        return 0;
    }
    if (argc >= 4 && strcmp(argv[1], "tun") == 0) {
        int fd = open(argv[2], O_RDWR);
        if (fd < 0) { printf("open: %s\n", strerror(errno)); return 0; }
        struct ifreq ifr;
        memset(&ifr, 0, sizeof ifr);
        strncpy(ifr.ifr_name, argv[3], IFNAMSIZ - 1);
        ifr.ifr_flags = IFF_TUN | IFF_NO_PI;
        if (ioctl(fd, TUNSETIFF, &ifr)) { printf("TUNSETIFF: %s\n", strerror(errno)); return 0; }
        printf("attached\n");
        printf("in its own network: %s\n", if_nametoindex(argv[3]) ? "yes" : "no");
        for (int i = 0; i < 1000 && access("/tmp/release", F_OK) != 0; i++)
            usleep(10000);
        return 0;
    }
    if (argc >= 3 && strcmp(argv[1], "peercred-serve") == 0) {
        struct sockaddr_un a, d;
        char dg[128];
        snprintf(dg, sizeof dg, "%s.dg", argv[2]);
        socklen_t la = unix_addr(&a, argv[2]), ld = unix_addr(&d, dg);
        int l = socket(AF_UNIX, SOCK_STREAM, 0), g = socket(AF_UNIX, SOCK_DGRAM, 0), one = 1;
        if (bind(l, (struct sockaddr *)&a, la) || listen(l, 1) || bind(g, (struct sockaddr *)&d, ld) ||
            chmod(argv[2], 0777) || chmod(dg, 0777) ||
            setsockopt(g, SOL_SOCKET, SO_PASSCRED, &one, sizeof one)) {
            printf("serve: %s\n", strerror(errno));
            return 0;
        }
        printf("ready\n");
        struct ucred u;
        socklen_t len = sizeof u;
        int c = wait_readable(l, 10000) ? accept(l, NULL, NULL) : -1;
        if (c < 0 || getsockopt(c, SOL_SOCKET, SO_PEERCRED, &u, &len)) {
            printf("no peer: %s\n", strerror(errno));
            return 0;
        }
        printf("stream peer uid %d gid %d\n", (int)u.uid, (int)u.gid);
        char b[8], cbuf[CMSG_SPACE(sizeof(struct ucred))];
        struct iovec io = {.iov_base = b, .iov_len = sizeof b};
        struct msghdr m = {.msg_iov = &io, .msg_iovlen = 1, .msg_control = cbuf,
                           .msg_controllen = sizeof cbuf};
        if (!wait_readable(g, 10000) || recvmsg(g, &m, 0) < 0) {
            printf("no datagram: %s\n", strerror(errno));
            return 0;
        }
        struct cmsghdr *cm = CMSG_FIRSTHDR(&m);
        if (!cm || cm->cmsg_type != SCM_CREDENTIALS) { printf("no credentials\n"); return 0; }
        memcpy(&u, CMSG_DATA(cm), sizeof u);
        printf("datagram sender uid %d gid %d\n", (int)u.uid, (int)u.gid);
        return 0;
    }
    if (argc >= 3 && strcmp(argv[1], "peercred-connect") == 0) {
        struct sockaddr_un a, d;
        char dg[128];
        snprintf(dg, sizeof dg, "%s.dg", argv[2]);
        socklen_t la = unix_addr(&a, argv[2]), ld = unix_addr(&d, dg);
        int s = socket(AF_UNIX, SOCK_STREAM, 0), g = socket(AF_UNIX, SOCK_DGRAM, 0);
        printf("%s\n", connect(s, (struct sockaddr *)&a, la) == 0 ? "connected" : strerror(errno));
        long n = sendto(g, "x", 1, 0, (struct sockaddr *)&d, ld);
        printf("%s\n", n == 1 ? "sent" : strerror(errno));
        return 0;
    }
    if (argc >= 3 && strcmp(argv[1], "pty") == 0) {
        char slave[64];
        int m = open_pty(slave, sizeof slave);
        if (m < 0) { printf("ptmx: %s\n", strerror(errno)); return 0; }
        int s = open(slave, O_RDWR);
        if (s < 0) { printf("%s: %s\n", slave, strerror(errno)); return 0; }
        if (argv[2][0] == 'h') {
            close(m);
        } else {
            char c = argv[2][0] == 'c' ? 3 : 28;
            if (write(m, &c, 1) != 1) { printf("write: %s\n", strerror(errno)); return 0; }
        }
        usleep(200000);
        printf("typed %s\n", argv[2]);
        return 0;
    }
    if (argc >= 4 && strcmp(argv[1], "fifo-leak") == 0) {
        struct sigaction sa = {.sa_handler = on_alarm}; /* no SA_RESTART: the open fails */
        sigaction(SIGALRM, &sa, NULL);
        int n = atoi(argv[3]), cut = 0;
        for (int i = 0; i < n; i++) {
            struct itimerval t = {.it_value = {.tv_usec = 3000}};
            setitimer(ITIMER_REAL, &t, NULL);
            int fd = open(argv[2], O_RDONLY);
            if (fd >= 0) close(fd);
            else if (errno == EINTR || errno == EAGAIN) cut++;
        }
        printf("cut short %d of %d\n", cut, n);
        return 0;
    }
    if (argc >= 4 && strcmp(argv[1], "unix-backlog") == 0) {
        struct sockaddr_un a;
        socklen_t len = unix_addr(&a, argv[2]);
        int l = socket(AF_UNIX, SOCK_STREAM, 0);
        if (bind(l, (struct sockaddr *)&a, len) || listen(l, 0)) {
            printf("listen: %s\n", strerror(errno));
            return 0;
        }
        for (int i = 0; i < atoi(argv[3]); i++) {
            if (fork() == 0) {
                int s = socket(AF_UNIX, SOCK_STREAM, 0);
                connect(s, (struct sockaddr *)&a, len);
                pause();
                _exit(0);
            }
        }
        usleep(300000);
        printf("connecting\n");
        for (;;) pause();
    }
    if (argc >= 3 && strcmp(argv[1], "lease") == 0) {
        int fd = open(argv[2], O_RDONLY);
        signal(SIGIO, SIG_IGN); /* told to give the lease up, it never does */
        if (fd < 0 || fcntl(fd, F_SETLEASE, F_RDLCK)) { printf("lease: %s\n", strerror(errno)); return 0; }
        if (fork() == 0) {
            open(argv[2], O_WRONLY);
            _exit(0);
        }
        usleep(300000);
        printf("opening\n");
        for (;;) pause();
    }
    if (argc >= 3 && strcmp(argv[1], "mem") == 0) {
        char p[64], line[256];
        unsigned long lo = 0;
        snprintf(p, sizeof p, "/proc/%s/maps", argv[2]);
        FILE *f = fopen(p, "r");
        if (!f || !fgets(line, sizeof line, f) || sscanf(line, "%lx-", &lo) != 1) {
            printf("maps: %s\n", strerror(errno));
            return 0;
        }
        snprintf(p, sizeof p, "/proc/%s/mem", argv[2]);
        int fd = open(p, O_RDONLY);
        if (fd < 0) { printf("open: %s\n", strerror(errno)); return 0; }
        char b[16];
        printf("%s\n", pread(fd, b, sizeof b, lo) == sizeof b ? "read" : strerror(errno));
        return 0;
    }
    if (argc >= 2 && strcmp(argv[1], "self-exec") == 0) {
        if (argc >= 3) { printf("re-executed\n"); return 0; }
        char *av[] = {"escape", "self-exec", "again", NULL};
        execv("/proc/self/exe", av);
        printf("execv: %s\n", strerror(errno));
        return 0;
    }
    if (argc >= 2 && strcmp(argv[1], "tty") == 0) {
        int fd = open("/dev/tty", O_RDWR);
        printf("without a terminal: %s\n", fd >= 0 ? "opened" : strerror(errno));
        if (fd >= 0) close(fd);
        char slave[64];
        int m = open_pty(slave, sizeof slave);
        if (m < 0) { printf("ptmx: %s\n", strerror(errno)); return 0; }
        fflush(stdout);
        pid_t child = fork();
        if (child == 0) {
            /* A session of its own, the pty as its terminal. */
            int s = setsid() < 0 ? -1 : open(slave, O_RDWR | O_NOCTTY);
            if (s < 0 || ioctl(s, TIOCSCTTY, 0)) { printf("terminal: %s\n", strerror(errno)); _exit(0); }
            /* What is written to /dev/tty must come out of this pty's master. */
            int t = open("/dev/tty", O_RDWR);
            char b[4] = {0};
            if (t < 0) printf("with a terminal: %s\n", strerror(errno));
            else if (write(t, "ok", 2) != 2 || !wait_readable(m, 2000) || read(m, b, 2) != 2 ||
                     memcmp(b, "ok", 2) != 0)
                printf("with a terminal: another one\n");
            else printf("with a terminal: its pty\n");
            _exit(0);
        }
        waitpid(child, NULL, 0);
        return 0;
    }
    fprintf(stderr, "usage: escape race-path|race-link N | dirfd | dirfd-rename | socket F | "
                    "sendto|sendmsg IP PORT | sendmsg6 IP6 PORT | chmod2 PATH | touch PATH | unix"
                    " | userns | open-dev PATH | memfd-exec | race-exec N memfd|tmpfile | "
                    "fd-meta PATH | tfo|tfo-msg IP PORT | listen ADDR PORT | udp-auto PORT | "
                    "unix-send ADDR [bind] | setversion PATH | tun NODE NAME | "
                    "peercred-serve|peercred-connect PATH | pty c|q|h | fifo-leak PATH N | "
                    "unix-backlog PATH N | lease PATH | mem PID | self-exec | tty\n");
    return 2;
}
