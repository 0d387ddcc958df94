// Recording and the reverse walk. Gradients of non-leaf tensors live in a slot vector that exists
// only during backward; each slot is freed as soon as its producing node has consumed it.
#include "autograd/tape.h"

#include <unordered_set>

#include "autograd/profile.h"

namespace s6::autograd {

namespace {

struct Tape {
  std::vector<Node> nodes;
  int64_t next_slot = 0;
};

thread_local Tape g_tape;
thread_local bool g_grad_enabled = true;

// The routing information of an input that needs a gradient, or an empty edge.
InputEdge edge_for(const Tensor& t) {
  InputEdge e;
  if (t.defined() && t.requires_grad()) {
    e.meta = t.autograd_meta();
    e.shape = t.shape();
    e.dtype = t.dtype();
    e.device = t.device();
  }
  return e;
}

bool is_live_slot(const AutogradMeta& m) {
  return m.slot >= 0 && m.tape_generation == current_tape_generation();
}

// True when no other tensor can see g's memory: its storage is held by g alone and g covers it.
bool sole_owner(const Tensor& g) {
  return g.storage().use_count() == 1 && g.offset() == 0 && g.is_contiguous() &&
         g.storage()->bytes == g.nbytes();
}

// A gradient handed to a slot may be the very tensor handed to another slot (an op returns one
// tensor for two inputs), so a slot sums into its buffer in place only once nothing else can see
// it (after its first sum, or when no other tensor holds it any more): add_ never writes into
// memory another slot can see.
void accumulate_slot(Tensor& into, bool& owned, const Tensor& g) {
  if (!into.defined()) {
    into = g;
    owned = false;
    return;
  }
  if (!owned && !sole_owner(into)) into = into.clone();
  owned = true;
  into.add_(g);
}

// Leaf gradients persist across backward calls and are summed into later, so they own their
// buffer: a gradient nothing else can see becomes the leaf's as it is (on CUDA a copy is one more
// graph node per parameter, the launch-bound small models' cost); any other is copied.
void accumulate_leaf(AutogradMeta& meta, Tensor& g) {
  if (!meta.grad || !meta.grad->defined()) {
    meta.grad = std::make_shared<Tensor>(sole_owner(g) ? std::move(g) : g.clone());
  } else {
    meta.grad->add_(g);
  }
}

// For each node, the leaves whose last use in the reverse walk is that node (the earliest node
// referencing them), in input order. Built only when a caller asked for leaf-ready callbacks.
std::vector<std::vector<AutogradMeta*>> leaves_by_last_use(const std::vector<Node>& nodes) {
  std::vector<std::vector<AutogradMeta*>> by_node(nodes.size());
  std::unordered_set<const AutogradMeta*> seen;
  for (size_t k = 0; k < nodes.size(); ++k)
    for (const InputEdge& edge : nodes[k].inputs)
      if (edge.meta && !is_live_slot(*edge.meta) && seen.insert(edge.meta.get()).second)
        by_node[k].push_back(edge.meta.get());
  return by_node;
}

}  // namespace

bool grad_enabled() { return g_grad_enabled; }

NoGradGuard::NoGradGuard() : previous_(g_grad_enabled) { g_grad_enabled = false; }
NoGradGuard::~NoGradGuard() { g_grad_enabled = previous_; }

bool should_record(std::initializer_list<const Tensor*> inputs) {
  if (!g_grad_enabled) return false;
  for (const Tensor* t : inputs)
    if (t && t->defined() && t->requires_grad()) return true;
  return false;
}

bool should_record(const TensorList& inputs) {
  if (!g_grad_enabled) return false;
  for (const Tensor& t : inputs)
    if (t.defined() && t.requires_grad()) return true;
  return false;
}

void record(const char* name, const TensorList& inputs, const std::vector<Tensor*>& outputs,
            BackwardFn backward) {
  Node node;
  node.name = name;
  node.inputs.reserve(inputs.size());
  for (const Tensor& t : inputs) {
    node.inputs.push_back(edge_for(t));
    node.needs_input_grad.push_back(node.inputs.back().meta != nullptr);
  }
  for (Tensor* out : outputs) {
    // A fresh meta: the output is a new autograd identity even if it aliases an input's storage.
    out->reset_autograd_meta();
    AutogradMeta& m = out->ensure_autograd_meta();
    m.slot = g_tape.next_slot++;
    m.tape_generation = current_tape_generation();
    node.output_slots.push_back(m.slot);
  }
  node.backward = std::move(backward);
  g_tape.nodes.push_back(std::move(node));
  profile::mark("fwd", name);
}

void record(const char* name, const TensorList& inputs, std::initializer_list<Tensor*> outputs,
            BackwardFn backward) {
  record(name, inputs, std::vector<Tensor*>(outputs), std::move(backward));
}

void clear_tape() {
  g_tape.nodes.clear();
  g_tape.next_slot = 0;
  advance_tape_generation();
}

int64_t tape_size() { return static_cast<int64_t>(g_tape.nodes.size()); }

void backward(const Tensor& root, const Tensor& grad_root, const LeafReadyFn& on_leaf_ready) {
  S6_CHECK(root.defined(), "backward: the root tensor is undefined");
  S6_CHECK(root.requires_grad(),
           "backward: {} does not require grad (no recorded op depends on a parameter, or it was "
           "computed under NoGradGuard or on an earlier, consumed tape)",
           root.describe());
  Tensor seed = grad_root;
  if (!seed.defined()) {
    S6_CHECK(root.numel() == 1, "backward: root {} is not a scalar; pass its gradient", root.describe());
    seed = Tensor::full(root.shape(), 1.0, root.dtype(), root.device());
  }
  S6_CHECK(seed.shape() == root.shape(), "backward: gradient {} does not match root {}", seed.describe(),
           root.describe());

  const AutogradMeta& root_meta = *root.autograd_meta();
  if (!is_live_slot(root_meta)) {  // the root is itself a leaf
    accumulate_leaf(*root.autograd_meta(), seed);
    clear_tape();
    if (on_leaf_ready) on_leaf_ready(*root.autograd_meta());
    return;
  }

  std::vector<Tensor> slot_grads(static_cast<size_t>(g_tape.next_slot));
  std::vector<bool> slot_owned(slot_grads.size(), false);
  slot_grads[root_meta.slot] = seed;
  TensorList grad_outputs;
  std::vector<std::vector<AutogradMeta*>> ready_after;  // leaves final once node k has run
  std::unordered_set<const AutogradMeta*> reached;      // leaves that received a gradient
  if (on_leaf_ready) ready_after = leaves_by_last_use(g_tape.nodes);
  for (size_t k = g_tape.nodes.size(); k-- > 0;) {
    Node& node = g_tape.nodes[k];
    grad_outputs.clear();
    bool any = false;
    for (int64_t slot : node.output_slots) {
      grad_outputs.push_back(std::move(slot_grads[slot]));
      any = any || grad_outputs.back().defined();
    }
    if (any) {
      TensorList input_grads = node.backward(BackwardContext{grad_outputs, node.needs_input_grad});
      S6_CHECK(input_grads.size() == node.inputs.size(), "backward of {} returned {} gradients for {} inputs",
               node.name, input_grads.size(), node.inputs.size());
      for (size_t i = 0; i < node.inputs.size(); ++i) {
        const InputEdge& edge = node.inputs[i];
        Tensor& g = input_grads[i];
        if (!edge.meta || !g.defined()) continue;
        S6_CHECK(g.shape() == edge.shape && g.dtype() == edge.dtype && g.device() == edge.device,
                 "backward of {}: gradient {} for input {} does not match {}{} {}", node.name, g.describe(), i,
                 dtype_name(edge.dtype), shape_str(edge.shape), device_name(edge.device));
        if (is_live_slot(*edge.meta)) {
          int64_t slot = edge.meta->slot;
          bool owned = slot_owned[slot];
          accumulate_slot(slot_grads[slot], owned, g);
          slot_owned[slot] = owned;
        } else if (edge.meta->requires_grad) {
          accumulate_leaf(*edge.meta, g);
          if (on_leaf_ready) reached.insert(edge.meta.get());
        }
      }
    }
    node.backward = nullptr;  // releases the saved tensors now, not at the end
    node.inputs.clear();
    if (any) profile::mark("bwd", node.name);
    if (on_leaf_ready)
      for (AutogradMeta* leaf : ready_after[k])
        if (reached.count(leaf)) on_leaf_ready(*leaf);
  }
  clear_tape();
}

}  // namespace s6::autograd
