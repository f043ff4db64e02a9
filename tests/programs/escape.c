/* Escape attempts for the sandbox suite (tests/tests/sandbox.rs), built static at test time.
 *   escape race-path N     one thread opens the path in a shared buffer for writing while
 *                          another flips the buffer between /tmp/ok and /etc/raced
 *                          (the race modes stop early once the forbidden file exists, so a
 *                          busy machine that schedules the two threads badly only makes the
 *                          run longer, not the race lost)
 *   escape race-link N     one thread opens /tmp/flip for writing while another flips it
 *                          between a regular file and a symlink to /etc/linked
 *   escape dirfd           openat(open("/etc"), "viadirfd", O_CREAT|O_WRONLY)
 * Prints what it managed; exit status 0. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
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
    fprintf(stderr, "usage: escape race-path|race-link N | dirfd\n");
    return 2;
}
