// `bench`: GPU benchmarks printed as one table per mode.
//   bench [--scan]   selective scan alone at the docs/performance.md section-2 shapes (default)
//   bench --train    whole training steps at the docs/performance.md configs (bench/train_bench.cpp)
//   bench --all      every mode
//   bench --train --case <text>   only the training configs whose name contains <text>
// Scan plan overrides (kernels/scan_params.h; start from the S6_SCAN_* environment, which the
// training steps read too): --chunk 16|64, --bwd-states 4|8, --fwd-blocks N, --bwd-blocks N,
// --sync-staging.
// Times are CUDA-event medians after warm-up; the floor is the forward's bytes (read u, delta, z,
// B, C; write out) over the device-to-device copy bandwidth (read + write) measured in this run.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <initializer_list>
#include <string>
#include <type_traits>
#include <vector>

#include "bench/train_bench.h"
#include "kernels/cuda/selective_scan.h"
#include "layers/scan_plan.h"

namespace {

namespace kc = s6::kernels::cuda;

#define BENCH_CUDA(expr)                                                             \
  do {                                                                               \
    cudaError_t e_ = (expr);                                                         \
    if (e_ != cudaSuccess) {                                                         \
      std::fprintf(stderr, "bench: %s failed: %s\n", #expr, cudaGetErrorString(e_)); \
      std::exit(1);                                                                  \
    }                                                                                \
  } while (0)

__device__ __forceinline__ float hash_uniform(uint64_t i, uint32_t seed) {
  uint64_t x = i * 0x9E3779B97F4A7C15ull + seed * 0xBF58476D1CE4E5B9ull;
  x ^= x >> 31;
  x *= 0x94D049BB133111EBull;
  x ^= x >> 29;
  return static_cast<float>(x >> 40) * (1.0f / 16777216.0f);
}

template <typename T> __global__ void fill_uniform(T* p, int64_t n, float lo, float hi, uint32_t seed) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
       i += (int64_t)gridDim.x * blockDim.x) {
    const float v = lo + (hi - lo) * hash_uniform(static_cast<uint64_t>(i), seed);
    if constexpr (std::is_same_v<T, float>) p[i] = v;
    else p[i] = __float2bfloat16(v);
  }
}

