// CUDA selective scan vs the CPU reference (float64 on the same, bf16-rounded where relevant,
// inputs): forward output, final state and every gradient, float32 and bfloat16, awkward sizes;
// poisoned (NaN) outputs and workspaces; bitwise determinism of the backward; the single-token
// step; the differentiable op on CUDA tensors under several plans. Tests steer the kernels with
// plans (ScanPlanOverrides), never the environment. Skips without a GPU.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "autograd/tape.h"
#include "core/cuda_runtime.h"
#include "core/tensor.h"
#include "kernels/cpu/selective_scan.h"
#include "layers/ops.h"
#ifdef S6_WITH_CUDA
#include "kernels/cuda/selective_scan.h"
#endif

using namespace s6;

#ifdef S6_WITH_CUDA
namespace {

namespace kc = s6::kernels::cuda;
using kernels::ScanPlanOverrides;

// Plan overrides from a few fields (0 leaves one to the plan).
ScanPlanOverrides forced(int64_t chunk, int64_t blocks = 0, int bwd_states = 0, bool sync_staging = false) {
  ScanPlanOverrides ov;
  ov.chunk = chunk;
  ov.fwd_blocks = ov.bwd_blocks = blocks;
  ov.bwd_states = bwd_states;
  ov.sync_staging = sync_staging;
  return ov;
}

struct ScanCase {
  int64_t batch, length, dim, dstate;
  bool has_z, has_D, has_bias, softplus, has_init;
  std::string describe() const {
    return "batch " + std::to_string(batch) + " L " + std::to_string(length) + " dim " + std::to_string(dim) +
           " N " + std::to_string(dstate) + (has_z ? " z" : "") + (has_D ? " D" : "") +
           (has_bias ? " bias" : "") + (softplus ? " softplus" : "") + (has_init ? " init" : "");
  }
};

// Host inputs (float, already rounded to bf16 where the kernel reads bf16).
struct HostInputs {
  std::vector<float> u, delta, A, B, C, D, z, bias, init, dout;
};

float round_bf16(float x) { return static_cast<float>(BFloat16(x)); }

HostInputs make_inputs(const ScanCase& c, bool bf16, uint32_t seed) {
  std::mt19937 gen(seed);
  auto fill = [&](int64_t n, float lo, float hi, bool io) {
    std::uniform_real_distribution<float> dist(lo, hi);
    std::vector<float> v(static_cast<size_t>(n));
    for (auto& x : v) {
      x = dist(gen);
      if (io && bf16) x = round_bf16(x);
    }
    return v;
  };
  const int64_t BLD = c.batch * c.length * c.dim, BLN = c.batch * c.length * c.dstate;
  HostInputs in;
  in.u = fill(BLD, -1.f, 1.f, true);
  in.delta = c.softplus ? fill(BLD, -3.f, 0.5f, true) : fill(BLD, 0.01f, 0.6f, true);
  in.A = fill(c.dim * c.dstate, -3.f, -0.1f, false);
  in.B = fill(BLN, -1.f, 1.f, true);
  in.C = fill(BLN, -1.f, 1.f, true);
  if (c.has_D) in.D = fill(c.dim, -1.f, 1.f, false);
  if (c.has_z) in.z = fill(BLD, -2.f, 2.f, true);
  if (c.has_bias) in.bias = fill(c.dim, -1.f, 0.5f, false);
  if (c.has_init) in.init = fill(c.batch * c.dim * c.dstate, -1.f, 1.f, false);
  in.dout = fill(BLD, -1.f, 1.f, true);
  return in;
}

struct Results {
  std::vector<float> out, final_state, du, ddelta, dA, dB, dC, dD, dz, dbias;
};

std::vector<double> to_double(const std::vector<float>& v) { return {v.begin(), v.end()}; }
const double* ptr(const std::vector<double>& v) { return v.empty() ? nullptr : v.data(); }

Results cpu_reference(const ScanCase& c, const HostInputs& in) {
  const int64_t BLD = c.batch * c.length * c.dim, BLN = c.batch * c.length * c.dstate;
  auto u = to_double(in.u), delta = to_double(in.delta), A = to_double(in.A), B = to_double(in.B),
       C = to_double(in.C), D = to_double(in.D), z = to_double(in.z), bias = to_double(in.bias),
       init = to_double(in.init), dout = to_double(in.dout);
  kernels::ScanGradParams p;
  p.dims = {c.batch, c.length, c.dim, c.dstate};
  p.dtype = kernels::ScanDType::Float64;
  p.delta_softplus = c.softplus;
  p.u = u.data(), p.delta = delta.data(), p.A = A.data(), p.B = B.data(), p.C = C.data();
  p.D = ptr(D), p.z = ptr(z), p.delta_bias = ptr(bias), p.initial_state = ptr(init);
  std::vector<double> out(BLD), fs(c.batch * c.dim * c.dstate), du(BLD), dd(BLD), dA(c.dim * c.dstate), dB(BLN),
      dC(BLN), dD(c.dim), dz(BLD), db(c.dim);
  p.out = out.data(), p.final_state = fs.data();
  kernels::cpu::selective_scan_fwd<double>(p);
  p.dout = dout.data(), p.du = du.data(), p.ddelta = dd.data(), p.dA = dA.data();
  p.dB = dB.data(), p.dC = dC.data(), p.dD = dD.data(), p.dz = c.has_z ? dz.data() : nullptr;
  p.ddelta_bias = db.data();
  kernels::cpu::selective_scan_bwd<double>(p);
  auto f = [](const std::vector<double>& v) { return std::vector<float>(v.begin(), v.end()); };
  Results r;
  r.out = f(out), r.final_state = f(fs), r.du = f(du), r.ddelta = f(dd), r.dA = f(dA);
  r.dB = f(dB), r.dC = f(dC), r.dD = f(dD), r.dbias = f(db);
  if (c.has_z) r.dz = f(dz);
  return r;
}

// Device tensor from host floats, in dtype (exact: the values are already representable).
Tensor dev(const std::vector<float>& v, DType dtype) {
  if (v.empty()) return Tensor();
  return Tensor::from_vector<float>(v, {static_cast<int64_t>(v.size())}).to(Device::CUDA).to(dtype);
}
Tensor poisoned(int64_t n, DType dtype) {
  Tensor t = Tensor::empty({std::max<int64_t>(n, 1)}, dtype, Device::CUDA);
  t.fill_(NAN);
  return t;
}
const void* vp(const Tensor& t) { return t.defined() ? t.data_ptr() : nullptr; }
std::vector<float> host(const Tensor& t, int64_t n) {
  std::vector<float> v = t.to_vector<float>();
  v.resize(static_cast<size_t>(n));
  return v;
}

// Runs the CUDA forward and backward under plan_scan's plan with `ov`, with NaN-poisoned outputs
// and workspaces. bc_lead > 0 passes B and C as column blocks [bc_lead, bc_lead + N) and
// [bc_lead + N, bc_lead + 2N) of one (batch * length, bc_lead + 2N) matrix (x_proj's layout) with
// that row stride.
Results cuda_run(const ScanCase& c, const HostInputs& in, bool bf16,
                 std::vector<std::vector<uint8_t>>* raw_grads = nullptr, int64_t bc_lead = 0,
                 const ScanPlanOverrides& ov = {}) {
  const DType io = bf16 ? DType::BFloat16 : DType::Float32;
  const int64_t BLD = c.batch * c.length * c.dim, BLN = c.batch * c.length * c.dstate;
  const int64_t DN = c.dim * c.dstate, BDN = c.batch * DN;
  Tensor u = dev(in.u, io), delta = dev(in.delta, io), A = dev(in.A, DType::Float32), B = dev(in.B, io),
         C = dev(in.C, io), D = dev(in.D, DType::Float32), z = dev(in.z, io),
         bias = dev(in.bias, DType::Float32), init = dev(in.init, DType::Float32), dout = dev(in.dout, io);
  const int64_t ld = bc_lead ? bc_lead + 2 * c.dstate : 0;
  if (bc_lead) {
    const int64_t rows = c.batch * c.length, N = c.dstate;
    std::vector<float> wide(static_cast<size_t>(rows * ld), NAN);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t n = 0; n < N; ++n) {
        wide[r * ld + bc_lead + n] = in.B[r * N + n];
        wide[r * ld + bc_lead + N + n] = in.C[r * N + n];
      }
    B = C = dev(wide, io);
  }
  auto bc_ptr = [&](const Tensor& t, int64_t at) -> const void* {
    return static_cast<const char*>(t.data_ptr()) + at * (bf16 ? 2 : 4);
  };
  const void *Bp = bc_ptr(B, bc_lead), *Cp = bc_ptr(C, bc_lead ? bc_lead + c.dstate : 0);
  const kernels::ScanDims dims{c.batch, c.length, c.dim, c.dstate};
  const kernels::ScanPlan plan = kc::plan_scan(dims, ov);
  Tensor out = poisoned(BLD, io), fs = poisoned(BDN, DType::Float32);
  Tensor states = poisoned(kc::scan_chunk_states_floats(dims, plan), DType::Float32);
  Tensor ws = poisoned(kc::scan_fwd_workspace_floats(dims, plan), DType::Float32);
  kernels::ScanGradParams p;
  p.dims = dims;
  p.dtype = bf16 ? kernels::ScanDType::BFloat16 : kernels::ScanDType::Float32;
  p.delta_softplus = c.softplus;
  p.bc_row_stride = ld;
  p.u = u.data_ptr(), p.delta = delta.data_ptr(), p.A = A.data_ptr(), p.B = Bp, p.C = Cp;
  p.D = vp(D), p.z = vp(z), p.delta_bias = vp(bias), p.initial_state = vp(init);
  p.out = out.data_ptr(), p.final_state = fs.data_ptr();
  p.chunk_states = states.data<float>(), p.workspace = ws.data<float>();
  p.stream = cuda::current_stream();
  kc::selective_scan_fwd(p, plan);
  Tensor du = poisoned(BLD, io), dd = poisoned(BLD, io), dA = poisoned(DN, DType::Float32),
         dB = poisoned(BLN, io), dC = poisoned(BLN, io), dD = poisoned(c.dim, DType::Float32),
         dz = poisoned(BLD, io), db = poisoned(c.dim, DType::Float32);
  Tensor bws = poisoned(kc::scan_bwd_workspace_floats(dims, plan), DType::Float32);
  p.out = p.final_state = nullptr;
  p.workspace = bws.data<float>();
  p.dout = dout.data_ptr(), p.du = du.data_ptr(), p.ddelta = dd.data_ptr(), p.dA = dA.data_ptr();
  p.dB = dB.data_ptr(), p.dC = dC.data_ptr(), p.dD = dD.data_ptr();
  p.dz = c.has_z ? dz.data_ptr() : nullptr, p.ddelta_bias = db.data_ptr();
  kc::selective_scan_bwd(p, plan);
  cuda::synchronize();
  Results r;
  r.out = host(out, BLD), r.final_state = host(fs, BDN), r.du = host(du, BLD);
  r.ddelta = host(dd, BLD), r.dA = host(dA, DN), r.dB = host(dB, BLN), r.dC = host(dC, BLN);
  r.dD = host(dD, c.dim), r.dbias = host(db, c.dim);
  if (c.has_z) r.dz = host(dz, BLD);
  if (raw_grads) {
    raw_grads->clear();
    for (const Tensor* t : {&du, &dd, &dA, &dB, &dC, &dD, &dz, &db}) {
      Tensor h = t->to(Device::CPU);
      const auto* p = static_cast<const uint8_t*>(h.data_ptr());
      raw_grads->emplace_back(p, p + h.nbytes());
    }
  }
  return r;
}

