// The check before a checkpoint is written: a state with a non-finite tensor, or weights beyond
// train.max_weight_abs (an exploded run that is still finite), is never saved.
#pragma once
#include <string>

#include "trainer/checkpoint.h"

namespace s6::trainer {

// "" when every tensor of `state` is finite and every weight's magnitude is at most max_weight_abs
// (0 = no bound); otherwise the reason, naming the tensor. Moves the tensors to host float32 in
// place (the writer needs them there anyway).
std::string unsaveable_reason(CheckpointContents& state, double max_weight_abs);

}  // namespace s6::trainer
