/* Syscall cost inside a container: ns per operation, one JSON object on stdout.
 * Built static by the benchmark so that it runs in the busybox rootfs. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static long long now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1000000000LL + t.tv_nsec;
}

#define BENCH(name, n, body)                                    \
  do {                                                          \
    long long t0 = now();                                       \
    for (int i = 0; i < (n); i++) { body; }                     \
    printf("%s\"%s\": %.1f", first ? "" : ", ", name,          \
           (double)(now() - t0) / (n));                         \
    first = 0;                                                  \
  } while (0)

int main(void) {
  int first = 1;
  char c = 'x';
  int p[2];
  struct stat st;
  struct timespec ts;
  if (pipe(p) != 0) return 1;
  printf("{");
  BENCH("getppid", 200000, getppid());
  BENCH("clock_gettime", 200000, clock_gettime(CLOCK_MONOTONIC, &ts));
  BENCH("write+read 1B", 100000, { if (write(p[1], &c, 1) != 1 || read(p[0], &c, 1) != 1) return 1; });
  BENCH("stat", 100000, stat("/bin/busybox", &st));
  BENCH("open+close", 50000, { int fd = open("/bin/busybox", O_RDONLY); if (fd < 0) return 1; close(fd); });
  BENCH("create+close (tmpfs)", 50000, { int fd = open("/dev/shm/sysbench", O_CREAT | O_WRONLY, 0644); if (fd < 0) return 1; close(fd); });
  BENCH("mmap+munmap", 50000, { void *m = mmap(0, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0); munmap(m, 4096); });
  BENCH("fork+wait", 500, { pid_t k = fork(); if (k == 0) _exit(0); waitpid(k, 0, 0); });
  printf("}\n");
  return 0;
}
