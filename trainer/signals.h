// Graceful stop: the first SIGTERM/SIGINT/SIGHUP sets a flag the loop reads at each step boundary,
// evaluation at each batch and start-up between its phases; a second SIGINT exits at once.
#pragma once
#include <stdexcept>

namespace s6::trainer {

// Installed first thing in main (and again, harmlessly, by run_training); also makes a write past
// RLIMIT_FSIZE an EFBIG error instead of a SIGXFSZ kill, so it is reported like a full disk.
void install_stop_handlers();
bool stop_requested();
int stop_signal();  // the signal that asked to stop, or 0

// Thrown where a stop is honoured before any state worth saving exists (start-up): exit 5.
struct StopRequested : std::runtime_error {
  using std::runtime_error::runtime_error;
};
// Throws StopRequested naming `phase` when a stop signal has arrived.
void throw_if_stop_requested(const char* phase);

}  // namespace s6::trainer
