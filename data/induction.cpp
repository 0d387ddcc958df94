// Induction heads generator: see data/induction.h for the exact format and scored positions.
#include "data/induction.h"

#include <algorithm>

#include "data/device_sampling.h"

namespace s6::data {

InductionHeadsTask::InductionHeadsTask(const TaskParams& p) : Task("induction_heads", p) {
  S6_CHECK(p.vocab >= 3 && p.vocab <= (int64_t{1} << 30),
           "induction_heads: vocab = {} must be in [3, 2^30] (ordinary tokens 0..vocab-3, "
           "copy_prefix = vocab-2, noop = vocab-1)",
           p.vocab);
  S6_CHECK(p.seq_len >= 4 && p.seq_len < (int64_t{1} << 31),
           "induction_heads: seq_len = {} must be in [4, 2^31) (the model input length T+1; the "
           "trigger position is drawn from [0, T-2))",
           p.seq_len);
  ordinary_ = Bounded(static_cast<uint32_t>(p.vocab - 2));
  trigger_ = Bounded(static_cast<uint32_t>(p.seq_len - 3));  // T - 2 = seq_len - 3
}

void InductionHeadsTask::generate(ExampleRng& rng, int32_t* in, int32_t* tgt, int32_t* eval) const {
  const int64_t L = params_.seq_len, T = L - 1;
  const int32_t prefix = copy_prefix();
  const int64_t p = rng.below(trigger_);
  for (int64_t i = 0; i < T; ++i) in[i] = static_cast<int32_t>(rng.below(ordinary_));
  const int32_t value = in[p + 1];
  in[p] = prefix;
  in[T] = prefix;  // full sequence = in[0..T] followed by value
  if (params_.loss_positions == LossPositions::Last) {
    std::fill(tgt, tgt + T, kIgnoreIndex);
  } else {
    std::copy(in + 1, in + L, tgt);
    std::fill(eval, eval + T, kIgnoreIndex);
    eval[T] = value;
  }
  tgt[T] = value;
}

void InductionHeadsTask::launch_on_device(const DeviceBatch& out, uint64_t key, const uint64_t* batch_index,
                                          uint64_t first_example) const {
  device::InductionSpec spec;
  spec.seq_len = params_.seq_len;
  spec.copy_prefix = copy_prefix();
  spec.ordinary = ordinary_;
  spec.trigger = trigger_;
  spec.loss_all = params_.loss_positions == LossPositions::All;
  device::generate_induction(out, spec, key, batch_index, first_example);
}

}  // namespace s6::data
