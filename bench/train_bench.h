#pragma once
// `bench --train`: whole training steps at the TARGETS.md section-2 configs (eager and CUDA graph).
void run_train_bench();
