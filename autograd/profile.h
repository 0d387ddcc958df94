// A per-op time table for finding where a training step goes: with S6_PROFILE=1 every recorded
// op, every backward node and the trainer's phases synchronize the device and charge the wall
// time since the previous mark to their label. Synchronizing changes the timing it measures
// (no overlap, one sync per op), so read the table for proportions, not for ms/step.
#pragma once
#include <string>

namespace s6::autograd::profile {

bool enabled();  // S6_PROFILE is set to something other than "0"

// Charges the time since the previous mark to `label` (first mark of a run starts the clock).
void mark(const char* kind, const char* label);

// Starts a new window: forgets the clock (time before this is charged to nothing).
void restart_clock();

// The table, largest total first, with calls and mean; empty when nothing was recorded.
std::string report();

}  // namespace s6::autograd::profile
