// Watchdog for collectives: bounds a blocking or asynchronous operation by a deadline and, past it,
// aborts it (the NCCL layer passes ncclCommAbort) and throws CommError naming the op and rank.
#pragma once
#include <chrono>
#include <functional>
#include <string>

#include "trainer/dist/error.h"

namespace s6::trainer {

// Polling flavour, for work that is already asynchronous (an NCCL collective enqueued on a stream:
// is_done = cudaEventQuery(done) == cudaSuccess, possibly also checking ncclCommGetAsyncError).
// Calls is_done() until it returns true; past `timeout` calls abort() once and throws CommError
//   "rank R: collective '<what>' did not complete within T s; communicator aborted".
// No thread is created, so it is cheap enough for every collective of the training loop.
// Exceptions from is_done or abort propagate.
void poll_with_timeout(const std::string& what, int rank, std::chrono::milliseconds timeout,
                       const std::function<bool()>& is_done, const std::function<void()>& abort,
                       std::chrono::microseconds poll_interval = std::chrono::microseconds(200));

// Thread flavour, for an operation that blocks the calling thread (a blocking ncclCommInitRank, a
// synchronize). Runs op() on a helper thread and waits for it up to `timeout`:
//   - op returns in time: returns (an exception thrown by op is rethrown here);
//   - deadline passes: calls abort() (which should make op return, as ncclCommAbort does), waits up
//     to abort_grace more for op to finish, then throws CommError as above.
// If op ignores abort it cannot be cancelled: its thread is detached and keeps running, so op must
// not capture objects that die before the process does. After this error the caller is expected
// to exit (kExitCommError), which ends that thread too.
void run_with_timeout(const std::string& what, int rank, std::chrono::milliseconds timeout,
                      std::function<void()> op, const std::function<void()>& abort,
                      std::chrono::milliseconds abort_grace = std::chrono::seconds(5));

}  // namespace s6::trainer
