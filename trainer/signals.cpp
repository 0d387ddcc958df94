// Async-signal-safe handlers: they only touch lock-free atomics and _exit.
#include "trainer/signals.h"

#include <fmt/format.h>
#include <unistd.h>

#include <atomic>
#include <csignal>

namespace s6::trainer {

namespace {
std::atomic<int> g_stop_signal{0};

void on_signal(int sig) {
  if (sig == SIGINT && g_stop_signal.load() == SIGINT) _exit(128 + SIGINT);  // second Ctrl-C
  g_stop_signal.store(sig);
}
}  // namespace

void install_stop_handlers() {
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGHUP, &sa, nullptr);  // a closed terminal or ssh session: save and stop
  std::signal(SIGXFSZ, SIG_IGN);
}

bool stop_requested() { return g_stop_signal.load() != 0; }
int stop_signal() { return g_stop_signal.load(); }

void throw_if_stop_requested(const char* phase) {
  if (stop_requested())
    throw StopRequested(
        fmt::format("stopped by signal {} during {}, before any step; nothing to save", stop_signal(), phase));
}

}  // namespace s6::trainer
