// Finite and magnitude checks over a captured state (trainer/state_check.h).
#include "trainer/state_check.h"

#include <fmt/format.h>

#include <cmath>

namespace s6::trainer {

std::string unsaveable_reason(CheckpointContents& state, double max_weight_abs) {
  struct Group {
    const char* name;
    std::map<std::string, Tensor>* tensors;
    bool bounded;  // the moments of an exploded run may be large while the weights are sane
  };
  for (Group g : {Group{"/model", &state.model, true}, Group{"/optimizer/exp_avg", &state.exp_avg, false},
                  Group{"/optimizer/exp_avg_sq", &state.exp_avg_sq, false}}) {
    for (auto& [name, t] : *g.tensors) {
      t = t.detach().to(Device::CPU).to(DType::Float32).contiguous();
      const float* p = t.data<float>();
      double biggest = 0;
      for (int64_t i = 0, n = t.numel(); i < n; ++i) {
        if (!std::isfinite(p[i])) return fmt::format("{}/{} holds a non-finite value ({})", g.name, name, p[i]);
        biggest = std::max(biggest, static_cast<double>(std::fabs(p[i])));
      }
      if (g.bounded && max_weight_abs > 0 && biggest > max_weight_abs)
        return fmt::format(
            "{}/{} has a weight of magnitude {:.3g} > train.max_weight_abs = {:g} (the run has "
            "blown up)",
            g.name, name, biggest, max_weight_abs);
    }
  }
  return "";
}

}  // namespace s6::trainer
