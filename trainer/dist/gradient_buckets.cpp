// Bucket assignment for the data-parallel gradient reducer (see gradient_buckets.h).
#include "trainer/dist/gradient_buckets.h"

#include <cmath>
#include <cstdlib>
#include <utility>

#include "core/error.h"

namespace s6::trainer {

std::vector<GradientBucket> assign_gradient_buckets(const std::vector<int64_t>& param_bytes,
                                                    int64_t bucket_bytes) {
  S6_CHECK(bucket_bytes > 0, "gradient buckets: bucket size must be positive, got {} bytes", bucket_bytes);
  std::vector<GradientBucket> buckets;
  GradientBucket open;
  for (size_t i = param_bytes.size(); i-- > 0;) {
    const int64_t bytes = param_bytes[i];
    S6_CHECK(bytes >= 0, "gradient buckets: parameter {} has {} bytes", i, bytes);
    if (!open.params.empty() && open.bytes + bytes > bucket_bytes)
      buckets.push_back(std::move(open)), open = {};
    open.params.push_back(static_cast<int64_t>(i));
    open.bytes += bytes;
    if (open.bytes >= bucket_bytes) buckets.push_back(std::move(open)), open = {};
  }
  if (!open.params.empty()) buckets.push_back(std::move(open));
  return buckets;
}

BucketSchedule::BucketSchedule(std::vector<GradientBucket> buckets, int64_t num_params)
    : buckets_(std::move(buckets)), bucket_of_(static_cast<size_t>(num_params), -1) {
  for (size_t b = 0; b < buckets_.size(); ++b)
    for (int64_t p : buckets_[b].params) {
      S6_CHECK(p >= 0 && p < num_params && bucket_of_[static_cast<size_t>(p)] < 0,
               "gradient buckets: parameter {} is out of range or in two buckets", p);
      bucket_of_[static_cast<size_t>(p)] = static_cast<int64_t>(b);
    }
  for (int64_t p = 0; p < num_params; ++p)
    S6_CHECK(bucket_of_[static_cast<size_t>(p)] >= 0, "gradient buckets: parameter {} is in no bucket", p);
  begin_step();
}

void BucketSchedule::begin_step() {
  ready_.assign(bucket_of_.size(), false);
  pending_.resize(buckets_.size());
  for (size_t b = 0; b < buckets_.size(); ++b) pending_[b] = static_cast<int64_t>(buckets_[b].params.size());
  next_ = 0;
}

std::vector<int64_t> BucketSchedule::mark_ready(int64_t p) {
  S6_CHECK(p >= 0 && p < static_cast<int64_t>(ready_.size()), "gradient buckets: no parameter {}", p);
  std::vector<int64_t> launch;
  if (ready_[static_cast<size_t>(p)]) return launch;
  ready_[static_cast<size_t>(p)] = true;
  --pending_[static_cast<size_t>(bucket_of_[static_cast<size_t>(p)])];
  while (next_ < static_cast<int64_t>(buckets_.size()) && pending_[static_cast<size_t>(next_)] == 0)
    launch.push_back(next_++);
  return launch;
}

std::vector<int64_t> BucketSchedule::take_rest() {
  std::vector<int64_t> rest;
  while (next_ < static_cast<int64_t>(buckets_.size())) rest.push_back(next_++);
  return rest;
}

}  // namespace s6::trainer