// The gradients' raw bytes of two runs (cuda_run's raw_grads) are identical.
// Float outputs compared by their bits (== would fail on NaN: without softplus, negative dt can
// make a state overflow).
bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

void check_same_bits(const std::vector<std::vector<uint8_t>>& a, const std::vector<std::vector<uint8_t>>& b) {
  REQUIRE(a.size() == b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    CAPTURE(i);
    CHECK(a[i] == b[i]);
  }
}

// Two runs of one awkward case give the same bits in every gradient.
void check_deterministic(bool bf16, const ScanPlanOverrides& ov = {}) {
  const ScanCase c{3, 1000, 200, 16, true, true, true, true, true};
  const HostInputs in = make_inputs(c, bf16, 7);
  std::vector<std::vector<uint8_t>> first, second;
  cuda_run(c, in, bf16, &first, 0, ov);
  cuda_run(c, in, bf16, &second, 0, ov);
  check_same_bits(first, second);
}

double rel_err(const std::vector<float>& got, const std::vector<float>& ref) {
  REQUIRE(got.size() == ref.size());
  double num = 0, den = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double e = double(got[i]) - double(ref[i]);
    num += e * e;
    den += double(ref[i]) * double(ref[i]);
  }
  if (std::isnan(num)) return NAN;
  return den > 0 ? std::sqrt(num / den) : std::sqrt(num);
}

