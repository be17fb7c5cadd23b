/* The pod sandbox ("pause") process of the local cluster's real node: holds the pod's
 * namespaces, sleeps until SIGTERM or SIGINT, and reaps any child that exits (it is PID 1
 * of the pod when the pod shares its process namespace). Built with gcc -static, so the
 * image needs no libraries. */
#include <signal.h>
#include <stddef.h>
#include <sys/wait.h>
#include <unistd.h>

static volatile sig_atomic_t stopping = 0;

static void on_stop(int sig) { (void)sig; stopping = 1; }

static void on_child(int sig) {
  (void)sig;
  while (waitpid(-1, NULL, WNOHANG) > 0) {
  }
}

int main(void) {
  struct sigaction stop = {.sa_handler = on_stop};
  struct sigaction child = {.sa_handler = on_child, .sa_flags = SA_NOCLDSTOP | SA_RESTART};
  sigaction(SIGTERM, &stop, NULL);
  sigaction(SIGINT, &stop, NULL);
  sigaction(SIGCHLD, &child, NULL);
  while (!stopping) {
    pause(); /* returns after each handled signal */
  }
  return 0;
}
