// The scan plan: its overrides parsed from an environment (CPU), and on a GPU plan_scan's choices,
// its overrides and the launchers' refusal of a plan that is not plan_scan's.
#include <doctest/doctest.h>

#include <string>
#include <utility>
#include <vector>

#include "core/cuda_runtime.h"
#include "core/error.h"
#include "layers/scan_plan.h"
#ifdef S6_WITH_CUDA
#include "kernels/cuda/selective_scan.h"
#endif

using namespace s6;

#ifdef S6_WITH_CUDA
namespace kc = s6::kernels::cuda;
#endif

TEST_CASE("scan plan: overrides from the environment are parsed, bad values named") {
  // A fake environment, not the process's (that one is read once and kept).
  std::vector<std::pair<std::string, std::string>> env;
  auto lookup = [&](const char* name) -> const char* {
    for (const auto& [k, v] : env)
      if (k == name) return v.c_str();
    return nullptr;
  };
  kernels::ScanPlanOverrides ov = parse_scan_plan_overrides(lookup);
  CHECK(ov.chunk == 0);
  CHECK(ov.bwd_states == 0);
  CHECK(ov.fwd_blocks == 0);
  CHECK(ov.bwd_blocks == 0);
  CHECK_FALSE(ov.sync_staging);
  env = {{"S6_SCAN_CHUNK", "16"},
         {"S6_SCAN_BWD_NS", "8"},
         {"S6_SCAN_FWD_BLOCKS", "768"},
         {"S6_SCAN_BWD_BLOCKS", "3"},
         {"S6_SCAN_SYNC_STAGE", "1"}};
  ov = parse_scan_plan_overrides(lookup);
  CHECK(ov.chunk == 16);
  CHECK(ov.bwd_states == 8);
  CHECK(ov.fwd_blocks == 768);
  CHECK(ov.bwd_blocks == 3);
  CHECK(ov.sync_staging);
  for (const auto& [name, value] :
       std::vector<std::pair<std::string, std::string>>{{"S6_SCAN_CHUNK", "32"},
                                                        {"S6_SCAN_CHUNK", "64x"},
                                                        {"S6_SCAN_BWD_NS", "16"},
                                                        {"S6_SCAN_FWD_BLOCKS", "0"},
                                                        {"S6_SCAN_BWD_BLOCKS", ""},
                                                        {"S6_SCAN_SYNC_STAGE", "yes"}}) {
    env = {{name, value}};
    CAPTURE(name);
    CAPTURE(value);
    CHECK_THROWS_WITH_AS(parse_scan_plan_overrides(lookup), doctest::Contains(name.c_str()), Error);
  }
  // The CPU reference takes no plan: a CPU plan is the empty one.
  const kernels::ScanPlan cpu = plan_scan({2, 100, 8, 4}, Device::CPU, {});
  CHECK(cpu.chunk == 0);
}

TEST_CASE("cuda scan: plan_scan's choices, its overrides, and launchers refusing a plan not from it") {
  if (!s6::cuda::available()) {
    MESSAGE("SKIPPED: no CUDA device on this machine");
    return;
  }
#ifdef S6_WITH_CUDA
  // Small: one 32-channel block and one 64-step chunk cannot fill the GPU: 16-step chunks, 4
  // states per thread. Large (64 x 48 channel blocks, 32 chunks): 64-step chunks, 8 states per
  // thread, and a forward in one pass (grid target 1).
  const kernels::ScanPlan small = kc::plan_scan({1, 64, 32, 16});
  CHECK(small.chunk == 16);
  CHECK(small.bwd_states == 4);
  CHECK(small.fwd_blocks > 1);
  CHECK(small.bwd_blocks > 1);
  CHECK_FALSE(small.sync_staging);
  const kernels::ScanPlan large = kc::plan_scan({64, 2048, 1536, 16});
  CHECK(large.chunk == 64);
  CHECK(large.bwd_states == 8);
  CHECK(large.fwd_blocks == 1);
  const kernels::ScanPlan forced_plan = kc::plan_scan({64, 2048, 1536, 16}, [] {
    kernels::ScanPlanOverrides ov;
    ov.chunk = 16, ov.fwd_blocks = ov.bwd_blocks = 7, ov.bwd_states = 4, ov.sync_staging = true;
    return ov;
  }());
  CHECK(forced_plan.chunk == 16);
  CHECK(forced_plan.bwd_states == 4);
  CHECK(forced_plan.fwd_blocks == 7);
  CHECK(forced_plan.bwd_blocks == 7);
  CHECK(forced_plan.sync_staging);
  CHECK(kc::scan_chunk_states_floats({2, 100, 8, 4}, forced_plan) == 2 * 7 * 8 * 4);
  CHECK_THROWS_WITH_AS(kc::plan_scan({1, 64, 32, 16}, kernels::ScanPlanOverrides{32}),
                       doctest::Contains("chunk"), Error);
  kernels::ScanParams p;
  p.dims = {1, 8, 4, 4};
  CHECK_THROWS_WITH_AS(kc::selective_scan_fwd(p, kernels::ScanPlan{}),
                       doctest::Contains("take the plan from plan_scan"), Error);
#endif
}