// bc_lead > 0: B and C as column blocks (cuda_run).
void compare(const ScanCase& c, bool bf16, uint32_t seed, int64_t bc_lead = 0,
             const ScanPlanOverrides& ov = {}) {
  const double tol = bf16 ? 2e-2 : 1e-4;
  HostInputs in = make_inputs(c, bf16, seed);
  Results ref = cpu_reference(c, in);
  Results got = cuda_run(c, in, bf16, nullptr, bc_lead, ov);
  INFO(c.describe() << (bf16 ? " bf16" : " fp32") << (bc_lead ? ", B/C column blocks" : ""));
  CHECK(rel_err(got.out, ref.out) < tol);
  CHECK(rel_err(got.final_state, ref.final_state) < tol);
  CHECK(rel_err(got.du, ref.du) < tol);
  CHECK(rel_err(got.ddelta, ref.ddelta) < tol);
  CHECK(rel_err(got.dA, ref.dA) < tol);
  CHECK(rel_err(got.dB, ref.dB) < tol);
  CHECK(rel_err(got.dC, ref.dC) < tol);
  if (c.has_D) CHECK(rel_err(got.dD, ref.dD) < tol);
  if (c.has_bias) CHECK(rel_err(got.dbias, ref.dbias) < tol);
  if (c.has_z) CHECK(rel_err(got.dz, ref.dz) < tol);
}

