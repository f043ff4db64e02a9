/* open+close of one path in a loop, on several threads at once: the supervisor's serving
 * threads under load. Usage: openloop PATH THREADS ITERATIONS [HOLD]
 * Prints one line: "<threads> threads: <ns> ns/op" (wall time over all threads' calls).
 * With HOLD, keeps the threads looping until killed (so a test can look at the supervisor
 * while they run) and prints "looping" once they have all started. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static const char *path;
static long iterations;
static int hold;

static long long now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1000000000LL + t.tv_nsec;
}

static void *loop(void *arg) {
  (void)arg;
  for (long i = 0; hold || i < iterations; i++) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
      perror("open");
      exit(1);
    }
    close(fd);
  }
  return NULL;
}

int main(int argc, char **argv) {
  if (argc < 4) {
    fprintf(stderr, "usage: openloop PATH THREADS ITERATIONS [HOLD]\n");
    return 2;
  }
  path = argv[1];
  int threads = atoi(argv[2]);
  iterations = atol(argv[3]);
  hold = argc > 4;
  if (threads < 1 || threads > 64 || iterations < 1) return 2;
  pthread_t t[64];
  long long t0 = now();
  for (int i = 0; i < threads; i++)
    if (pthread_create(&t[i], NULL, loop, NULL) != 0) return 1;
  if (hold) {
    printf("looping\n");
    fflush(stdout);
  }
  for (int i = 0; i < threads; i++) pthread_join(t[i], NULL);
  printf("%d threads: %.0f ns/op\n", threads,
         (double)(now() - t0) / ((double)threads * iterations));
  return 0;
}