struct DeviceBuffer {
  void* p = nullptr;
  explicit DeviceBuffer(size_t bytes) { BENCH_CUDA(cudaMalloc(&p, std::max<size_t>(bytes, 16))); }
  ~DeviceBuffer() { cudaFree(p); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  float* f() const { return static_cast<float*>(p); }
};

void fill(void* p, int64_t n, float lo, float hi, uint32_t seed, bool bf16) {
  const unsigned blocks = static_cast<unsigned>(std::min<int64_t>((n + 255) / 256, 65535 * 4));
  if (bf16) fill_uniform<__nv_bfloat16><<<blocks, 256>>>(static_cast<__nv_bfloat16*>(p), n, lo, hi, seed);
  else fill_uniform<float><<<blocks, 256>>>(static_cast<float*>(p), n, lo, hi, seed);
  BENCH_CUDA(cudaGetLastError());
}

// Median of `iters` timings (ms) of fn after `warmup` untimed calls.
double time_median(const std::function<void()>& fn, int warmup = 3, int iters = 21) {
  cudaEvent_t a, b;
  BENCH_CUDA(cudaEventCreate(&a));
  BENCH_CUDA(cudaEventCreate(&b));
  for (int i = 0; i < warmup; ++i) fn();
  std::vector<double> ms;
  for (int i = 0; i < iters; ++i) {
    BENCH_CUDA(cudaEventRecord(a));
    fn();
    BENCH_CUDA(cudaEventRecord(b));
    BENCH_CUDA(cudaEventSynchronize(b));
    float t = 0;
    BENCH_CUDA(cudaEventElapsedTime(&t, a, b));
    ms.push_back(t);
  }
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

// Device-to-device copy bandwidth, counting read + write, in bytes/s.
double copy_bandwidth() {
  const size_t bytes = size_t(1) << 30;
  DeviceBuffer src(bytes), dst(bytes);
  BENCH_CUDA(cudaMemset(src.p, 1, bytes));
  const double ms = time_median(
      [&] { BENCH_CUDA(cudaMemcpyAsync(dst.p, src.p, bytes, cudaMemcpyDeviceToDevice)); }, 3, 11);
  return 2.0 * double(bytes) / (ms * 1e-3);
}

struct ScanShape {
  int64_t batch, dim, dstate, length;
  bool bf16;
  double ref_fwd_ms, ref_fwdbwd_ms;  // docs/performance.md (PyTorch + mamba_ssm, H200, 2026-12-04)
};

void run_scan(double bandwidth, const s6::kernels::ScanPlanOverrides& ov) {
  const std::vector<ScanShape> shapes = {
      {8, 1536, 16, 2048, false, 0.921, 2.990},  {8, 1536, 16, 2048, true, 0.466, 2.259},
      {64, 128, 16, 4096, false, 1.290, 4.327},  {8, 128, 16, 256, false, 0.045, 0.303},
      {1, 1024, 16, 65536, false, 2.968, 9.466}, {1, 128, 16, 1048576, false, 12.097, 37.444},
  };
  std::printf("\nselective scan (z gate, D, delta bias, softplus); copy bandwidth %.2f TB/s (read+write)\n",
              bandwidth * 1e-12);
  std::printf(
      "plan overrides: chunk %lld, bwd states %d, fwd blocks %lld, bwd blocks %lld, sync staging %d "
      "(0 = the plan's choice)\n",
      (long long)ov.chunk, ov.bwd_states, (long long)ov.fwd_blocks, (long long)ov.bwd_blocks,
      int(ov.sync_staging));
  std::printf(
      "| batch, d_inner, d_state, L | dtype | fwd ms | fwd+bwd ms | fwd GB/s | fwd floor ms | fwd/floor "
      "| ref fwd ms | ref fwd+bwd ms | ref/ours fwd | ref/ours fwd+bwd |\n");
  std::printf("|---|---|---|---|---|---|---|---|---|---|---|\n");
  for (const ScanShape& s : shapes) {
    const int64_t BLD = s.batch * s.length * s.dim, BLN = s.batch * s.length * s.dstate;
    const size_t es = s.bf16 ? 2 : 4;
    const s6::kernels::ScanDims dims{s.batch, s.length, s.dim, s.dstate};
    const s6::kernels::ScanPlan plan = kc::plan_scan(dims, ov);
    DeviceBuffer u(BLD * es), delta(BLD * es), z(BLD * es), dout(BLD * es), B(BLN * es), C(BLN * es),
        out(BLD * es), du(BLD * es), ddelta(BLD * es), dz(BLD * es), dB(BLN * es), dC(BLN * es),
        A(s.dim * s.dstate * 4), D(s.dim * 4), bias(s.dim * 4), dA(s.dim * s.dstate * 4), dD(s.dim * 4),
        dbias(s.dim * 4);
    DeviceBuffer states(kc::scan_chunk_states_floats(dims, plan) * 4);
    DeviceBuffer fws(kc::scan_fwd_workspace_floats(dims, plan) * 4);
    DeviceBuffer bws(kc::scan_bwd_workspace_floats(dims, plan) * 4);
    fill(u.p, BLD, -1, 1, 1, s.bf16);
    fill(delta.p, BLD, -4, -1, 2, s.bf16);  // dt ~ softplus(-4..-1 + bias): a typical Mamba range
    fill(z.p, BLD, -2, 2, 3, s.bf16);
    fill(dout.p, BLD, -1, 1, 4, s.bf16);
    fill(B.p, BLN, -1, 1, 5, s.bf16);
    fill(C.p, BLN, -1, 1, 6, s.bf16);
    fill(A.p, s.dim * s.dstate, -16, -1, 7, false);
    fill(D.p, s.dim, -1, 1, 8, false);
    fill(bias.p, s.dim, -1, 1, 9, false);
    BENCH_CUDA(cudaDeviceSynchronize());
    s6::kernels::ScanGradParams p;
    p.dims = dims;
    p.dtype = s.bf16 ? s6::kernels::ScanDType::BFloat16 : s6::kernels::ScanDType::Float32;
    p.delta_softplus = true;
    p.u = u.p, p.delta = delta.p, p.A = A.p, p.B = B.p, p.C = C.p, p.D = D.p, p.z = z.p;
    p.delta_bias = bias.p, p.out = out.p, p.chunk_states = states.f();
    p.dout = dout.p, p.du = du.p, p.ddelta = ddelta.p, p.dA = dA.p, p.dB = dB.p, p.dC = dC.p;
    p.dD = dD.p, p.dz = dz.p, p.ddelta_bias = dbias.p;
    auto fwd = [&] {
      s6::kernels::ScanParams f = p;
      f.workspace = fws.f();
      kc::selective_scan_fwd(f, plan);
    };
    auto bwd = [&] {
      s6::kernels::ScanGradParams g = p;
      g.workspace = bws.f();
      kc::selective_scan_bwd(g, plan);
    };
    const double fwd_ms = time_median(fwd);
    const double fb_ms = time_median([&] {
      fwd();
      bwd();
    });
    BENCH_CUDA(cudaDeviceSynchronize());
    const double bytes = double(4 * BLD + 2 * BLN) * double(es);
    const double floor_ms = bytes / bandwidth * 1e3;
    char shape[64];
    std::snprintf(shape, sizeof shape, "%lld, %lld, %lld, %lld", (long long)s.batch, (long long)s.dim,
                  (long long)s.dstate, (long long)s.length);
    std::printf("| %s | %s | %.3f | %.3f | %.0f | %.4f | %.2f | %.3f | %.3f | %.2fx | %.2fx |\n", shape,
                s.bf16 ? "bf16" : "fp32", fwd_ms, fb_ms, bytes / (fwd_ms * 1e-3) * 1e-9, floor_ms,
                fwd_ms / floor_ms, s.ref_fwd_ms, s.ref_fwdbwd_ms, s.ref_fwd_ms / fwd_ms,
                s.ref_fwdbwd_ms / fb_ms);
    std::fflush(stdout);
  }
}

}  // namespace

int main(int argc, char** argv) {
  bool scan = false, train = false, all = false;
  std::string only;
  s6::kernels::ScanPlanOverrides ov;
  try {
    ov = s6::scan_plan_overrides_from_env();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench: %s\n", e.what());
    return 2;
  }
  // A flag's value: a positive integer (one of `allowed` when given), else a usage error.
  auto number = [&](int& i, std::initializer_list<long long> allowed) -> long long {
    if (i + 1 >= argc) return -1;
    char* end = nullptr;
    const long long v = std::strtoll(argv[++i], &end, 10);
    if (*argv[i] == 0 || *end != 0 || v <= 0) return -1;
    if (allowed.size() && std::find(allowed.begin(), allowed.end(), v) == allowed.end()) return -1;
    return v;
  };
  for (int i = 1; i < argc; ++i) {
    long long v = 0;
    if (!std::strcmp(argv[i], "--scan")) scan = true;
    else if (!std::strcmp(argv[i], "--train")) train = true;
    else if (!std::strcmp(argv[i], "--all")) all = true;
    else if (!std::strcmp(argv[i], "--case") && i + 1 < argc) only = argv[++i];
    else if (!std::strcmp(argv[i], "--chunk") && (v = number(i, {16, 64})) > 0) ov.chunk = v;
    else if (!std::strcmp(argv[i], "--bwd-states") && (v = number(i, {4, 8})) > 0) ov.bwd_states = int(v);
    else if (!std::strcmp(argv[i], "--fwd-blocks") && (v = number(i, {})) > 0) ov.fwd_blocks = v;
    else if (!std::strcmp(argv[i], "--bwd-blocks") && (v = number(i, {})) > 0) ov.bwd_blocks = v;
    else if (!std::strcmp(argv[i], "--sync-staging")) ov.sync_staging = true;
    else {
      std::fprintf(stderr,
                   "usage: bench [--scan] [--train [--case <text>]] [--all] [--chunk 16|64] "
                   "[--bwd-states 4|8] [--fwd-blocks N] [--bwd-blocks N] [--sync-staging]\n");
      return 2;
    }
  }
  if (!scan && !train && !all) scan = true;
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0) {
    std::fprintf(stderr, "bench: no CUDA device\n");
    return 1;
  }
  cudaDeviceProp prop{};
  BENCH_CUDA(cudaGetDeviceProperties(&prop, 0));
  std::printf("device: %s\n", prop.name);
  const double bw = copy_bandwidth();
  if (scan || all) run_scan(bw, ov);
  if (train || all) run_train_bench(only);
  return 0;
}