std::vector<ScanCase> awkward_cases() {
  const int64_t chunk = kc::kScanChunkLength;
  std::vector<ScanCase> cases;
  int k = 0;
  for (int64_t L : {int64_t(1), int64_t(17), chunk - 1, chunk, chunk + 1, int64_t(131), int64_t(1027)}) {
    for (int64_t N : {1, 16, 64}) {
      for (bool full : {true, false}) {
        const int64_t batch = (k++ % 3 == 0) ? 1 : 2;
        cases.push_back({batch, L, 37, N, full, full, full, full, full});
      }
    }
  }
  cases.push_back({2, 200, 130, 16, true, true, true, true, false});  // several channel blocks
  cases.push_back({1, 65539, 8, 16, true, true, true, true, true});   // 2^16 + 3: 1025 chunks
  cases.push_back({2, 67, 5, 256, true, true, true, true, true});     // dstate 256
  cases.push_back({1, 70, 9, 5, false, true, false, true, false});    // dstate not a power of 2
  return cases;
}

}  // namespace
#endif

TEST_CASE("cuda scan: forward, final state and gradients match the CPU reference (float32)") {
  if (!s6::cuda::available()) {
    MESSAGE("SKIPPED: no CUDA device on this machine");
    return;
  }
#ifdef S6_WITH_CUDA
  uint32_t seed = 100;
  for (const ScanCase& c : awkward_cases()) compare(c, false, seed++);
#endif
}

