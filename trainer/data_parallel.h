// Data parallelism, one process per GPU: rendezvous and startup agreement over TCP, an NCCL
// communicator, gradient averaging and small host-value reductions, each guarded by a timeout.
#pragma once
#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "layers/mamba.h"
#include "trainer/distributed_env.h"

namespace s6::trainer {

class Rendezvous;

class DataParallel {
 public:
  // Connects every rank (TCP), creates the NCCL communicator on device local_rank (set before the
  // communicator, as NCCL requires). Throws CommError on timeouts or a missing peer.
  DataParallel(const LaunchEnv& env, std::chrono::milliseconds timeout);
  ~DataParallel();
  DataParallel(const DataParallel&) = delete;
  DataParallel& operator=(const DataParallel&) = delete;

  int rank() const { return env_.rank; }
  int world_size() const { return env_.world_size; }
  const LaunchEnv& env() const { return env_; }

  // Every rank must run the same config, world size and resume step; throws CommError otherwise.
  void check_agreement(const std::string& resolved_config_yaml, int64_t resume_step);
  // Averages every parameter's gradient across ranks (missing gradients count as zeros).
  void average_gradients(std::vector<NamedParameter>& params);
  // Element-wise sums of a few host values across ranks (loss, accuracy counts, eval sums).
  void sum(std::vector<double>& values);
  void barrier(const std::string& what);

 private:
  struct Nccl;
  void wait(const std::string& what, void* stream);
  LaunchEnv env_;
  std::chrono::milliseconds timeout_;
  std::unique_ptr<Rendezvous> rendezvous_;
  std::unique_ptr<Nccl> nccl_;
};

}  // namespace s6::trainer
