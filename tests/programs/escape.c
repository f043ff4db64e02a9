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
 * Prints what it managed (or the error); exit status 0. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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

int main(int argc, char **argv) {
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
    fprintf(stderr, "usage: escape race-path|race-link N | dirfd | dirfd-rename | socket F | "
                    "sendto|sendmsg IP PORT | sendmsg6 IP6 PORT | chmod2 PATH | touch PATH | unix\n");
    return 2;
}
