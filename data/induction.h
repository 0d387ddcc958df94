// Induction heads / associative recall (HazyResearch/safari generate_induction_head semantics).
#pragma once
#include "data/task.h"

namespace s6::data {

// Vocabulary V = params.vocab: ordinary tokens 0..V-3, copy_prefix = V-2, noop = V-1 (unused).
// With T = seq_len - 1: draw T ordinary tokens uniformly with replacement; pick the trigger p
// uniformly in [0, T-2); overwrite token p with copy_prefix (token p+1 stays: it is the value);
// append copy_prefix, append the value. The full sequence has length T+2 = seq_len+1;
// inputs = its first seq_len tokens (ending with copy_prefix), targets = next tokens.
// Scored positions:
//   loss_positions = last (default): targets = kIgnoreIndex except the final position
//     seq_len-1, whose target is the value. Loss and accuracy use that one position.
//   loss_positions = all (safari training): every position i has target full[i+1] (the value at
//     the final position). Accuracy still uses the final position only: eval_targets is a
//     separate tensor, kIgnoreIndex except the final position (= the value).
// Requires V >= 3 and seq_len >= 4.
class InductionHeadsTask : public Task {
 public:
  explicit InductionHeadsTask(const TaskParams& params);
  int32_t copy_prefix() const { return static_cast<int32_t>(params_.vocab - 2); }
  bool separate_eval_targets() const override { return params_.loss_positions == LossPositions::All; }

 protected:
  uint64_t task_id() const override { return 3; }
  void generate(ExampleRng& rng, int32_t* inputs, int32_t* targets, int32_t* eval) const override;
  void launch_on_device(const DeviceBatch& out, uint64_t key, const uint64_t* batch_index,
                        uint64_t first_example) const override;

 private:
  Bounded ordinary_;  // uniform over the V-2 ordinary tokens
  Bounded trigger_;   // uniform over [0, T-2)
};

}  // namespace s6::data
