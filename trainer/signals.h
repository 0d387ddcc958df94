// Graceful stop: the first SIGTERM/SIGINT sets a flag the loop reads at each step boundary; a
// second SIGINT exits at once.
#pragma once

namespace s6::trainer {

void install_stop_handlers();
bool stop_requested();
int stop_signal();  // the signal that asked to stop, or 0

}  // namespace s6::trainer
