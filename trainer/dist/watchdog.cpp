// Watchdog for collectives: a polling loop and a helper-thread wait, both ending in abort + CommError.
#include "trainer/dist/watchdog.h"

#include <fmt/format.h>

#include <condition_variable>
#include <exception>
#include <memory>
#include <mutex>
#include <thread>

namespace s6::trainer {
namespace {

using Clock = std::chrono::steady_clock;

[[noreturn]] void throw_timeout(const std::string& what, int rank, std::chrono::milliseconds timeout,
                                bool finished_after_abort) {
  throw CommError(fmt::format(
      "rank {}: collective '{}' did not complete within {:g} s; communicator aborted{} (a peer rank "
      "probably died or is stuck: check the other ranks' logs)",
      rank, what, timeout.count() / 1000.0,
      finished_after_abort ? "" : " (the operation did not return after the abort either)"));
}

// Shared with the helper thread, which may outlive the call when op ignores abort.
struct OpState {
  std::mutex mu;
  std::condition_variable cv;
  bool done = false;
  std::exception_ptr error;
};

}  // namespace

void poll_with_timeout(const std::string& what, int rank, std::chrono::milliseconds timeout,
                       const std::function<bool()>& is_done, const std::function<void()>& abort,
                       std::chrono::microseconds poll_interval) {
  const auto deadline = Clock::now() + timeout;
  while (!is_done()) {
    if (Clock::now() >= deadline) {
      abort();
      throw_timeout(what, rank, timeout, true);
    }
    // Sleeping instead of spinning leaves the core to the host thread feeding the GPU; 200 us is
    // far below a collective's usual duration, so little latency is added.
    std::this_thread::sleep_for(poll_interval);
  }
}

void run_with_timeout(const std::string& what, int rank, std::chrono::milliseconds timeout,
                      std::function<void()> op, const std::function<void()>& abort,
                      std::chrono::milliseconds abort_grace) {
  auto state = std::make_shared<OpState>();
  std::thread worker([state, op = std::move(op)] {
    std::exception_ptr error;
    try {
      op();
    } catch (...) {
      error = std::current_exception();
    }
    std::lock_guard<std::mutex> lock(state->mu);
    state->done = true;
    state->error = error;
    state->cv.notify_all();
  });
  std::unique_lock<std::mutex> lock(state->mu);
  if (state->cv.wait_for(lock, timeout, [&] { return state->done; })) {
    lock.unlock();
    worker.join();
    if (state->error) std::rethrow_exception(state->error);
    return;
  }
  lock.unlock();
  abort();  // outside the lock: abort may need the op to make progress to return
  lock.lock();
  bool finished = state->cv.wait_for(lock, abort_grace, [&] { return state->done; });
  lock.unlock();
  if (finished) worker.join();
  else worker.detach();  // cannot be cancelled; `state` stays alive through the thread's copy
  throw_timeout(what, rank, timeout, finished);
}

}  // namespace s6::trainer