TEST_CASE("cuda scan: forward, final state and gradients match the CPU reference (bfloat16)") {
  if (!s6::cuda::available()) {
    MESSAGE("SKIPPED: no CUDA device on this machine");
    return;
  }
#ifdef S6_WITH_CUDA
  uint32_t seed = 500;
  for (const ScanCase& c : awkward_cases()) compare(c, true, seed++);
#endif
}

TEST_CASE("cuda scan: super-chunks (blocks walking several chunks) match the CPU reference") {
  if (!s6::cuda::available()) {
    MESSAGE("SKIPPED: no CUDA device on this machine");
    return;
  }
#ifdef S6_WITH_CUDA
  // The launchers group chunks into super-chunks walked by one block; the plan's target grid size
  // forces one super-chunk (1) or a few with a partial last one (3, 5).
  uint32_t seed = 900;
  for (int64_t target : {1, 3, 5}) {
    const ScanPlanOverrides ov = forced(0, target);
    INFO("target blocks " << target);
    for (bool bf16 : {false, true}) {
      compare({1, 1027, 37, 16, true, true, true, true, true}, bf16, seed++, 0, ov);
      compare({2, 700, 37, 1, false, false, true, true, false}, bf16, seed++, 0, ov);
      compare({1, 333, 9, 64, true, true, true, true, true}, bf16, seed++, 0, ov);
      compare({1, 4099, 8, 5, true, true, false, true, true}, bf16, seed++, 0, ov);
    }
  }
#endif
}

TEST_CASE("cuda scan: 16- and 64-step chunks both match the CPU reference") {
  if (!s6::cuda::available()) {
    MESSAGE("SKIPPED: no CUDA device on this machine");
    return;
  }
#ifdef S6_WITH_CUDA
  // The plan forces 16- or 64-step chunks (plan_scan picks one by problem size); the block targets
  // force super-chunks (3) or one block per chunk (100000).
  uint32_t seed = 1300;
  for (int64_t chunk : {16, 64}) {
    for (int64_t target : {3, 100000}) {
      const ScanPlanOverrides ov = forced(chunk, target);
      INFO("chunk " << chunk << ", target blocks " << target);
      for (bool bf16 : {false, true}) {
        compare({2, 17, 37, 16, true, true, true, true, true}, bf16, seed++, 0, ov);
        compare({1, 211, 45, 12, true, true, true, true, false}, bf16, seed++, 0, ov);
        compare({2, 80, 37, 16, false, false, true, true, true}, bf16, seed++, 0, ov);
        compare({1, 16, 9, 7, true, true, false, true, true}, bf16, seed++, 0, ov);
        compare({1, 300, 20, 64, true, true, true, true, true}, bf16, seed++, 0, ov);
        compare({2, 500, 64, 16, true, true, true, true, true}, bf16, seed++, 0, ov);  // async staging
      }
    }
  }
#endif
}

