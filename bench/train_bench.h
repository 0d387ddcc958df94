#pragma once
// `bench --train`: whole training steps at the docs/performance.md section-2 configs (eager and CUDA graph).
// `only`, when not empty, keeps the configs whose name contains it ("induction", "selective", "LM").
#include <string>
void run_train_bench(const std::string& only = "");
