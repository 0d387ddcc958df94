// The start of a run: the device and the startup table.
#pragma once
#include <cstdint>
#include <string>

#include "data/task.h"
#include "layers/mamba.h"
#include "trainer/config.h"

namespace s6::trainer {

// The device the `device` key selects: cpu, cuda (ConfigError when none is visible), or auto
// (CUDA when a GPU is visible).
Device resolve_device(const std::string& name);

// The table of what is about to run (device, model, task, optimizer, sizes), on stdout.
void print_startup(const TrainConfig& config, const std::string& config_path, const MambaLM& model,
                   Device device, const data::Task& task);

}  // namespace s6::trainer
