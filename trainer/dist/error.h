// CommError: the one exception type of the distributed layer (rendezvous, agreement, watchdog).
#pragma once
#include "core/error.h"

namespace s6::trainer {

// Thrown when ranks cannot talk to each other or disagree: a timeout, a dead or misbehaving peer,
// a startup mismatch. A separate type (not a plain s6::Error) so main() can map it to
// kExitCommError (6) rather than "internal error". Messages name the rank, the peer and the
// operation, e.g. "rank 0: gather from rank 2 (127.0.0.1:29500): timed out after 30 s".
struct CommError : Error {
  using Error::Error;
};

}  // namespace s6::trainer
