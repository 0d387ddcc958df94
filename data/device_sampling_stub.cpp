// Builds without CUDA: the device generators name what is missing.
#include "core/error.h"
#include "data/device_sampling.h"

namespace s6::data::device {

void generate_induction(const DeviceBatch&, const InductionSpec&, uint64_t, const uint64_t*, uint64_t) {
  S6_FAIL("induction_heads.sample_on_device: this build has no CUDA");
}

void generate_copying(const DeviceBatch&, const CopyingSpec&, uint64_t, const uint64_t*, uint64_t) {
  S6_FAIL("copying.sample_on_device: this build has no CUDA");
}

}  // namespace s6::data::device
