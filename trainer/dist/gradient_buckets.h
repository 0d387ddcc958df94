// Gradient buckets for data parallelism: which parameters are all-reduced together. A pure
// function of the parameter sizes, so it is tested without NCCL (trainer/data_parallel.cpp uses it).
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

namespace s6::trainer {

struct GradientBucket {
  std::vector<int64_t> params;  // indices into the parameter list, in the order they were added
  int64_t bytes = 0;
};

// Groups parameters into buckets of about `bucket_bytes`, walking them in reverse order (the order
// backward finishes them: the last layer's gradients are final first). A parameter joins the open
// bucket unless that would take it past `bucket_bytes`; a parameter at least `bucket_bytes` large
// gets a bucket of its own. Every parameter is in exactly one bucket; no bucket is empty.
std::vector<GradientBucket> assign_gradient_buckets(const std::vector<int64_t>& param_bytes,
                                                    int64_t bucket_bytes);

// When each bucket may launch during one step. Parameters become ready in whatever order backward
// finishes them; buckets launch strictly in bucket order (NCCL needs every rank to issue the same
// collectives in the same order), so a complete bucket waits for every earlier one.
class BucketSchedule {
 public:
  BucketSchedule(std::vector<GradientBucket> buckets, int64_t num_params);
  // A new step: nothing ready, nothing launched.
  void begin_step();
  // Marks parameter p ready (again: ignored) and returns the buckets that may launch now, in order;
  // the caller launches them, and they count as launched.
  std::vector<int64_t> mark_ready(int64_t p);
  // The buckets not launched yet, in order; afterwards every bucket counts as launched.
  std::vector<int64_t> take_rest();
  bool is_ready(int64_t p) const { return ready_[static_cast<size_t>(p)]; }
  int64_t launched() const { return next_; }
  const std::vector<GradientBucket>& buckets() const { return buckets_; }

 private:
  std::vector<GradientBucket> buckets_;
  std::vector<int64_t> bucket_of_;  // parameter -> its bucket
  std::vector<bool> ready_;         // per parameter
  std::vector<int64_t> pending_;    // per bucket: parameters not ready yet
  int64_t next_ = 0;                // the next bucket to launch
};

}  // namespace s6::trainer
