// Parameter count and activation lower bound from the config alone, in doubles so that absurd
// sizes cannot overflow (trainer/memory_estimate.h).
#include "trainer/memory_estimate.h"

#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>

namespace s6::trainer {

MemoryEstimate estimate_memory(const TrainConfig& c, int64_t world_size) {
  const MambaConfig& m = c.model;
  const double d = static_cast<double>(m.d_model), e = static_cast<double>(m.d_inner());
  const double n = static_cast<double>(m.d_state), r = static_cast<double>(m.resolved_dt_rank());
  const double vocab = static_cast<double>(m.padded_vocab());
  // Per layer: in_proj, conv1d, x_proj, dt_proj, A_log, D, out_proj and the norm (biases are small
  // beside the matrices and left out: this is a lower bound).
  const double layer = d * 2 * e + e * static_cast<double>(m.d_conv) + e * (r + 2 * n) + r * e + e * n + e +
                       e * d + d;
  MemoryEstimate out;
  out.parameters = static_cast<double>(m.n_layer) * layer + vocab * d * (m.tie_embeddings ? 1 : 2) + d;
  out.state_bytes = 16 * out.parameters;
  int64_t longest = c.task.seq_len;
  for (int64_t len : c.task.curriculum_lengths) longest = std::max(longest, len);
  const double tokens = static_cast<double>(c.train.batch_size / std::max<int64_t>(world_size, 1)) *
                        static_cast<double>(longest);
  // Each layer keeps at least its input, x, z and the scan output for backward (4 bytes each).
  out.activation_bytes = 4 * tokens * static_cast<double>(m.n_layer) * (d + 3 * e) + 4 * tokens * vocab;
  return out;
}

void check_memory(const TrainConfig& c, int64_t world_size, bool on_cpu, double available) {
  if (available <= 0)
    available = static_cast<double>(sysconf(_SC_PHYS_PAGES)) * static_cast<double>(sysconf(_SC_PAGESIZE));
  MemoryEstimate est = estimate_memory(c, world_size);
  if (!on_cpu) est.activation_bytes = 0;
  if (est.state_bytes + est.activation_bytes <= available) return;
  const MambaConfig& m = c.model;
  throw ConfigError(fmt::format(
      "model.d_model={}, model.n_layer={}, model.expand={}, model.d_state={}, model.vocab_size={}, "
      "train.batch_size={}, task.seq_len={}: the run would need at least {:.3g} GB ({:.3g} parameters x 16 "
      "bytes "
      "for weights, gradients and AdamW moments, plus {:.3g} GB of activations), more than this machine's "
      "{:.3g} GB; expected smaller values",
      m.d_model, m.n_layer, m.expand, m.d_state, m.vocab_size, c.train.batch_size, c.task.seq_len,
      (est.state_bytes + est.activation_bytes) / 1e9, est.parameters, est.activation_bytes / 1e9,
      available / 1e9));
}

}  // namespace s6::trainer
