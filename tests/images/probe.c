/* A tiny static program for tests of the real node (an image with no shell and no libc):
 *   probe write FILE TEXT   writes TEXT to FILE, says so on stdout, then waits like pause
 *                           (exits 0 on SIGTERM/SIGINT): a pod that writes into its volume
 *                           and shows up in `kubectl logs`.
 *   probe cat FILE          prints FILE: what `kubectl exec` runs to read it back.
 *   probe fill FILE MIB     writes MIB MiB of zeros to FILE (fsync'd), says how many it
 *                           wrote; exits 1 with the error (e.g. "No space left on device")
 *                           when the volume is full first. */
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static volatile sig_atomic_t stopping = 0;

static void on_stop(int sig) { (void)sig; stopping = 1; }

static int write_file(const char *path, const char *text) {
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) {
    perror(path);
    return 1;
  }
  size_t len = strlen(text);
  if (write(fd, text, len) != (ssize_t)len || fsync(fd) != 0 || close(fd) != 0) {
    perror(path);
    return 1;
  }
  printf("probe: wrote %zu bytes to %s\n", len, path);
  fflush(stdout);
  struct sigaction stop = {.sa_handler = on_stop};
  sigaction(SIGTERM, &stop, NULL);
  sigaction(SIGINT, &stop, NULL);
  while (!stopping) {
    pause();
  }
  printf("probe: stopping\n");
  return 0;
}

static int cat_file(const char *path) {
  int fd = open(path, O_RDONLY);
  if (fd < 0) {
    perror(path);
    return 1;
  }
  char buf[4096];
  ssize_t n;
  while ((n = read(fd, buf, sizeof buf)) > 0) {
    if (write(1, buf, (size_t)n) != n) return 1;
  }
  close(fd);
  return n < 0;
}

static int fill_file(const char *path, const char *mib) {
  long want = strtol(mib, NULL, 10);
  static char zeros[1 << 20];
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) {
    perror(path);
    return 1;
  }
  long done = 0;
  for (; done < want; done++) {
    size_t off = 0;
    while (off < sizeof zeros) {
      ssize_t n = write(fd, zeros + off, sizeof zeros - off);
      if (n < 0) {
        fprintf(stderr, "probe: after %ld MiB: ", done);
        perror(path);
        close(fd);
        return 1;
      }
      off += (size_t)n;
    }
  }
  if (fsync(fd) != 0 || close(fd) != 0) {
    fprintf(stderr, "probe: after %ld MiB: ", done);
    perror(path);
    return 1;
  }
  printf("probe: filled %ld MiB into %s\n", done, path);
  return 0;
}

int main(int argc, char **argv) {
  if (argc == 4 && strcmp(argv[1], "write") == 0) return write_file(argv[2], argv[3]);
  if (argc == 3 && strcmp(argv[1], "cat") == 0) return cat_file(argv[2]);
  if (argc == 4 && strcmp(argv[1], "fill") == 0) return fill_file(argv[2], argv[3]);
  fprintf(stderr, "usage: probe write FILE TEXT | probe cat FILE | probe fill FILE MIB\n");
  return 2;
}
