// Data parallelism, one process per GPU (or per CPU process): rendezvous and startup agreement
// over TCP, gradient averaging and small host-value reductions, each guarded by a timeout. On CUDA
// the collectives go through an NCCL communicator; on the CPU through the rendezvous's TCP star
// (rank 0 sums in rank order), which is what lets the multi-rank logic run and be tested anywhere.
#pragma once
#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "autograd/tape.h"
#include "layers/mamba.h"
#include "trainer/config.h"
#include "trainer/dist/env.h"
#include "trainer/dist/gradient_buckets.h"

namespace s6::trainer {

class Rendezvous;

class DataParallel {
 public:
  // Connects every rank (TCP); on CUDA also creates the NCCL communicator on device local_rank
  // (set before the communicator, as NCCL requires). Throws CommError on timeouts or a missing
  // peer. `device` is where the gradients live (the training device).
  DataParallel(const LaunchEnv& env, std::chrono::milliseconds timeout, Device device);
  ~DataParallel();
  DataParallel(const DataParallel&) = delete;
  DataParallel& operator=(const DataParallel&) = delete;

  int rank() const { return env_.rank; }
  int world_size() const { return env_.world_size; }
  const LaunchEnv& env() const { return env_; }

  // Every rank must run the same config, world size and resume step; throws CommError otherwise.
  void check_agreement(const std::string& resolved_config_yaml, int64_t resume_step);
  // Gradient averaging in buckets, overlapped with backward:
  //   autograd::backward(loss, Tensor(), dp.start_gradient_averaging(params));
  //   dp.finish_gradient_averaging();
  // Parameters are grouped into buckets of about bucket_mb() (fp32; dist.bucket_mb's default
  // unless set_bucket_mb says otherwise) in reverse parameter order (assign_gradient_buckets).
  // The returned hook marks a parameter ready when backward reports its gradient final; a bucket whose
  // parameters are all ready is launched at once (an event on the compute stream, which the communicator stream
  // waits on, then one grouped in-place ncclAllReduce ncclAvg of its gradients), so communication overlaps the
  // rest of backward (on the CPU a bucket is packed into one buffer and averaged there and then, through the
  // TCP star, before backward goes on). Buckets launch strictly in bucket order: NCCL needs every rank to issue
  // the same collectives in the same order, so a bucket waits for the ones before it even when its gradients
  // are final sooner. finish launches every bucket not launched yet, with zeros as the gradient of any
  // parameter the loss did not reach (so every rank reduces every parameter, reached or not), then makes the
  // compute stream wait for the communicator stream; a peer that never joins hits the timeout,
  // aborts the communicator and throws CommError naming this rank and "gradient all-reduce".
  // `params` must outlive the step; the bucket layout is kept while the parameters stay the same.
  autograd::LeafReadyFn start_gradient_averaging(std::vector<NamedParameter>& params);
  void finish_gradient_averaging();
  double bucket_mb() const { return bucket_mb_; }
  void set_bucket_mb(double mb);  // takes effect at the next start_gradient_averaging
  // Both at once, after backward (no overlap): averages every parameter's gradient across ranks,
  // missing gradients counting as zeros.
  void average_gradients(std::vector<NamedParameter>& params);
  // Buckets of the current layout (empty before the first start_gradient_averaging).
  const std::vector<GradientBucket>& gradient_buckets() const;
  // Element-wise sums of a few host values across ranks (loss, accuracy counts, eval sums).
  void sum(std::vector<double>& values);
  void barrier(const std::string& what);

 private:
  struct Nccl;
  struct Reducer;
  // The NCCL half (data_parallel.cpp; without NCCL in the build, init_nccl throws CommError).
  void init_nccl();
  void nccl_wait(const std::string& what, void* stream);
  void nccl_launch_bucket(size_t bucket);
  void nccl_sum(std::vector<double>& values);
  void mark_ready(const AutogradMeta& leaf);
  void launch_bucket(size_t bucket);
  LaunchEnv env_;
  Device device_;
  std::chrono::milliseconds timeout_;
  std::unique_ptr<Rendezvous> rendezvous_;
  std::unique_ptr<Nccl> nccl_;
  std::unique_ptr<Reducer> reducer_;
  double bucket_mb_ = DistConfig{}.bucket_mb;
};

}  // namespace s6::trainer
