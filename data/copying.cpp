// Copying / Selective Copying generator: see data/copying.h for the exact format.
#include "data/copying.h"

#include <algorithm>

#include "data/device_sampling.h"

namespace s6::data {

CopyingTask::CopyingTask(const TaskParams& p, bool selective)
    : Task(selective ? "selective_copying" : "copying", p), selective_(selective) {
  const char* task = selective ? "selective_copying" : "copying";
  S6_CHECK(p.vocab >= 3 && p.vocab <= (int64_t{1} << 30),
           "{}: vocab = {} must be in [3, 2^30] (token 0 = noise, 1..vocab-2 = data, vocab-1 = marker)", task,
           p.vocab);
  S6_CHECK(p.num_tokens >= 1 && p.num_tokens <= 4096,
           "{}: num_tokens = {} must be in [1, 4096] (M, the tokens to memorize)", task, p.num_tokens);
  S6_CHECK(p.seq_len > 2 * p.num_tokens && p.seq_len < (int64_t{1} << 31),
           "{}: seq_len = {} must be in (2 * num_tokens, 2^31) = ({}, 2^31); seq_len is the TOTAL "
           "length L_noise + 2 * num_tokens, so L_noise = seq_len - {} must be >= 1",
           task, p.seq_len, 2 * p.num_tokens, 2 * p.num_tokens);
  S6_CHECK(p.loss_positions == LossPositions::Last,
           "{}: loss_positions = all is not supported (only 'last': the M answer positions); "
           "'all' is an induction_heads option",
           task);
  data_token_ = Bounded(static_cast<uint32_t>(p.vocab - 2));
}

void CopyingTask::generate(ExampleRng& rng, int32_t* in, int32_t* tgt, int32_t*) const {
  const int64_t L = params_.seq_len, M = params_.num_tokens, region = L - M;
  const int32_t marker = static_cast<int32_t>(params_.vocab - 1);
  std::fill(in, in + region, 0);
  std::fill(in + region, in + L, marker);
  std::fill(tgt, tgt + region, kIgnoreIndex);

  // Positions of the data tokens inside the region: 0..M-1, or a uniform M-subset of
  // [0, region) by Floyd's algorithm, then sorted. The answers are written straight to tgt.
  int32_t* pos = tgt + region;  // borrow the answer slots to hold positions first
  if (!selective_) {
    for (int64_t i = 0; i < M; ++i) pos[i] = static_cast<int32_t>(i);
  } else {
    int64_t have = 0;
    for (int64_t j = region - M; j < region; ++j) {
      int32_t t = static_cast<int32_t>(rng.below(static_cast<uint32_t>(j + 1)));
      bool seen = std::find(pos, pos + have, t) != pos + have;
      pos[have++] = seen ? static_cast<int32_t>(j) : t;
    }
    std::sort(pos, pos + M);
  }
  for (int64_t i = 0; i < M; ++i) {
    int32_t token = 1 + static_cast<int32_t>(rng.below(data_token_));
    in[pos[i]] = token;
    pos[i] = token;  // target at marker i = data token i
  }
}

void CopyingTask::launch_on_device(const DeviceBatch& out, uint64_t key, const uint64_t* batch_index,
                                   uint64_t first_example) const {
  device::CopyingSpec spec;
  spec.seq_len = params_.seq_len;
  spec.num_tokens = params_.num_tokens;
  spec.marker = static_cast<int32_t>(params_.vocab - 1);
  spec.data_token = data_token_;
  spec.selective = selective_;
  device::generate_copying(out, spec, key, batch_index, first_example);
}

}  // namespace s6::data