TEST_CASE("cuda scan: B and C read in place as column blocks of one matrix give the same bits") {
  if (!s6::cuda::available()) {
    MESSAGE("SKIPPED: no CUDA device on this machine");
    return;
  }
#ifdef S6_WITH_CUDA
  uint32_t seed = 1700;
  for (bool bf16 : {false, true}) {
    for (const ScanCase& c : {ScanCase{2, 200, 37, 16, true, true, true, true, true},
                              ScanCase{1, 1027, 130, 16, true, true, true, true, false},
                              ScanCase{3, 70, 9, 5, false, true, false, true, true}}) {
      INFO(c.describe() << (bf16 ? " bf16" : " fp32"));
      HostInputs in = make_inputs(c, bf16, seed++);
      std::vector<std::vector<uint8_t>> plain, strided;
      const Results a = cuda_run(c, in, bf16, &plain);
      const Results b = cuda_run(c, in, bf16, &strided, /*bc_lead=*/4);
      CHECK(a.out == b.out);
      CHECK(a.final_state == b.final_state);
      check_same_bits(plain, strided);
    }
  }
#endif
}

TEST_CASE("cuda scan: the backward's asynchronous staging gives the bits of synchronous staging") {
  if (!s6::cuda::available()) {
    MESSAGE("SKIPPED: no CUDA device on this machine");
    return;
  }
#ifdef S6_WITH_CUDA
  // Asynchronous staging needs dim a multiple of 16 bytes of elements; the plan's sync_staging turns
  // it off. B and C both contiguous and as column blocks (row stride 36); 64-step chunks, so
  // several sub-chunks per chunk.
  uint32_t seed = 1900;
  for (bool bf16 : {false, true}) {
    for (const ScanCase& c : {ScanCase{2, 1000, 64, 16, true, true, true, true, true},
                              ScanCase{1, 333, 136, 16, true, true, true, true, false},
                              ScanCase{3, 300, 32, 5, false, true, false, true, true},
                              ScanCase{1, 200, 64, 64, true, true, true, true, true}}) {
      for (int64_t lead : {int64_t(0), int64_t(4)}) {
        INFO(c.describe() << (bf16 ? " bf16" : " fp32") << ", B/C lead " << lead);
        HostInputs in = make_inputs(c, bf16, seed++);
        std::vector<std::vector<uint8_t>> async_bits, sync_bits;
        const Results a = cuda_run(c, in, bf16, &async_bits, lead, forced(64));
        const Results b = cuda_run(c, in, bf16, &sync_bits, lead, forced(64, 0, 0, true));
        CHECK(same_bits(a.out, b.out));
        check_same_bits(async_bits, sync_bits);
        if (lead == 0) compare(c, bf16, seed++);  // and against the CPU reference
      }
    }
  }
#endif
}

TEST_CASE("cuda scan: the backward with 4 and 8 states per thread matches the CPU reference") {
  if (!s6::cuda::available()) {
    MESSAGE("SKIPPED: no CUDA device on this machine");
    return;
  }
#ifdef S6_WITH_CUDA
  // The plan's bwd_states 4|8 runs B3 at dstate 9..16 with 4 or 8 states per thread (32 or 64
  // channels per block; by default 8 with 64-step chunks, 4 with 16-step ones; 4 reverses each
  // sub-chunk in two 8-step halves, 8 in four 4-step pieces). dstate 16 and 11 (padded);
  // L 1000 and 77 end in partial chunks and sub-chunks; dim 40 (one partial block), 130 (a 2-channel last
  // block, synchronous staging) and 200; 16-step chunks (every piece checkpoint recomputed) and 64-step ones
  // (from the sweep); block target 3 (blocks walk several chunks) or one block per chunk; B and C also as
  // column blocks (row stride 36 or 26).
  uint32_t seed = 2500;
  for (int ns : {4, 8}) {
    for (int64_t chunk : {16, 64}) {
      for (int64_t target : {3, 100000}) {
        ScanPlanOverrides ov = forced(chunk, 0, ns);
        ov.bwd_blocks = target;
        INFO("states per thread " << ns << ", chunk " << chunk << ", target blocks " << target);
        for (bool bf16 : {false, true}) {
          compare({2, 1000, 40, 16, true, true, true, true, true}, bf16, seed++, 0, ov);
          compare({1, 77, 130, 11, false, true, false, true, false}, bf16, seed++, 0, ov);
          compare({3, 1000, 200, 16, true, false, true, true, true}, bf16, seed++, /*bc_lead=*/4, ov);
          compare({2, 77, 40, 11, true, true, true, true, false}, bf16, seed++, /*bc_lead=*/4, ov);
        }
      }
    }
    // Bitwise the same run to run.
    for (int64_t chunk : {16, 64}) {
      for (bool bf16 : {false, true}) {
        INFO("states per thread " << ns << ", chunk " << chunk << (bf16 ? " bf16" : " fp32"));
        check_deterministic(bf16, forced(chunk, 0, ns));
      }
    }
  }
#endif
}

