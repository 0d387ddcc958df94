// The CUDA selective scan's plan for one call (kernels/scan_params.h): the kernels' choice for the
// problem, with the S6_SCAN_* environment overrides (read in scan_plan.cpp and nowhere else) or
// the caller's.
#pragma once
#include <functional>

#include "core/dtype.h"
#include "kernels/scan_params.h"

namespace s6 {

// Overrides from `lookup` (a getenv): S6_SCAN_CHUNK=16|64, S6_SCAN_BWD_NS=4|8,
// S6_SCAN_FWD_BLOCKS=n, S6_SCAN_BWD_BLOCKS=n (n > 0), S6_SCAN_SYNC_STAGE=1 (or 0). Unset
// variables leave the choice to the plan; any other value is an error naming the variable.
kernels::ScanPlanOverrides parse_scan_plan_overrides(const std::function<const char*(const char*)>& lookup);

// The process environment's overrides, read once (the first scan) and kept: one process, one
// setting, as the measurements want.
const kernels::ScanPlanOverrides& scan_plan_overrides_from_env();

// The plan for `dims` on `device`: on CUDA the kernels' plan under `overrides`; on the CPU the
// default-constructed plan (the reference has no chunks and ignores it).
kernels::ScanPlan plan_scan(const kernels::ScanDims& dims, Device device,
                            const kernels::ScanPlanOverrides& overrides);

}  // namespace s6
