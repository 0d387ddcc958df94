// A memory estimate before anything is allocated, so an absurd size (model.d_model=1e9) is a
// configuration error naming the keys, not std::bad_alloc after a long wait.
#pragma once
#include "trainer/config.h"

namespace s6::trainer {

struct MemoryEstimate {
  double parameters = 0;        // parameter count
  double state_bytes = 0;       // parameters, gradients and both AdamW moments (fp32)
  double activation_bytes = 0;  // a lower bound for one training step's activations
};

MemoryEstimate estimate_memory(const TrainConfig& config, int64_t world_size);

// Throws ConfigError naming the size keys when the estimate exceeds `available_bytes` (the
// machine's physical memory when 0). On the CPU the activations count too; on a GPU only the state,
// which a checkpoint copies to the host (the GPU's own memory is not queried).
void check_memory(const TrainConfig& config, int64_t world_size, bool on_cpu, double available_bytes = 0);

}  // namespace s6::trainer
