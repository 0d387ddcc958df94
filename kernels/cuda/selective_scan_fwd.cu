// CUDA selective scan forward: F1 (super-chunk end states), F2 (the combine, scan_common.cuh) and
// F3 (outputs from each super-chunk's start state); kernels/cuda/scan_common.cuh has the overview.
#include "kernels/cuda/scan_common.cuh"

namespace s6::kernels::cuda {

namespace {

// ---- F1: per super-chunk (K chunks; all but the last), end state from zero and sum of dt -------
// The end state of super-chunk s goes to chunk slot (s + 1) K of `states`, which F2 turns into
// start states.
template <class CF, typename T> __global__ void __launch_bounds__(CF::NT)
    scan_fwd_chunk_end_kernel(float* states, float* dts, const T* u, const T* delta, const float* A,
                              const T* Bm, const float* bias, bool softplus, int64_t L, int dim, int N, int nc,
                              int K, int ns, int chunk, int64_t ldbc) {
  constexpr int NS = CF::NS, DPB = CF::DPB, NPAD = CF::NPAD, IT = Tile<CF>::IT, ITB = Tile<CF>::ITB;
  extern __shared__ float4 smem_f4[];
  float* s_dt = reinterpret_cast<float*>(smem_f4);
  float* s_u = s_dt + CF::TD;
  float* s_B = s_u + CF::TD;
  const int s = blockIdx.x, b = blockIdx.z, d0 = blockIdx.y * DPB;
  const int g = threadIdx.x % CF::LPD, dl = threadIdx.x / CF::LPD, d = d0 + dl;
  const int dS = d0 + threadIdx.x % DPB;
  const float bias_s = (bias && dS < dim) ? bias[dS] : 0.f;
  float A2[NS], h[NS];
  load_A<CF>(A2, A, d, g, dim, N);
#pragma unroll
  for (int i = 0; i < NS; ++i) h[i] = 0.f;
  const int64_t c0 = (int64_t)s * K * chunk, cend = min(L, c0 + (int64_t)K * chunk);
  const int nsub = static_cast<int>((cend - c0 + kTS - 1) / kTS);
  T rd[IT], ru[IT], rB[ITB];
  prefetch_seq<CF, T>(rd, delta, b, c0, cend, dS, L, dim);
  prefetch_seq<CF, T>(ru, u, b, c0, cend, dS, L, dim);
  prefetch_bc<CF, T>(rB, Bm, b, c0, cend, L, N, ldbc);
  float dsum = 0.f;
  for (int j = 0; j < nsub; ++j) {
    const int64_t t0 = c0 + (int64_t)j * kTS;
    __syncthreads();
    store_dt<CF, T>(s_dt, nullptr, rd, bias_s, softplus, t0, cend, dS < dim);
    store_seq<CF, T>(s_u, ru);
    store_bc<CF, T>(s_B, rB);
    __syncthreads();
    if (j + 1 < nsub) {
      prefetch_seq<CF, T>(rd, delta, b, t0 + kTS, cend, dS, L, dim);
      prefetch_seq<CF, T>(ru, u, b, t0 + kTS, cend, dS, L, dim);
      prefetch_bc<CF, T>(rB, Bm, b, t0 + kTS, cend, L, N, ldbc);
    }
#pragma unroll 4
    for (int tt = 0; tt < kTS; ++tt) {
      const float dtv = s_dt[tt * DPB + dl];
      const float dtu = dtv * s_u[tt * DPB + dl];
      dsum += dtv;
      float Bt[NS];
      load_vec<NS>(Bt, s_B + tt * NPAD + g * NS);
      advance_state<NS>(h, A2, dtv, dtu, Bt);
    }
  }
  store_chunk_end<CF>(states, (int64_t)b * nc + (int64_t)(s + 1) * K, h, dts, ((int64_t)b * ns + s) * dim + d,
                      dsum, d, g, dim, N);
}

// ---- F3: outputs of every super-chunk from its start state ---------------------------------------
// Walks the K chunks of the super-chunk, writing the state entering each (but the first, which F2
// wrote) to chunk_states for the backward.
template <class CF, typename T> __global__ void __launch_bounds__(CF::NT)
    scan_fwd_out_kernel(T* out, float* final_state, float* states, const T* u, const T* delta, const float* A,
                        const T* Bm, const T* Cm, const float* Dv, const T* z, const float* bias, bool softplus,
                        int64_t L, int dim, int N, int nc, int K, int ns, int chunk, int64_t ldbc) {
  constexpr int NS = CF::NS, DPB = CF::DPB, NPAD = CF::NPAD, IT = Tile<CF>::IT, ITB = Tile<CF>::ITB;
  extern __shared__ float4 smem_f4[];
  float* s_dt = reinterpret_cast<float*>(smem_f4);
  float* s_u = s_dt + CF::TD;
  float* s_y = s_u + CF::TD;
  float* s_B = s_y + CF::TD;
  float* s_C = s_B + kTS * NPAD;
  const int s = blockIdx.x, b = blockIdx.z, d0 = blockIdx.y * DPB;
  const int g = threadIdx.x % CF::LPD, dl = threadIdx.x / CF::LPD, d = d0 + dl;
  const int dS = d0 + threadIdx.x % DPB, tt0 = threadIdx.x / DPB;
  const float bias_s = (bias && dS < dim) ? bias[dS] : 0.f;
  const float D_s = (Dv && dS < dim) ? Dv[dS] : 0.f;
  float A2[NS], h[NS];
  load_A<CF>(A2, A, d, g, dim, N);
  const int64_t cfirst = (int64_t)s * K;
  {
    const float* st = states + (((int64_t)b * nc + cfirst) * dim + d) * N + g * NS;
#pragma unroll
    for (int i = 0; i < NS; ++i) h[i] = (d < dim && g * NS + i < N) ? st[i] : 0.f;
  }
  const int64_t c0 = cfirst * chunk, cend = min(L, c0 + (int64_t)K * chunk);
  const int nsub = static_cast<int>((cend - c0 + kTS - 1) / kTS), per_chunk = chunk / kTS;
  T rd[IT], ru[IT], rz[IT], rB[ITB], rC[ITB];
  prefetch_seq<CF, T>(rd, delta, b, c0, cend, dS, L, dim);
  prefetch_seq<CF, T>(ru, u, b, c0, cend, dS, L, dim);
  prefetch_seq<CF, T>(rz, z, b, c0, cend, dS, L, dim);
  prefetch_bc<CF, T>(rB, Bm, b, c0, cend, L, N, ldbc);
  prefetch_bc<CF, T>(rC, Cm, b, c0, cend, L, N, ldbc);
  for (int j = 0; j < nsub; ++j) {
    const int64_t t0 = c0 + (int64_t)j * kTS;
    if (j > 0 && j % per_chunk == 0 && d < dim) {
      float* dst = states + (((int64_t)b * nc + cfirst + j / per_chunk) * dim + d) * N + g * NS;
#pragma unroll
      for (int i = 0; i < NS; ++i)
        if (g * NS + i < N) dst[i] = h[i];
    }
    __syncthreads();
    store_dt<CF, T>(s_dt, nullptr, rd, bias_s, softplus, t0, cend, dS < dim);
    store_bc<CF, T>(s_B, rB);
    store_bc<CF, T>(s_C, rC);
    float uc[IT], zc[IT];
#pragma unroll
    for (int k = 0; k < IT; ++k) uc[k] = to_f(ru[k]), zc[k] = to_f(rz[k]);
    store_seq<CF, T>(s_u, ru);
    __syncthreads();
    if (j + 1 < nsub) {
      prefetch_seq<CF, T>(rd, delta, b, t0 + kTS, cend, dS, L, dim);
      prefetch_seq<CF, T>(ru, u, b, t0 + kTS, cend, dS, L, dim);
      prefetch_seq<CF, T>(rz, z, b, t0 + kTS, cend, dS, L, dim);
      prefetch_bc<CF, T>(rB, Bm, b, t0 + kTS, cend, L, N, ldbc);
      prefetch_bc<CF, T>(rC, Cm, b, t0 + kTS, cend, L, N, ldbc);
    }
#pragma unroll 4
    for (int tt = 0; tt < kTS; ++tt) {
      const float dtv = s_dt[tt * DPB + dl];
      const float dtu = dtv * s_u[tt * DPB + dl];
      float Bt[NS], Ct[NS];
      load_vec<NS>(Bt, s_B + tt * NPAD + g * NS);
      load_vec<NS>(Ct, s_C + tt * NPAD + g * NS);
      float y = 0.f;
#pragma unroll
      for (int i = 0; i < NS; ++i) {
        h[i] = fast_exp2(dtv * A2[i]) * h[i] + dtu * Bt[i];
        y += Ct[i] * h[i];
      }
      y = lane_allreduce<CF::LPD>(y);
      if (g == 0) s_y[tt * DPB + dl] = y;
    }
    __syncthreads();
#pragma unroll
    for (int k = 0; k < IT; ++k) {
      const int tt = tt0 + k * CF::LPD;
      const int64_t t = t0 + tt;
      if (tt < kTS && t < cend && dS < dim) {
        const int64_t idx = ((int64_t)b * L + t) * dim + dS;
        float y = s_y[threadIdx.x + k * CF::NT] + D_s * uc[k];
        if (z) y *= zc[k] * sigmoid_f(zc[k]);
        out[idx] = from_f<T>(y);
      }
    }
  }
  if (final_state && s == ns - 1 && d < dim) {
    float* dst = final_state + ((int64_t)b * dim + d) * N + g * NS;
#pragma unroll
    for (int i = 0; i < NS; ++i)
      if (g * NS + i < N) dst[i] = h[i];
  }
}

int num_sms() {
  static const int n = [] {
    int dev = 0, v = 0;
    if (cudaGetDevice(&dev) != cudaSuccess ||
        cudaDeviceGetAttribute(&v, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess || v <= 0)
      v = 132;
    return v;
  }();
  return n;
}

// Grid targets per SM (docs/scan_notes.md, v1-v2 and v9): the backward's main kernel and the
// forward of narrow grids want many blocks; a forward whose (batch x channel-block) columns
// already fill two blocks per SM runs fastest as one super-chunk (no F1 pass at all).
constexpr int64_t kFwdBlocksPerSm = 32;
constexpr int64_t kBwdBlocksPerSm = 32;
constexpr int64_t kFwdSinglePassColsPerSm = 2;

}  // namespace

ScanPlan plan_scan(const ScanDims& dims, const ScanPlanOverrides& ov) {
  const char* what = "plan_scan (CUDA selective scan)";
  S6_CHECK(ov.chunk == 0 || ov.chunk == kScanShortChunkLength || ov.chunk == kScanChunkLength,
           "{}: the chunk override must be {} or {}, got {}", what, kScanShortChunkLength, kScanChunkLength,
           ov.chunk);
  S6_CHECK(ov.bwd_states == 0 || ov.bwd_states == 4 || ov.bwd_states == 8,
           "{}: the backward states-per-thread override must be 4 or 8, got {}", what, ov.bwd_states);
  S6_CHECK(ov.fwd_blocks >= 0 && ov.bwd_blocks >= 0,
           "{}: the grid-size overrides must be positive, got {} and {}", what, ov.fwd_blocks, ov.bwd_blocks);
  const int64_t dstate = std::clamp<int64_t>(dims.dstate, 1, kScanMaxDState);
  const int64_t dpb = channels_per_block(dstate);
  const int64_t cols = dims.batch * ((dims.dim + dpb - 1) / dpb);
  const int64_t sms = num_sms();
  ScanPlan plan;
  // The grid the backward's main kernel could have with long chunks: (batch x channel blocks) x
  // chunks. Under two blocks per SM, short chunks give it 4x the blocks and no checkpoint sweep.
  plan.chunk = ov.chunk                                                          ? ov.chunk
               : cols * scan_num_chunks(dims.length, kScanChunkLength) < 2 * sms ? kScanShortChunkLength
                                                                                 : kScanChunkLength;
  // 8 states per thread with 64-step chunks; 4 with 16-step chunks, where every sub-chunk is one
  // the sweep does not walk (docs/scan_notes.md, v9).
  plan.bwd_states = ov.bwd_states ? ov.bwd_states : plan.chunk == kScanChunkLength ? 8 : 4;
  plan.fwd_blocks = ov.fwd_blocks                           ? ov.fwd_blocks
                    : cols >= kFwdSinglePassColsPerSm * sms ? 1
                                                            : kFwdBlocksPerSm * sms;
  plan.bwd_blocks = ov.bwd_blocks ? ov.bwd_blocks : kBwdBlocksPerSm * sms;
  plan.sync_staging = ov.sync_staging;
  return plan;
}

int64_t scan_fwd_workspace_floats(const ScanDims& d, const ScanPlan& plan) {
  return std::max<int64_t>(1, d.batch * scan_num_chunks(d.length, plan.chunk) * d.dim);
}

void selective_scan_fwd(const ScanParams& args, const ScanPlan& plan) {
  const char* what = "selective_scan_fwd (CUDA)";
  const int64_t batch = args.dims.batch, length = args.dims.length, dim = args.dims.dim,
                dstate = args.dims.dstate;
  check_dims(what, batch, length, dim, dstate);
  check_dtype(what, args.dtype);
  check_plan(what, plan);
  const int64_t ldbc = args.bc_row_stride ? args.bc_row_stride : dstate;
  S6_CHECK(ldbc >= dstate, "{}: B/C row stride {} is below dstate {}", what, ldbc, dstate);
  cudaStream_t stream = static_cast<cudaStream_t>(args.stream);
  if (batch == 0 || dim == 0) return;
  float* chunk_states = args.chunk_states;
  float* final_state = static_cast<float*>(args.final_state);
  const float* initial_state = static_cast<const float*>(args.initial_state);
  const float* A = static_cast<const float*>(args.A);
  const float* D = static_cast<const float*>(args.D);
  const float* delta_bias = static_cast<const float*>(args.delta_bias);
  const bool delta_softplus = args.delta_softplus;
  void* out = args.out;
  const void *u = args.u, *delta = args.delta, *B = args.B, *C = args.C, *z = args.z;
  float* workspace = args.workspace;
  const ScanDType dtype = args.dtype;
  S6_CHECK(chunk_states && workspace && A, "{}: chunk_states, workspace and A are required", what);
  const size_t es = dtype == ScanDType::Float32 ? 4 : 2;
  if (length == 0) {
    const size_t bytes = size_t(batch * dim * dstate) * 4;
    auto copy_or_zero = [&](float* dst) {
      cudaError_t e = initial_state
                          ? cudaMemcpyAsync(dst, initial_state, bytes, cudaMemcpyDeviceToDevice, stream)
                          : cudaMemsetAsync(dst, 0, bytes, stream);
      S6_CHECK(e == cudaSuccess, "{}: {}", what, cudaGetErrorString(e));
    };
    copy_or_zero(chunk_states);
    if (final_state) copy_or_zero(final_state);
    return;
  }
  S6_CHECK(out && u && delta && B && C, "{}: out, u, delta, B and C are required", what);
  for (auto [name, p] :
       std::initializer_list<NamedPtr>{{"out", out}, {"u", u}, {"delta", delta}, {"B", B}, {"C", C}, {"z", z}})
    if (p) check_aligned(what, name, p, es);
  for (auto [name, p] : std::initializer_list<NamedPtr>{{"chunk_states", chunk_states},
                                                        {"workspace", workspace},
                                                        {"A", A},
                                                        {"D", D},
                                                        {"delta_bias", delta_bias},
                                                        {"initial_state", initial_state},
                                                        {"final_state", final_state}})
    if (p) check_aligned(what, name, p, 4);
  const int64_t chunk = plan.chunk;
  const int64_t nc = scan_num_chunks(length, chunk);
  float* dts = workspace;
  dispatch_dtype(dtype, [&](auto ttag) {
    using T = decltype(ttag);
    dispatch_cfg(dstate, [&](auto cf) {
      using CF = decltype(cf);
      const unsigned dblocks = static_cast<unsigned>((dim + CF::DPB - 1) / CF::DPB);
      const T* ut = static_cast<const T*>(u);
      const T* dt = static_cast<const T*>(delta);
      const T* Bt = static_cast<const T*>(B);
      const T* Ct = static_cast<const T*>(C);
      const T* zt = static_cast<const T*>(z);
      const Split sp = split_chunks(nc, int64_t(dblocks) * batch, plan.fwd_blocks);
      if (sp.ns > 1) {
        const size_t smem = (2 * CF::TD + kTS * CF::NPAD) * sizeof(float);
        auto k1 = scan_fwd_chunk_end_kernel<CF, T>;
        set_smem(k1, smem);
        k1<<<dim3(static_cast<unsigned>(sp.ns - 1), dblocks, static_cast<unsigned>(batch)), CF::NT, smem,
             stream>>>(chunk_states, dts, ut, dt, A, Bt, delta_bias, delta_softplus, length,
                       static_cast<int>(dim), static_cast<int>(dstate), static_cast<int>(nc),
                       static_cast<int>(sp.K), static_cast<int>(sp.ns), static_cast<int>(chunk), ldbc);
        check_launch("selective_scan_fwd chunk end states");
      }
      launch_combine<false>(chunk_states, dts, A, initial_state, nc, sp.ns, sp.K, batch, dim, dstate, stream);
      check_launch("selective_scan_fwd chunk combine");
      const size_t smem = CF::kFwdSmemFloats * sizeof(float);
      auto k3 = scan_fwd_out_kernel<CF, T>;
      set_smem(k3, smem);
      k3<<<dim3(static_cast<unsigned>(sp.ns), dblocks, static_cast<unsigned>(batch)), CF::NT, smem, stream>>>(
          static_cast<T*>(out), final_state, chunk_states, ut, dt, A, Bt, Ct, D, zt, delta_bias, delta_softplus,
          length, static_cast<int>(dim), static_cast<int>(dstate), static_cast<int>(nc), static_cast<int>(sp.K),
          static_cast<int>(sp.ns), static_cast<int>(chunk), ldbc);
      check_launch("selective_scan_fwd outputs");
    });
  });
}

}  // namespace s6::kernels::cuda
