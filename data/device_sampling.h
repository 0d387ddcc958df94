// The task generators on the GPU: the same example streams (data/rng.h) and formats as the host
// generators, so a batch generated here is bit for bit the one Task::sample_into writes (tested in
// tests/test_data_device.cpp). Called through Task::sample_on_device; without CUDA they throw.
#pragma once
#include <cstdint>

#include "data/rng.h"
#include "data/task.h"

namespace s6::data::device {

struct InductionSpec {
  int64_t seq_len = 0;
  int32_t copy_prefix = 0;
  Bounded ordinary, trigger;
  bool loss_all = false;  // loss_positions = all
};
// A warp per example: the token draws are a rejection-sampled stream, so the lanes take 32 words
// at a time and place their accepted draws by a prefix count over the warp.
void generate_induction(const DeviceBatch& out, const InductionSpec& spec, uint64_t key,
                        const uint64_t* batch_index, uint64_t first_example);

struct CopyingSpec {
  int64_t seq_len = 0, num_tokens = 0;
  int32_t marker = 0;
  Bounded data_token;
  bool selective = false;
};
// A block per example: one thread makes the example's few draws in stream order (positions, then
// tokens), the block sorts the positions by rank and writes the rows.
void generate_copying(const DeviceBatch& out, const CopyingSpec& spec, uint64_t key,
                      const uint64_t* batch_index, uint64_t first_example);

}  // namespace s6::data::device