TEST_CASE("cuda scan: the backward is bitwise deterministic") {
  if (!s6::cuda::available()) {
    MESSAGE("SKIPPED: no CUDA device on this machine");
    return;
  }
#ifdef S6_WITH_CUDA
  for (bool bf16 : {false, true}) check_deterministic(bf16);
#endif
}

TEST_CASE("cuda scan: the single-token step reproduces the sequence scan") {
  if (!s6::cuda::available()) {
    MESSAGE("SKIPPED: no CUDA device on this machine");
    return;
  }
#ifdef S6_WITH_CUDA
  for (bool bf16 : {false, true}) {
    for (int64_t N : {1, 16, 64}) {
      ScanCase c{2, 9, 37, N, true, true, true, true, true};
      CAPTURE(N);
      CAPTURE(bf16);
      HostInputs in = make_inputs(c, bf16, 11);
      Results seq = cuda_run(c, in, bf16);
      const DType io = bf16 ? DType::BFloat16 : DType::Float32;
      const kernels::ScanDType kd = bf16 ? kernels::ScanDType::BFloat16 : kernels::ScanDType::Float32;
      Tensor state = dev(in.init, DType::Float32), A = dev(in.A, DType::Float32), D = dev(in.D, DType::Float32),
             bias = dev(in.bias, DType::Float32);
      std::vector<float> outs(seq.out.size());
      const int64_t BD = c.batch * c.dim, BN = c.batch * c.dstate;
      for (int64_t t = 0; t < c.length; ++t) {
        // Gather token t: (batch, dim) and (batch, dstate).
        std::vector<float> u(BD), delta(BD), z(BD), B(BN), C(BN);
        for (int64_t b = 0; b < c.batch; ++b) {
          for (int64_t d = 0; d < c.dim; ++d) {
            const int64_t i = (b * c.length + t) * c.dim + d;
            u[b * c.dim + d] = in.u[i], delta[b * c.dim + d] = in.delta[i], z[b * c.dim + d] = in.z[i];
          }
          for (int64_t n = 0; n < c.dstate; ++n) {
            const int64_t i = (b * c.length + t) * c.dstate + n;
            B[b * c.dstate + n] = in.B[i], C[b * c.dstate + n] = in.C[i];
          }
        }
        Tensor ut = dev(u, io), dt = dev(delta, io), zt = dev(z, io), Bt = dev(B, io), Ct = dev(C, io);
        Tensor out = poisoned(BD, io);
        kc::selective_scan_step(out.data_ptr(), state.data<float>(), ut.data_ptr(), dt.data_ptr(),
                                A.data<float>(), Bt.data_ptr(), Ct.data_ptr(), D.data<float>(), zt.data_ptr(),
                                bias.data<float>(), true, c.batch, c.dim, c.dstate, kd, cuda::current_stream());
        std::vector<float> o = host(out, BD);
        for (int64_t b = 0; b < c.batch; ++b)
          for (int64_t d = 0; d < c.dim; ++d) outs[(b * c.length + t) * c.dim + d] = o[b * c.dim + d];
      }
      const double tol = bf16 ? 1e-2 : 1e-5;
      CHECK(rel_err(outs, seq.out) < tol);
      CHECK(rel_err(host(state, c.batch * c.dim * c.dstate), seq.final_state) < 1e-5);
    }
  }
#endif
}

