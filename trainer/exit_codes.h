// The exit codes of `train`, one per way a run can end (documented in README.md).
#pragma once

namespace s6::trainer {

enum ExitCode : int {
  kExitOk = 0,
  kExitInternalError = 1,   // a bug or an unexpected failure: the message says where
  kExitConfigError = 2,     // bad command line or configuration (every problem listed)
  kExitNonFinite = 3,       // loss or gradient went non-finite and on_nonfinite said halt
  kExitCheckpointError = 4, // a checkpoint could not be written or an explicit one not loaded
  kExitInterrupted = 5,     // stopped by SIGTERM/SIGINT or train.max_minutes after saving
  kExitCommError = 6,       // a collective timed out or a peer rank died
};

}  // namespace s6::trainer
