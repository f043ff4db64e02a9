/* What a vm container can do with AF_VSOCK (tests/tests/vm.rs, tests/tests/vm_agent.rs), built
 * static at test time.
 *   vsock socket                     socket(AF_VSOCK, SOCK_STREAM, 0), then the same through
 *                                    syscall(2) with bits above the int set in the family
 *                                    (the kernel reads an int; a filter must compare 32 bits)
 *   vsock agent CID PORT ID VERSION  plays the host to the guest agent: connects to CID:PORT,
 *                                    asks (protocol VERSION) to exec, in container ID, a
 *                                    process with every capability that writes /pwned-exec-CID;
 *                                    then, on a new connection, to create and start a container
 *                                    "pwned-CID" that writes /pwned-create-CID
 *   vsock ready PORT VERSION         plays the agent to the host: connects to host port PORT
 *                                    (the monitor's ready port is 1025) and says it is up
 * Prints one line per step: what happened (an errno name, "answered: <reply>", "no answer
 * (closed)" or "no answer (timeout)"); exit status 0. */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/vm_sockets.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <unistd.h>

static const char *errname(int e) {
    switch (e) {
    case EAFNOSUPPORT: return "EAFNOSUPPORT";
    case ECONNREFUSED: return "ECONNREFUSED";
    case ECONNRESET: return "ECONNRESET";
    case ENODEV: return "ENODEV";
    case ETIMEDOUT: return "ETIMEDOUT";
    case ENETUNREACH: return "ENETUNREACH";
    case EHOSTUNREACH: return "EHOSTUNREACH";
    case EPERM: return "EPERM";
    case EACCES: return "EACCES";
    case EINVAL: return "EINVAL";
    case ENOSYS: return "ENOSYS";
    case EPIPE: return "EPIPE";
    default: {
        static char buf[32];
        snprintf(buf, sizeof buf, "errno %d", e);
        return buf;
    }
    }
}

static void report_socket(const char *what, long fd) {
    if (fd >= 0) {
        printf("%s: ok\n", what);
        close((int)fd);
    } else {
        printf("%s: %s\n", what, errname(errno));
    }
}

static const char *CAPS =
    "[\"CAP_CHOWN\",\"CAP_DAC_OVERRIDE\",\"CAP_DAC_READ_SEARCH\",\"CAP_FOWNER\",\"CAP_FSETID\","
    "\"CAP_KILL\",\"CAP_SETGID\",\"CAP_SETUID\",\"CAP_SETPCAP\",\"CAP_NET_BIND_SERVICE\","
    "\"CAP_NET_ADMIN\",\"CAP_NET_RAW\",\"CAP_SYS_CHROOT\",\"CAP_SYS_PTRACE\",\"CAP_SYS_ADMIN\","
    "\"CAP_SYS_MODULE\",\"CAP_SYS_RAWIO\",\"CAP_MKNOD\",\"CAP_AUDIT_WRITE\",\"CAP_SETFCAP\"]";

/* One length-prefixed frame; 0 on success. */
static int send_frame(int fd, const char *json) {
    size_t len = strlen(json);
    unsigned char hdr[4] = {len >> 24, len >> 16, len >> 8, len};
    if (write(fd, hdr, 4) != 4)
        return -1;
    return write(fd, json, len) == (ssize_t)len ? 0 : -1;
}

/* Prints the reply to one request; 1 if there was one. */
static int print_reply(int fd, const char *step) {
    static char buf[4096];
    size_t got = 0;
    for (;;) {
        ssize_t n = read(fd, buf + got, sizeof buf - 1 - got);
        if (n > 0) {
            got += n;
            if (got >= 4) {
                size_t len = ((size_t)(unsigned char)buf[0] << 24) |
                             ((size_t)(unsigned char)buf[1] << 16) |
                             ((size_t)(unsigned char)buf[2] << 8) | (unsigned char)buf[3];
                if (got >= 4 + len || got == sizeof buf - 1)
                    break;
            }
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (got > 0)
            break;
        if (n == 0)
            printf("%s: no answer (closed)\n", step);
        else if (errno == EAGAIN || errno == EWOULDBLOCK)
            printf("%s: no answer (timeout)\n", step);
        else
            printf("%s: no answer (%s)\n", step, errname(errno));
        return 0;
    }
    buf[got] = 0;
    printf("%s: answered: %s\n", step, got > 4 ? buf + 4 : "(a partial frame)");
    return 1;
}

/* A connection to the agent, or -1 (said why). */
static int dial(unsigned cid, unsigned port, const char *step) {
    int fd = socket(AF_VSOCK, SOCK_STREAM, 0);
    if (fd < 0) {
        printf("%s: socket: %s\n", step, errname(errno));
        return -1;
    }
    struct sockaddr_vm addr = {.svm_family = AF_VSOCK, .svm_cid = cid, .svm_port = port};
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0) {
        printf("%s: connect: %s\n", step, errname(errno));
        close(fd);
        return -1;
    }
    struct timeval tv = {.tv_sec = 3};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    return fd;
}

