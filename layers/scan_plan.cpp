// The scan plan's overrides from the environment (the only place S6_SCAN_* is read) and the
// per-device plan.
#include "layers/scan_plan.h"

#include <cstdlib>
#include <string>

#include "core/error.h"
#ifdef S6_WITH_CUDA
#include "kernels/cuda/selective_scan.h"
#endif

namespace s6 {

namespace {

// A whole-string integer, or an error naming the variable and what it takes.
int64_t parse_int(const char* name, const char* value, const char* expected) {
  const std::string s = value;
  size_t used = 0;
  long long x = 0;
  try {
    x = std::stoll(s, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  S6_CHECK(!s.empty() && used == s.size(), "{}='{}' is not a number; expected {}", name, s, expected);
  return x;
}

}  // namespace

kernels::ScanPlanOverrides parse_scan_plan_overrides(const std::function<const char*(const char*)>& lookup) {
  kernels::ScanPlanOverrides ov;
  if (const char* v = lookup("S6_SCAN_CHUNK")) {
    ov.chunk = parse_int("S6_SCAN_CHUNK", v, "16 or 64");
    S6_CHECK(ov.chunk == 16 || ov.chunk == 64, "S6_SCAN_CHUNK={} is not 16 or 64", ov.chunk);
  }
  if (const char* v = lookup("S6_SCAN_BWD_NS")) {
    ov.bwd_states = static_cast<int>(parse_int("S6_SCAN_BWD_NS", v, "4 or 8"));
    S6_CHECK(ov.bwd_states == 4 || ov.bwd_states == 8, "S6_SCAN_BWD_NS={} is not 4 or 8", ov.bwd_states);
  }
  for (auto [name, field] :
       {std::pair{"S6_SCAN_FWD_BLOCKS", &ov.fwd_blocks}, std::pair{"S6_SCAN_BWD_BLOCKS", &ov.bwd_blocks}}) {
    if (const char* v = lookup(name)) {
      *field = parse_int(name, v, "a positive number of blocks");
      S6_CHECK(*field > 0, "{}={} is not a positive number of blocks", name, *field);
    }
  }
  if (const char* v = lookup("S6_SCAN_SYNC_STAGE")) {
    const int64_t x = parse_int("S6_SCAN_SYNC_STAGE", v, "0 or 1");
    S6_CHECK(x == 0 || x == 1, "S6_SCAN_SYNC_STAGE={} is not 0 or 1", x);
    ov.sync_staging = x == 1;
  }
  return ov;
}

const kernels::ScanPlanOverrides& scan_plan_overrides_from_env() {
  static const kernels::ScanPlanOverrides ov = parse_scan_plan_overrides(
      [](const char* name) { return std::getenv(name); });
  return ov;
}

kernels::ScanPlan plan_scan(const kernels::ScanDims& dims, Device device,
                            const kernels::ScanPlanOverrides& overrides) {
  if (device == Device::CPU) return {};
#ifdef S6_WITH_CUDA
  return kernels::cuda::plan_scan(dims, overrides);
#else
  (void)dims, (void)overrides;
  S6_FAIL("selective_scan: a CUDA plan was asked for but s6 was built without CUDA");
#endif
}

}  // namespace s6
