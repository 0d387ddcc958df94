// The tape: a flat, per-thread list of Nodes, one per differentiable op call, recorded only when
// some input requires grad; backward() walks it in reverse, without recursion.
#pragma once
#include <functional>
#include <initializer_list>
#include <memory>
#include <vector>

#include "core/tensor.h"

namespace s6::autograd {

using TensorList = std::vector<Tensor>;

// What a node's backward receives: one gradient per output (undefined where no gradient reached
// that output) and which inputs want a gradient. It returns one tensor per input (undefined where
// not needed), shaped like the input. Saved tensors live in the closure and die with it.
struct BackwardContext {
  const TensorList& grad_outputs;
  const std::vector<bool>& needs_input_grad;
};
using BackwardFn = std::function<TensorList(const BackwardContext&)>;

// How an input is routed: either to a slot (a tensor produced by an earlier node) or to a leaf.
struct InputEdge {
  std::shared_ptr<AutogradMeta> meta;  // null when the input needs no gradient
  Shape shape;
  DType dtype = DType::Float32;
  Device device = Device::CPU;
};

struct Node {
  const char* name = "";
  std::vector<InputEdge> inputs;
  std::vector<bool> needs_input_grad;
  std::vector<int64_t> output_slots;
  BackwardFn backward;
};

// True when grad mode is on and any of the tensors requires grad: then the op must record.
bool should_record(std::initializer_list<const Tensor*> inputs);
bool should_record(const TensorList& inputs);

// Appends a node; gives each output a fresh slot (so it now requires grad). Inputs may be
// undefined (optional arguments).
void record(const char* name, const TensorList& inputs, std::initializer_list<Tensor*> outputs,
            BackwardFn backward);
void record(const char* name, const TensorList& inputs, const std::vector<Tensor*>& outputs,
            BackwardFn backward);

// Called during backward() once a leaf's gradient for this pass is final: right after the last
// node on the tape that references the leaf (the earliest recorded one) has been processed, so
// .grad holds its final value (its kernels are enqueued on the current stream, maybe not run).
// It fires once per leaf that received a gradient in this pass, in the order of last use; a leaf
// no gradient reached never fires. Data parallelism starts gradient all-reduces from it.
using LeafReadyFn = std::function<void(const AutogradMeta&)>;

// Reverse pass from `root` (a scalar unless `grad_root` is given). Leaf gradients accumulate
// (+=) into .grad; the whole tape is consumed and its saved tensors released. `on_leaf_ready`,
// if given, is told when each leaf's gradient is final (see LeafReadyFn).
void backward(const Tensor& root, const Tensor& grad_root = Tensor(),
              const LeafReadyFn& on_leaf_ready = nullptr);

// Drops every recorded node (e.g. after a forward whose graph is not needed).
void clear_tape();
int64_t tape_size();

bool grad_enabled();

// Within its scope nothing is recorded (evaluation, optimizer updates).
class NoGradGuard {
 public:
  NoGradGuard();
  ~NoGradGuard();
  NoGradGuard(const NoGradGuard&) = delete;
  NoGradGuard& operator=(const NoGradGuard&) = delete;

 private:
  bool previous_;
};

}  // namespace s6::autograd
