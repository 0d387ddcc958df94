// Copying and Selective Copying (state-spaces/s4 copying.py semantics, as next-token prediction).
#pragma once
#include "data/task.h"

namespace s6::data {

// Vocabulary A = params.vocab: token 0 = noise/blank, data tokens uniform in {1..A-2}, marker A-1.
// M = params.num_tokens data tokens; seq_len = TOTAL length = L_noise + 2M (the paper's "length
// 4096" is taken as the total, so L_noise = seq_len - 2M; requires seq_len > 2M, A >= 3).
// Sequence: a region of L_noise + M tokens, all 0 except the M data tokens, which sit at positions
// 0..M-1 (copying) or at M distinct positions drawn as a uniform random subset, in increasing order
// (selective copying); then M markers.
// inputs = the whole sequence. targets = kIgnoreIndex everywhere except the last M positions
// (L_noise+M .. seq_len-1): the model reading marker i is scored on data token i. Loss and
// accuracy both use exactly those M positions per example (eval_targets aliases targets).
class CopyingTask : public Task {
 public:
  CopyingTask(const TaskParams& params, bool selective);
  bool selective() const { return selective_; }

 protected:
  uint64_t task_id() const override { return selective_ ? 2 : 1; }
  void generate(ExampleRng& rng, int32_t* inputs, int32_t* targets, int32_t* eval) const override;
  void launch_on_device(const DeviceBatch& out, uint64_t key, const uint64_t* batch_index,
                        uint64_t first_example) const override;

 private:
  bool selective_;
  Bounded data_token_;  // uniform over the A-2 data tokens
};

}  // namespace s6::data