static void attack(unsigned cid, unsigned port, const char *id, int version) {
    static char json[8192], step[64];
    snprintf(step, sizeof step, "CID %u exec", cid);
    int fd = dial(cid, port, step);
    if (fd >= 0) {
        snprintf(json, sizeof json,
                 "{\"version\":%d,\"body\":{\"type\":\"exec\",\"id\":\"%s\",\"exec_id\":\"pwn-%u\","
                 "\"process\":{\"args\":[\"/bin/sh\",\"-c\",\"echo pwned > /pwned-exec-%u\"],"
                 "\"cwd\":\"/\",\"user\":{\"uid\":0,\"gid\":0},\"env\":[\"PATH=/bin\"],"
                 "\"capabilities\":{\"bounding\":%s,\"effective\":%s,\"permitted\":%s}}}}",
                 version, id, cid, cid, CAPS, CAPS, CAPS);
        if (send_frame(fd, json) != 0)
            printf("%s: send: %s\n", step, errname(errno));
        else
            print_reply(fd, step);
        close(fd);
    }
    snprintf(step, sizeof step, "CID %u create", cid);
    fd = dial(cid, port, step);
    if (fd < 0)
        return;
    snprintf(json, sizeof json,
             "{\"version\":%d,\"body\":{\"type\":\"create\",\"id\":\"pwned-%u\",\"files\":[],"
             "\"spec\":{\"ociVersion\":\"1.0.2\",\"root\":{\"path\":\"rootfs\"},"
             "\"process\":{\"args\":[\"/bin/sh\",\"-c\",\"echo pwned > /pwned-create-%u\"],"
             "\"cwd\":\"/\",\"user\":{\"uid\":0,\"gid\":0},\"env\":[\"PATH=/bin\"]},"
             "\"linux\":{\"namespaces\":[{\"type\":\"mount\"}]}}}}",
             version, cid, cid);
    if (send_frame(fd, json) != 0) {
        printf("%s: send: %s\n", step, errname(errno));
    } else if (print_reply(fd, step)) {
        snprintf(json, sizeof json,
                 "{\"version\":%d,\"body\":{\"type\":\"start\",\"id\":\"pwned-%u\"}}", version, cid);
        snprintf(step, sizeof step, "CID %u start", cid);
        if (send_frame(fd, json) == 0)
            print_reply(fd, step);
    }
    close(fd);
}

static void fake_ready(unsigned port, int version) {
    static char json[128];
    int fd = dial(VMADDR_CID_HOST, port, "ready");
    if (fd < 0)
        return;
    snprintf(json, sizeof json, "{\"version\":%d,\"body\":{\"type\":\"ok\"}}", version);
    if (send_frame(fd, json) != 0)
        printf("ready: send: %s\n", errname(errno));
    else
        printf("ready: sent\n");
    close(fd);
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc == 2 && strcmp(argv[1], "socket") == 0) {
        report_socket("socket", socket(AF_VSOCK, SOCK_STREAM, 0));
        report_socket("socket (high bits)",
                      syscall(SYS_socket, (long)AF_VSOCK | (1L << 32), (long)SOCK_STREAM, 0L));
        return 0;
    }
    if (argc == 6 && strcmp(argv[1], "agent") == 0) {
        attack((unsigned)strtoul(argv[2], NULL, 10), (unsigned)strtoul(argv[3], NULL, 10), argv[4],
               atoi(argv[5]));
        return 0;
    }
    if (argc == 4 && strcmp(argv[1], "ready") == 0) {
        fake_ready((unsigned)strtoul(argv[2], NULL, 10), atoi(argv[3]));
        return 0;
    }
    fprintf(stderr, "usage: vsock socket | vsock agent CID PORT ID VERSION | vsock ready PORT VERSION\n");
    return 2;
}
