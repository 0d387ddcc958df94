// The exit codes of `train`, one per way a run can end (documented in README.md).
#pragma once

namespace s6::trainer {

enum ExitCode : int {
  kExitOk = 0,
  kExitInternalError = 1,    // a bug or an unexpected failure: the message says where
  kExitConfigError = 2,      // bad command line or configuration (every problem listed), run.dir
                             // locked or holding another run, a refused config change on resume
  kExitNonFinite = 3,        // loss or gradient went non-finite and on_nonfinite said halt, or a
                             // state to save was non-finite or beyond train.max_weight_abs
  kExitCheckpointError = 4,  // an I/O failure in run.dir (path and OS error named) or an explicit
                             // checkpoint not loaded
  kExitInterrupted = 5,      // stopped by SIGTERM/SIGINT/SIGHUP or train.max_minutes after saving
  kExitCommError = 6,        // a collective timed out or a peer rank died
};

}  // namespace s6::trainer
