// Test hooks for the kill-and-resume tests, steered by S6_FAULT_INJECT (read once): the one place
// production code knows about injected faults. Unset, every hook does nothing.
#pragma once
#include <cstdint>

namespace s6::trainer::fault_injection {

// S6_FAULT_INJECT=sigterm_at_step=N or sigkill_at_step=N: the process signals itself once step N
// is done (checkpoint included), so the signal tests are deterministic while the signal path
// itself is the real one.
void after_step(int64_t done);

// S6_FAULT_INJECT=kill_during_checkpoint: SIGKILL with the checkpoint's temp file half-written.
void during_checkpoint_write();

}  // namespace s6::trainer::fault_injection