TEST_CASE("cuda scan: the differentiable op on CUDA tensors matches the CPU op, under any plan") {
  if (!s6::cuda::available()) {
    MESSAGE("SKIPPED: no CUDA device on this machine");
    return;
  }
#ifdef S6_WITH_CUDA
  // The op plans once per call and its node keeps the plan (and the chunk states it shaped) for
  // the backward: the problem's own plan, and forced 16- and 64-step chunks.
  const ScanPlanOverrides o16 = forced(16, 3, 4), o64 = forced(64, 0, 8);
  for (const ScanPlanOverrides* plan : {static_cast<const ScanPlanOverrides*>(nullptr), &o16, &o64})
    for (bool bf16 : {false, true}) {
      CAPTURE(bf16);
      CAPTURE((plan ? plan->chunk : 0));
      ScanCase c{2, 150, 40, 16, true, true, true, true, true};
      HostInputs in = make_inputs(c, bf16, 21);
      const int64_t Bt = c.batch, L = c.length, Dm = c.dim, N = c.dstate;
      auto make = [&](Device device) {
        const DType io = device == Device::CUDA && bf16 ? DType::BFloat16 : DType::Float32;
        auto t = [&](const std::vector<float>& v, Shape s, DType dt) {
          return Tensor::from_vector<float>(v, s).to(device).to(dt).requires_grad_();
        };
        return std::vector<Tensor>{t(in.u, {Bt, L, Dm}, io),         t(in.delta, {Bt, L, Dm}, io),
                                   t(in.A, {Dm, N}, DType::Float32), t(in.B, {Bt, L, N}, io),
                                   t(in.C, {Bt, L, N}, io),          t(in.D, {Dm}, DType::Float32),
                                   t(in.z, {Bt, L, Dm}, io),         t(in.bias, {Dm}, DType::Float32)};
      };
      std::vector<std::vector<float>> grads[2];
      std::vector<float> outs[2], finals[2];
      int k = 0;
      for (Device device : {Device::CPU, Device::CUDA}) {
        std::vector<Tensor> x = make(device);
        ScanOptions opt;
        opt.initial_state = Tensor::from_vector<float>(in.init, {Bt, Dm, N}).to(device);
        opt.return_final_state = true;
        opt.plan_overrides = plan;
        ScanResult r = selective_scan_ex(x[0], x[1], x[2], x[3], x[4], x[5], x[6], x[7], opt);
        Tensor g = Tensor::from_vector<float>(in.dout, {Bt, L, Dm}).to(device).to(r.out.dtype());
        autograd::backward(r.out, g);
        outs[k] = r.out.to_vector<float>();
        finals[k] = r.final_state.to_vector<float>();
        for (const Tensor& t : x) grads[k].push_back(t.grad().to_vector<float>());
        ++k;
      }
      const double tol = bf16 ? 2e-2 : 1e-4;
      CHECK(rel_err(outs[1], outs[0]) < tol);
      CHECK(rel_err(finals[1], finals[0]) < tol);
      for (size_t i = 0; i < grads[0].size(); ++i) {
        CAPTURE(i);
        CHECK(rel_err(grads[1][i], grads[0][i]) < tol);
      }
    }
  // A, D, delta_bias and the state stay float32 with bfloat16 inputs.
  Tensor u = Tensor::zeros({1, 4, 2}, DType::BFloat16, Device::CUDA);
  Tensor B = Tensor::zeros({1, 4, 3}, DType::BFloat16, Device::CUDA);
  Tensor A = Tensor::zeros({2, 3}, DType::BFloat16, Device::CUDA);
  CHECK_THROWS_WITH_AS(selective_scan(u, u, A, B, B, Tensor(), Tensor(), Tensor()),
                       doctest::Contains("A must be a float32 CUDA tensor"), Error);
#endif
}
