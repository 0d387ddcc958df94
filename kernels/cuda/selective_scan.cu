// CUDA selective scan (Mamba S6): chunked forward and backward, and the single-token step.
//
// Parallel over batch, channels and time. L is cut into chunks of kChunk (64) steps; a thread owns
// one channel d and NS consecutive states of one chunk and walks the chunk sequentially (LPD lanes
// share a channel, so sums over the states take log2(LPD) shuffles). Channel-last layout makes a
// block's loads of u/delta/z/dout coalesced over d; every 16-step sub-chunk of u, delta (turned into
// dt = softplus(delta + bias) once per element), B and C is staged through shared memory.
//
// Forward:  F1 per chunk, the end state from zero and the chunk's sum of dt (its decay is
//           exp(A * sum dt)); F2 an in-place scan over the chunks per (b, d, n) (segmented over the
//           chunks, then combined in a fixed order) giving the state entering every chunk =
//           chunk_states (saved for the backward); F3 recomputes every chunk from its start state
//           and writes out (and final_state).
// Backward: B1 per chunk, the state adjoint leaving the chunk (towards earlier time) from zero;
//           B2 the same scan in reverse gives the adjoint entering every chunk from later time;
//           B3 per chunk: recompute the forward states from chunk_states, keeping one checkpoint
//           per 16-step sub-chunk in registers, then per sub-chunk (last first) recompute its 16
//           states into registers and run the reverse recurrence, producing du, ddelta, dz, and
//           partials for dA/dD/ddelta_bias (per block) and dB/dC (per block of channels, reduced
//           over the block's warps in a fixed order); B4 deterministic column sums of partials.
// Nothing of size (batch, length, dim, dstate) is stored; no float atomics anywhere.
#include "kernels/cuda/selective_scan.h"

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdlib>
#include <cstdint>
#include <initializer_list>
#include <utility>

#include "core/error.h"

namespace s6::kernels::cuda {

namespace {

constexpr int kChunk = static_cast<int>(kScanChunkLength);
constexpr int kTS = 16;                 // steps per staged sub-chunk
constexpr int kNSub = kChunk / kTS;     // sub-chunks per chunk
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;
static_assert(kChunk % kTS == 0, "chunk must be a multiple of the sub-chunk");

__device__ __forceinline__ float to_f(float x) { return x; }
__device__ __forceinline__ float to_f(__nv_bfloat16 x) { return __bfloat162float(x); }
template <typename T> __device__ __forceinline__ T from_f(float x);
template <> __device__ __forceinline__ float from_f<float>(float x) { return x; }
template <> __device__ __forceinline__ __nv_bfloat16 from_f<__nv_bfloat16>(float x) {
  return __float2bfloat16(x);
}

__device__ __forceinline__ float sigmoid_f(float v) { return __fdividef(1.f, 1.f + __expf(-v)); }

// 2^x on the SFU without the denormal fix-up of exp2f (decays below 2^-126 flush to zero).
__device__ __forceinline__ float fast_exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

// dt = log1p(e^v) and its derivative e^v / (1 + e^v) on the SFU (instead of expf + log1pf):
// log1p(e) by its series for e < 1/32 (truncation < 2e-7 relative), else by Goldberg's
// log(w) * e / (w - 1), w = 1 + e (log(w) >= 0.03 there, so the SFU log's absolute error of
// ~2^-22 stays below 1e-5 relative).
__device__ __forceinline__ void softplus_fast(float v, float& dt, float& sp) {
  const float e = __expf(v);
  const float w = 1.f + e;
  dt = e < 0.03125f ? e * (1.f - e * (0.5f - e * (0.33333334f - 0.25f * e)))
                    : __logf(w) * __fdividef(e, w - 1.f);
  sp = __fdividef(e, w);
}

__host__ __device__ constexpr int log2c(int v) { return v <= 1 ? 0 : 1 + log2c(v / 2); }


}  // namespace

namespace scan_detail {  // named: unused members of some configurations draw no warnings

// NS states per thread, LPD lanes per channel (a power of two dividing 32).
template <int NS_, int LPD_, int NT_ = (32 * LPD_ < 128 ? 32 * LPD_ : 128)>
struct Cfg {
  static constexpr int NS = NS_, LPD = LPD_;
  static constexpr int NT = NT_;                              // threads per block
  static constexpr int DPB = NT / LPD;                        // channels per block
  static constexpr int NW = NT / 32;
  static constexpr int NPAD = NS * LPD;                       // padded dstate
  static constexpr int LOG_LPD = log2c(LPD);
  static constexpr int TD = kTS * DPB;
  // dB/dC: steps per cross-warp flush (bounded shared memory for large dstate).
  static constexpr int TSB_RAW = 4096 / (NW * 2 * NPAD);
  static constexpr int TSB = TSB_RAW >= kTS ? kTS
                             : TSB_RAW >= 8 ? 8
                             : TSB_RAW >= 4 ? 4
                             : TSB_RAW >= 2 ? 2
                                            : 1;
  // dB/dC sums over a warp's channels: through shared memory when a warp holds 4 or 8 channels
  // (fewer instructions than the shuffle butterfly there); by the butterfly otherwise.
  static constexpr bool kSmemReduce = LPD == 4 || LPD == 8;
  // Per warp: V / 4 slabs of [32 lanes][4 values], each padded by 16 floats so that the reads of
  // a value's two slabs fall in different banks; two buffers.
  static constexpr int kRedSlab = 32 * 4 + 16;
  static constexpr int kRedWarpFloats = (2 * NS / 4) * kRedSlab;
  static constexpr int kRedFloats = kSmemReduce ? 2 * NW * kRedWarpFloats : 0;
  // B3 at 128 registers per thread where that fits without spilling (the compiler's own choice
  // drifts above it with small code changes, losing a block per SM).
  static constexpr int kBwdMinBlocks = NS == 4 && LPD <= 16 ? 65536 / (128 * NT) : 1;
  static constexpr int kFwdSmemFloats = 3 * TD + 2 * kTS * NPAD;
  static constexpr int kBwdSmemFloats = 8 * TD + 2 * kTS * NPAD + NW * TSB * 2 * NPAD + kRedFloats;
  static_assert(kTS % TSB == 0, "flush group must divide the sub-chunk");
};

}  // namespace scan_detail

namespace {

using scan_detail::Cfg;

template <int NS>
__device__ __forceinline__ void load_vec(float (&dst)[NS], const float* src) {
  if constexpr (NS % 4 == 0) {
#pragma unroll
    for (int i = 0; i < NS; i += 4) {
      const float4 v = *reinterpret_cast<const float4*>(src + i);
      dst[i] = v.x, dst[i + 1] = v.y, dst[i + 2] = v.z, dst[i + 3] = v.w;
    }
  } else {
#pragma unroll
    for (int i = 0; i < NS; ++i) dst[i] = src[i];
  }
}

template <int LPD>
__device__ __forceinline__ float lane_allreduce(float v) {
#pragma unroll
  for (int m = 1; m < LPD; m <<= 1) v += __shfl_xor_sync(0xffffffffu, v, m);
  return v;
}

// Stages kTS steps x DPB channels of the per-channel sequences (null destinations are skipped).
// Steps at or past tend and channels past dim read as zeros (dt = 0: identity step).
template <class CF, typename T>
__device__ __forceinline__ void stage_seq(float* s_dt, float* s_dsp, float* s_u, float* s_dout,
                                          float* s_z, float* s_gy, const T* u, const T* delta,
                                          const T* dout, const T* z, const float* bias,
                                          bool softplus, int b, int64_t t0, int64_t tend, int d0,
                                          int64_t L, int dim) {
  for (int i = threadIdx.x; i < CF::TD; i += CF::NT) {
    const int tt = i / CF::DPB, dd = i - tt * CF::DPB;
    const int64_t t = t0 + tt;
    const int d = d0 + dd;
    const bool ok = t < tend && d < dim;
    const int64_t idx = ((int64_t)b * L + t) * dim + d;
    if (s_dt) {
      float dtv = 0.f, sp = 1.f;
      if (ok) {
        const float v = to_f(delta[idx]) + (bias ? bias[d] : 0.f);
        dtv = v;
        if (softplus && v <= 20.f) softplus_fast(v, dtv, sp);
      }
      s_dt[i] = dtv;
      if (s_dsp) s_dsp[i] = sp;
    }
    if (s_u) s_u[i] = ok ? to_f(u[idx]) : 0.f;
    if (s_dout) s_dout[i] = ok ? to_f(dout[idx]) : 0.f;
    if (s_z) s_z[i] = ok ? to_f(z[idx]) : 0.f;
    if (s_gy) {
      float gy = 0.f;
      if (ok) {
        gy = to_f(dout[idx]);
        if (z) {
          const float zz = to_f(z[idx]);
          gy *= zz * sigmoid_f(zz);
        }
      }
      s_gy[i] = gy;
    }
  }
}

// Asks L1 for the lines a later stage_seq / stage_bc of steps [t0, tend) will read, so that those
// loads do not wait on DRAM (the backward's staging is otherwise exposed latency: with 4 warps per
// scheduler, ncu showed 39% of the stall cycles waiting on L1TEX). Non-null sequences only; each
// per-channel row is prefetched at its first and last channel (it may straddle two lines).
template <class CF, typename T>
__device__ __forceinline__ void prefetch_stage(std::initializer_list<const T*> seqs, const T* Bm,
                                               const T* Cm, int b, int64_t t0, int64_t tend,
                                               int d0, int64_t L, int dim, int N) {
  if (t0 >= tend) return;
  const int rows = tend - t0 < kTS ? static_cast<int>(tend - t0) : kTS;
  const int dlast = min(d0 + CF::DPB, dim) - 1;
  int i = threadIdx.x;
  for (const T* seq : seqs) {
    if (seq && i < 2 * rows) {
      const int64_t t = t0 + i / 2;
      const T* p = seq + ((int64_t)b * L + t) * dim + ((i & 1) ? dlast : d0);
      asm volatile("prefetch.global.L1 [%0];" ::"l"(p));
    }
    i -= 2 * rows;
  }
  // B and C rows of these steps are one contiguous span each.
  const int64_t span = (int64_t)rows * N * sizeof(T);
  const int lines = static_cast<int>((span + 127) / 128) + 1;
  for (const T* m : {Bm, Cm}) {
    if (m && i >= 0 && i < lines) {
      const char* base = reinterpret_cast<const char*>(m + ((int64_t)b * L + t0) * N);
      const int64_t off = (int64_t)i * 128 < span ? (int64_t)i * 128 : span - 1;
      asm volatile("prefetch.global.L1 [%0];" ::"l"(base + off));
    }
    i -= lines;
  }
}

// Stages kTS steps of B or C (batch, length, dstate), zero-padded to NPAD states.
template <class CF, typename T>
__device__ __forceinline__ void stage_bc(float* s, const T* src, int b, int64_t t0, int64_t tend,
                                         int64_t L, int N) {
  for (int i = threadIdx.x; i < kTS * CF::NPAD; i += CF::NT) {
    const int tt = i / CF::NPAD, n = i - tt * CF::NPAD;
    const int64_t t = t0 + tt;
    s[i] = (t < tend && n < N) ? to_f(src[((int64_t)b * L + t) * N + n]) : 0.f;
  }
}

template <class CF>
__device__ __forceinline__ void load_A(float (&A2)[CF::NS], const float* A, int d, int g, int dim,
                                       int N) {
#pragma unroll
  for (int i = 0; i < CF::NS; ++i) {
    const int n = g * CF::NS + i;
    A2[i] = (d < dim && n < N) ? A[(int64_t)d * N + n] * kLog2e : 0.f;
  }
}

// ---- register prefetch of one staged sub-chunk ----------------------------------------------------
// A thread's items of the kTS x DPB tile are i = tid + k * NT (k < IT); NT is a multiple of DPB, so
// they all belong to channel d0 + tid % DPB, at steps tid / DPB + k * LPD. Loads for the next
// sub-chunk are issued before the current one is computed (latency hidden by the compute), and
// written to shared memory after it.
template <class CF>
struct Tile {
  static constexpr int IT = (CF::TD + CF::NT - 1) / CF::NT;       // per-channel items per thread
  static constexpr int ITB = (kTS * CF::NPAD + CF::NT - 1) / CF::NT;  // B/C items per thread
};

template <class CF, typename T>
__device__ __forceinline__ void prefetch_seq(T (&r)[Tile<CF>::IT], const T* src, int b,
                                             int64_t t0, int64_t tend, int dS, int64_t L,
                                             int dim) {
  const int tt0 = threadIdx.x / CF::DPB;
#pragma unroll
  for (int k = 0; k < Tile<CF>::IT; ++k) {
    const int tt = tt0 + k * CF::LPD;
    const int64_t t = t0 + tt;
    r[k] = (src && tt < kTS && t < tend && dS < dim) ? src[((int64_t)b * L + t) * dim + dS]
                                                      : from_f<T>(0.f);
  }
}

template <class CF, typename T>
__device__ __forceinline__ void store_seq(float* s, const T (&r)[Tile<CF>::IT]) {
#pragma unroll
  for (int k = 0; k < Tile<CF>::IT; ++k) {
    const int i = threadIdx.x + k * CF::NT;
    if (i < CF::TD) s[i] = to_f(r[k]);
  }
}

// dt = softplus(delta + bias) (or delta + bias), 0 for steps past tend / channels past dim;
// s_dsp (optional) gets the softplus derivative.
template <class CF, typename T>
__device__ __forceinline__ void store_dt(float* s_dt, float* s_dsp,
                                         const T (&r)[Tile<CF>::IT], float bias_d,
                                         bool softplus, int64_t t0, int64_t tend, bool dok) {
  const int tt0 = threadIdx.x / CF::DPB;
#pragma unroll
  for (int k = 0; k < Tile<CF>::IT; ++k) {
    const int tt = tt0 + k * CF::LPD;
    const int i = threadIdx.x + k * CF::NT;
    if (i < CF::TD) {
      float dtv = 0.f, sp = 1.f;
      if (dok && t0 + tt < tend) {
        const float v = to_f(r[k]) + bias_d;
        dtv = v;
        if (softplus && v <= 20.f) softplus_fast(v, dtv, sp);
      }
      s_dt[i] = dtv;
      if (s_dsp) s_dsp[i] = sp;
    }
  }
}

template <class CF, typename T>
__device__ __forceinline__ void prefetch_bc(T (&r)[Tile<CF>::ITB], const T* src, int b,
                                            int64_t t0, int64_t tend, int64_t L, int N) {
#pragma unroll
  for (int k = 0; k < Tile<CF>::ITB; ++k) {
    const int i = threadIdx.x + k * CF::NT;
    const int tt = i / CF::NPAD, n = i - tt * CF::NPAD;
    const int64_t t = t0 + tt;
    r[k] = (tt < kTS && t < tend && n < N) ? src[((int64_t)b * L + t) * N + n] : from_f<T>(0.f);
  }
}

template <class CF, typename T>
__device__ __forceinline__ void store_bc(float* s, const T (&r)[Tile<CF>::ITB]) {
#pragma unroll
  for (int k = 0; k < Tile<CF>::ITB; ++k) {
    const int i = threadIdx.x + k * CF::NT;
    if (i < kTS * CF::NPAD) s[i] = to_f(r[k]);
  }
}

// ---- F1: per super-chunk (K chunks; all but the last), end state from zero and sum of dt -------
// The end state of super-chunk s goes to chunk slot (s + 1) K of `states`, which F2 turns into
// start states.
template <class CF, typename T>
__global__ void __launch_bounds__(CF::NT)
    scan_fwd_chunk_end_kernel(float* states, float* dts, const T* u, const T* delta,
                              const float* A, const T* Bm, const float* bias, bool softplus,
                              int64_t L, int dim, int N, int nc, int K, int ns) {
  constexpr int NS = CF::NS, DPB = CF::DPB, NPAD = CF::NPAD, IT = Tile<CF>::IT,
                ITB = Tile<CF>::ITB;
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
  const int64_t c0 = (int64_t)s * K * kChunk, cend = min(L, c0 + (int64_t)K * kChunk);
  const int nsub = static_cast<int>((cend - c0 + kTS - 1) / kTS);
  T rd[IT], ru[IT], rB[ITB];
  prefetch_seq<CF, T>(rd, delta, b, c0, cend, dS, L, dim);
  prefetch_seq<CF, T>(ru, u, b, c0, cend, dS, L, dim);
  prefetch_bc<CF, T>(rB, Bm, b, c0, cend, L, N);
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
      prefetch_bc<CF, T>(rB, Bm, b, t0 + kTS, cend, L, N);
    }
#pragma unroll 4
    for (int tt = 0; tt < kTS; ++tt) {
      const float dtv = s_dt[tt * DPB + dl];
      const float dtu = dtv * s_u[tt * DPB + dl];
      dsum += dtv;
      float Bt[NS];
      load_vec<NS>(Bt, s_B + tt * NPAD + g * NS);
#pragma unroll
      for (int i = 0; i < NS; ++i) h[i] = fast_exp2(dtv * A2[i]) * h[i] + dtu * Bt[i];
    }
  }
  if (d < dim) {
    float* dst = states + (((int64_t)b * nc + (int64_t)(s + 1) * K) * dim + d) * N;
#pragma unroll
    for (int i = 0; i < NS; ++i) {
      const int n = g * NS + i;
      if (n < N) dst[n] = h[i];
    }
    if (g == 0) dts[((int64_t)b * ns + s) * dim + d] = dsum;
  }
}

// ---- F2 / B2: in-place scan over super-chunks, per (b, m = d * N + n) ----------------------------
// Position p = 0..ns-1 is super-chunk k = p (forward) or ns-1-p (reverse); its slot is chunk k K
// (forward: the state entering it) or its last chunk (reverse: the adjoint entering it from later
// time). Position 0 becomes the seed (init or zero); position p >= 1 becomes
// x_p + exp(A * dts[super-chunk at p-1]) * (value at p-1).
// blockDim = (32, SEG): each of the SEG rows scans a contiguous run of positions; the runs are
// combined in order by row 0, so the result does not depend on timing.
template <bool REVERSE>
__global__ void __launch_bounds__(1024)
    scan_chunk_combine_kernel(float* x, const float* dts, const float* A, const float* init,
                              int nc, int ns, int K, int dim, int N) {
  __shared__ float s_P[32 * 32], s_H[32 * 32];
  const int64_t M = (int64_t)dim * N;
  const int64_t m = (int64_t)blockIdx.x * 32 + threadIdx.x;
  const int b = blockIdx.y, seg = threadIdx.y, SEG = blockDim.y;
  const bool ok = m < M;
  const int d = ok ? static_cast<int>(m / N) : 0;
  const float A2 = ok ? A[m] * kLog2e : 0.f;
  auto slot = [&](int p) -> float* {
    const int k = REVERSE ? ns - 1 - p : p;
    const int chunk = REVERSE ? min(nc, (k + 1) * K) - 1 : k * K;
    return x + ((int64_t)b * nc + chunk) * M + m;
  };
  auto dt_at = [&](int p) -> float {
    const int k = REVERSE ? ns - 1 - p : p;
    return dts[((int64_t)b * ns + k) * dim + d];
  };
  const int cnt = ns - 1;
  const int per = (cnt + SEG - 1) / SEG;
  const int p0 = 1 + seg * per, p1 = min(ns, p0 + per);
  constexpr int U = 8;
  // Phase 1: each run's aggregate (decay, value) from zero.
  float hh = 0.f, S = 0.f;
  if (ok) {
    for (int p = p0; p < p1; p += U) {
      float xv[U], dv[U];
#pragma unroll
      for (int j = 0; j < U; ++j) {
        const bool in = p + j < p1;
        xv[j] = in ? *slot(p + j) : 0.f;
        dv[j] = in ? dt_at(p + j - 1) : 0.f;
      }
#pragma unroll
      for (int j = 0; j < U; ++j) {
        hh = fast_exp2(A2 * dv[j]) * hh + xv[j];
        S += dv[j];
      }
    }
  }
  s_P[seg * 32 + threadIdx.x] = fast_exp2(A2 * S);
  s_H[seg * 32 + threadIdx.x] = hh;
  __syncthreads();
  if (seg == 0) {
    float carry = (ok && init) ? init[(int64_t)b * M + m] : 0.f;
    if (ok) *slot(0) = carry;
    for (int j = 0; j < SEG; ++j) {
      const float P = s_P[j * 32 + threadIdx.x], H = s_H[j * 32 + threadIdx.x];
      s_H[j * 32 + threadIdx.x] = carry;
      carry = P * carry + H;
    }
  }
  __syncthreads();
  // Phase 2: rescan each run from its carry-in, writing the inclusive values.
  hh = s_H[seg * 32 + threadIdx.x];
  if (ok) {
    for (int p = p0; p < p1; p += U) {
      float xv[U], dv[U];
#pragma unroll
      for (int j = 0; j < U; ++j) {
        const bool in = p + j < p1;
        xv[j] = in ? *slot(p + j) : 0.f;
        dv[j] = in ? dt_at(p + j - 1) : 0.f;
      }
#pragma unroll
      for (int j = 0; j < U; ++j) {
        hh = fast_exp2(A2 * dv[j]) * hh + xv[j];
        if (p + j < p1) *slot(p + j) = hh;
      }
    }
  }
}

// ---- F3: outputs of every super-chunk from its start state ---------------------------------------
// Walks the K chunks of the super-chunk, writing the state entering each (but the first, which F2
// wrote) to chunk_states for the backward.
template <class CF, typename T>
__global__ void __launch_bounds__(CF::NT)
    scan_fwd_out_kernel(T* out, float* final_state, float* states, const T* u,
                        const T* delta, const float* A, const T* Bm, const T* Cm, const float* Dv,
                        const T* z, const float* bias, bool softplus, int64_t L, int dim, int N,
                        int nc, int K, int ns) {
  constexpr int NS = CF::NS, DPB = CF::DPB, NPAD = CF::NPAD, IT = Tile<CF>::IT,
                ITB = Tile<CF>::ITB;
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
  const int64_t c0 = cfirst * kChunk, cend = min(L, c0 + (int64_t)K * kChunk);
  const int nsub = static_cast<int>((cend - c0 + kTS - 1) / kTS);
  T rd[IT], ru[IT], rz[IT], rB[ITB], rC[ITB];
  prefetch_seq<CF, T>(rd, delta, b, c0, cend, dS, L, dim);
  prefetch_seq<CF, T>(ru, u, b, c0, cend, dS, L, dim);
  prefetch_seq<CF, T>(rz, z, b, c0, cend, dS, L, dim);
  prefetch_bc<CF, T>(rB, Bm, b, c0, cend, L, N);
  prefetch_bc<CF, T>(rC, Cm, b, c0, cend, L, N);
  for (int j = 0; j < nsub; ++j) {
    const int64_t t0 = c0 + (int64_t)j * kTS;
    if (j > 0 && j % kNSub == 0 && d < dim) {
      float* dst = states + (((int64_t)b * nc + cfirst + j / kNSub) * dim + d) * N + g * NS;
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
      prefetch_bc<CF, T>(rB, Bm, b, t0 + kTS, cend, L, N);
      prefetch_bc<CF, T>(rC, Cm, b, t0 + kTS, cend, L, N);
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

// ---- B1: per super-chunk s >= 1, the adjoint it passes to super-chunk s - 1 (from zero), and its
// sum of dt; written to the slot of the last chunk of super-chunk s - 1 -----------------------------
template <class CF, typename T>
__global__ void __launch_bounds__(CF::NT)
    scan_bwd_chunk_adj_kernel(float* adj, float* dts, const T* dout, const T* delta,
                              const float* A, const T* Cm, const T* z, const float* bias,
                              bool softplus, int64_t L, int dim, int N, int nc, int K, int ns) {
  constexpr int NS = CF::NS, DPB = CF::DPB, NPAD = CF::NPAD, IT = Tile<CF>::IT,
                ITB = Tile<CF>::ITB;
  extern __shared__ float4 smem_f4[];
  float* s_dt = reinterpret_cast<float*>(smem_f4);
  float* s_gy = s_dt + CF::TD;
  float* s_C = s_gy + CF::TD;
  const int s = blockIdx.x + 1, b = blockIdx.z, d0 = blockIdx.y * DPB;
  const int g = threadIdx.x % CF::LPD, dl = threadIdx.x / CF::LPD, d = d0 + dl;
  const int dS = d0 + threadIdx.x % DPB;
  const float bias_s = (bias && dS < dim) ? bias[dS] : 0.f;
  float A2[NS], dh[NS];
  load_A<CF>(A2, A, d, g, dim, N);
#pragma unroll
  for (int i = 0; i < NS; ++i) dh[i] = 0.f;
  const int64_t c0 = (int64_t)s * K * kChunk, cend = min(L, c0 + (int64_t)K * kChunk);
  const int nsub = static_cast<int>((cend - c0 + kTS - 1) / kTS);
  T rd[IT], rg[IT], rz[IT], rC[ITB];
  {
    const int64_t t0 = c0 + (int64_t)(nsub - 1) * kTS;
    prefetch_seq<CF, T>(rd, delta, b, t0, cend, dS, L, dim);
    prefetch_seq<CF, T>(rg, dout, b, t0, cend, dS, L, dim);
    prefetch_seq<CF, T>(rz, z, b, t0, cend, dS, L, dim);
    prefetch_bc<CF, T>(rC, Cm, b, t0, cend, L, N);
  }
  float dsum = 0.f;
  for (int j = nsub - 1; j >= 0; --j) {
    const int64_t t0 = c0 + (int64_t)j * kTS;
    __syncthreads();
    store_dt<CF, T>(s_dt, nullptr, rd, bias_s, softplus, t0, cend, dS < dim);
    {
      float gy[IT];
#pragma unroll
      for (int k = 0; k < IT; ++k) {
        gy[k] = to_f(rg[k]);
        if (z) gy[k] *= to_f(rz[k]) * sigmoid_f(to_f(rz[k]));
      }
      store_seq<CF, float>(s_gy, gy);
    }
    store_bc<CF, T>(s_C, rC);
    __syncthreads();
    if (j > 0) {
      prefetch_seq<CF, T>(rd, delta, b, t0 - kTS, cend, dS, L, dim);
      prefetch_seq<CF, T>(rg, dout, b, t0 - kTS, cend, dS, L, dim);
      prefetch_seq<CF, T>(rz, z, b, t0 - kTS, cend, dS, L, dim);
      prefetch_bc<CF, T>(rC, Cm, b, t0 - kTS, cend, L, N);
    }
#pragma unroll 4
    for (int tt = kTS - 1; tt >= 0; --tt) {
      const float dtv = s_dt[tt * DPB + dl], gy = s_gy[tt * DPB + dl];
      dsum += dtv;
      float Ct[NS];
      load_vec<NS>(Ct, s_C + tt * NPAD + g * NS);
#pragma unroll
      for (int i = 0; i < NS; ++i) dh[i] = fast_exp2(dtv * A2[i]) * (dh[i] + Ct[i] * gy);
    }
  }
  if (d < dim) {
    float* dst = adj + (((int64_t)b * nc + (int64_t)s * K - 1) * dim + d) * N;
#pragma unroll
    for (int i = 0; i < NS; ++i) {
      const int n = g * NS + i;
      if (n < N) dst[n] = dh[i];
    }
    if (g == 0) dts[((int64_t)b * ns + s) * dim + d] = dsum;
  }
}

// Sums V values per lane over the 32/LPD channels of a warp (lanes differing in the bits above
// LOG_LPD), scattering the results: afterwards the lane holds max(V >> K, 1) sums, of the values
// idx0, idx0 + 1, ... Fixed butterfly order: deterministic.
template <int V, int LOG_LPD>
__device__ __forceinline__ void warp_reduce_scatter(float (&v)[V], int lane, int& idx0) {
  constexpr int K = 5 - LOG_LPD;
  idx0 = 0;
#pragma unroll
  for (int j = 0; j < K; ++j) {
    const int mask = (1 << LOG_LPD) << j;
    const bool hi = (lane & mask) != 0;
    const int cnt = V >> j;
    if (cnt >= 2) {
      const int half = cnt >> 1;
#pragma unroll
      for (int k = 0; k < half; ++k) {
        const float send = hi ? v[k] : v[k + half];
        const float keep = hi ? v[k + half] : v[k];
        v[k] = keep + __shfl_xor_sync(0xffffffffu, send, mask);
      }
      if (hi) idx0 += half;
    } else {
      v[0] += __shfl_xor_sync(0xffffffffu, v[0], mask);
    }
  }
}

// ---- B3: the gradients of every chunk ----------------------------------------------------------
template <class CF, typename T>
__global__ void __launch_bounds__(CF::NT, CF::kBwdMinBlocks)
    scan_bwd_main_kernel(T* du, T* ddelta, T* dz, float* dB_part, float* dC_part, float* adj,
                         float* dD_part, float* dbias_part, const T* dout, const T* u,
                         const T* delta, const float* A, const T* Bm, const T* Cm, const float* Dv,
                         const T* z, const float* bias, const float* states, bool softplus,
                         int64_t L, int dim, int N, int nc, int batch, int KC) {
  constexpr int NS = CF::NS, LPD = CF::LPD, DPB = CF::DPB, NPAD = CF::NPAD, TD = CF::TD;
  constexpr int TSB = CF::TSB, NW = CF::NW, V = 2 * NS;
  constexpr int LOGV = log2c(V), K = 5 - CF::LOG_LPD;
  constexpr int CNT = (V >> K) > 1 ? (V >> K) : 1;
  extern __shared__ float4 smem_f4[];
  float* s_dt = reinterpret_cast<float*>(smem_f4);
  float* s_dsp = s_dt + TD;
  float* s_u = s_dsp + TD;
  float* s_dout = s_u + TD;
  float* s_z = s_dout + TD;
  float* s_du = s_z + TD;
  float* s_ddt = s_du + TD;
  float* s_dz = s_ddt + TD;
  float* s_B = s_dz + TD;
  float* s_C = s_B + kTS * NPAD;
  float* s_part = s_C + kTS * NPAD;  // [NW][TSB][2][NPAD]
  float* s_red = s_part + NW * TSB * 2 * NPAD;  // [2][NW][V/4 slabs], when CF::kSmemReduce
  const int dblk = blockIdx.y, b = blockIdx.z, d0 = dblk * DPB;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int g = threadIdx.x % LPD, dl = threadIdx.x / LPD, d = d0 + dl;
  const bool has_z = z != nullptr;
  const bool writer = (lane >> (CF::LOG_LPD + LOGV)) == 0;

  float A2[NS];  // A * log2(e); the ddelta sum is scaled back by ln 2 once per step
  load_A<CF>(A2, A, d, g, dim, N);
  const float Dd = (Dv && d < dim) ? Dv[d] : 0.f;
  // Super-chunk blockIdx.x: its chunks last to first, the adjoint carried across them in registers
  // (B2 gave the adjoint entering the last one).
  const int c_lo = blockIdx.x * KC, c_hi = min(nc, c_lo + KC) - 1;
  float dh[NS];
#pragma unroll
  for (int i = 0; i < NS; ++i) {
    const bool v = d < dim && g * NS + i < N;
    dh[i] = v ? adj[(((int64_t)b * nc + c_hi) * dim + d) * N + g * NS + i] : 0.f;
  }
#pragma unroll 1
  for (int c = c_hi; c >= c_lo; --c) {
  const int64_t rowoff = (((int64_t)b * nc + c) * dim + d) * N + g * NS;
  float h[NS];
#pragma unroll
  for (int i = 0; i < NS; ++i) {
    const bool v = d < dim && g * NS + i < N;
    h[i] = v ? states[rowoff + i] : 0.f;
  }
  const int64_t c0 = (int64_t)c * kChunk, cend = min(L, c0 + kChunk);

  // Checkpoints: the state entering every sub-chunk.
  float ck[kNSub][NS];  // indexed by a runtime sub-chunk: local memory, read twice per sub-chunk
#pragma unroll 1
  for (int s = 0; s < kNSub; ++s) {
#pragma unroll
    for (int i = 0; i < NS; ++i) ck[s][i] = h[i];
    const int64_t t0 = c0 + (int64_t)s * kTS;
    if (s == kNSub - 1 || t0 >= cend) continue;
    __syncthreads();
    stage_seq<CF, T>(s_dt, nullptr, s_u, nullptr, nullptr, nullptr, u, delta, nullptr, nullptr,
                     bias, softplus, b, t0, cend, d0, L, dim);
    stage_bc<CF, T>(s_B, Bm, b, t0, cend, L, N);
    if (s + 2 < kNSub)  // the sweep's next sub-chunk
      prefetch_stage<CF, T>({u, delta}, Bm, nullptr, b, t0 + kTS, cend, d0, L, dim, N);
    else  // the main loop's first: the last sub-chunk, all of its inputs
      prefetch_stage<CF, T>({u, delta, dout, z}, Bm, Cm, b, t0 + kTS, cend, d0, L, dim, N);
    __syncthreads();
#pragma unroll 4
    for (int tt = 0; tt < kTS; ++tt) {
      const float dtv = s_dt[tt * DPB + dl];
      const float dtu = dtv * s_u[tt * DPB + dl];
      float Bt[NS];
      load_vec<NS>(Bt, s_B + tt * NPAD + g * NS);
#pragma unroll
      for (int i = 0; i < NS; ++i) h[i] = fast_exp2(dtv * A2[i]) * h[i] + dtu * Bt[i];
    }
  }

  float dA_acc[NS];
#pragma unroll
  for (int i = 0; i < NS; ++i) dA_acc[i] = 0.f;
  float dD_acc = 0.f, db_acc = 0.f;
#pragma unroll 1
  for (int s = kNSub - 1; s >= 0; --s) {
    const int64_t t0 = c0 + (int64_t)s * kTS;
    if (t0 >= cend) continue;
    __syncthreads();
    stage_seq<CF, T>(s_dt, s_dsp, s_u, s_dout, has_z ? s_z : nullptr, nullptr, u, delta, dout, z,
                     bias, softplus, b, t0, cend, d0, L, dim);
    stage_bc<CF, T>(s_B, Bm, b, t0, cend, L, N);
    stage_bc<CF, T>(s_C, Cm, b, t0, cend, L, N);
    if (s > 0)  // the next sub-chunk back (u, delta, B were read by the sweep: dout, z, C are new)
      prefetch_stage<CF, T>({dout, z}, nullptr, Cm, b, t0 - kTS, t0, d0, L, dim, N);
    else if (c > c_lo)  // the previous chunk's first sub-chunk, for its sweep
      prefetch_stage<CF, T>({u, delta}, Bm, nullptr, b, t0 - kChunk, t0 - kChunk + kTS, d0, L,
                            dim, N);
    __syncthreads();
    // The 16 states of this sub-chunk, in registers.
    float hist[kTS][NS];
    {
      float hc[NS];
#pragma unroll
      for (int i = 0; i < NS; ++i) hc[i] = ck[s][i];
#pragma unroll
      for (int tt = 0; tt < kTS; ++tt) {
        const float dtv = s_dt[tt * DPB + dl];
        const float dtu = dtv * s_u[tt * DPB + dl];
        float Bt[NS];
        load_vec<NS>(Bt, s_B + tt * NPAD + g * NS);
#pragma unroll
        for (int i = 0; i < NS; ++i) {
          hc[i] = fast_exp2(dtv * A2[i]) * hc[i] + dtu * Bt[i];
          hist[tt][i] = hc[i];
        }
      }
    }
#pragma unroll
    for (int tt = kTS - 1; tt >= 0; --tt) {
      const int o = tt * DPB + dl;
      const float dtv = s_dt[o], uv = s_u[o], dov = s_dout[o];
      float Bt[NS], Ct[NS];
      load_vec<NS>(Bt, s_B + tt * NPAD + g * NS);
      load_vec<NS>(Ct, s_C + tt * NPAD + g * NS);
      float gy = dov, dzv = 0.f;
      if (has_z) {
        float yp = 0.f;
#pragma unroll
        for (int i = 0; i < NS; ++i) yp += Ct[i] * hist[tt][i];
        const float y = lane_allreduce<LPD>(yp) + Dd * uv;
        const float zz = s_z[o], sz = sigmoid_f(zz);
        gy = dov * zz * sz;
        dzv = dov * y * sz * (1.f + zz * (1.f - sz));
      }
      // ddelta = sum_n dhn (B u + A a h_prev) = u * (sum_n dhn B) + sum_n (dhn a h_prev) A.
      const float dtu = dtv * uv;
      float dup = 0.f, ddp = 0.f, vals[V];
#pragma unroll
      for (int i = 0; i < NS; ++i) {
        const float hp = tt > 0 ? hist[tt > 0 ? tt - 1 : 0][i] : ck[s][i];
        const float a = fast_exp2(dtv * A2[i]);
        const float ah = a * hp;
        const float dhn = dh[i] + Ct[i] * gy;
        dup += dhn * Bt[i];
        const float q = dhn * ah;
        ddp += q * A2[i];
        dA_acc[i] += q * dtv;
        vals[i] = dhn * dtu;
        vals[NS + i] = gy * hist[tt][i];
        dh[i] = a * dhn;
      }
      dup = lane_allreduce<LPD>(dup);
      ddp = lane_allreduce<LPD>(ddp) * kLn2 + uv * dup;
      if (g == 0) {
        const float ddt = ddp * s_dsp[o];
        s_du[o] = Dd * gy + dtv * dup;
        s_ddt[o] = ddt;
        s_dz[o] = dzv;
        dD_acc += gy * uv;
        db_acc += ddt;
      }
      // dB, dC: sum over the warp's channels, then over the block's warps at the flush.
      float* dst = s_part + ((warp * TSB + tt % TSB) * 2) * NPAD;
      if constexpr (CF::kSmemReduce) {
        // Lane = channel * LPD + g writes its V values; lane o then sums output o (and o + 32)
        // of the LPD * V per channel, o = g * V + v, over the warp's channels in a fixed order.
        // Two buffers, so one __syncwarp per step orders the reads after the writes and the
        // next step's writes after the reads.
        constexpr int CPW = 32 / LPD, OUT = LPD * V, SLAB = CF::kRedSlab;
        float* red = s_red + ((tt & 1) * NW + warp) * CF::kRedWarpFloats;
#pragma unroll
        for (int k = 0; k < V; k += 4)
          *reinterpret_cast<float4*>(red + (k / 4) * SLAB + lane * 4) =
              make_float4(vals[k], vals[k + 1], vals[k + 2], vals[k + 3]);
        __syncwarp();
#pragma unroll
        for (int o = lane; o < OUT; o += 32) {
          const int go = o / V, vo = o - go * V;
          const float* src = red + (vo / 4) * SLAB + go * 4 + (vo % 4);
          float sum = src[0];
#pragma unroll
          for (int c = 1; c < CPW; ++c) sum += src[c * LPD * 4];
          const int which = vo / NS, nn = go * NS + (vo - which * NS);
          dst[which * NPAD + nn] = sum;
        }
      } else {
        int idx0;
        warp_reduce_scatter<V, CF::LOG_LPD>(vals, lane, idx0);
        if (writer) {
#pragma unroll
          for (int k = 0; k < CNT; ++k) {
            const int vi = idx0 + k;
            const int which = vi / NS, nn = g * NS + (vi - which * NS);
            dst[which * NPAD + nn] = vals[k];
          }
        }
      }
      if (tt % TSB == 0) {
        __syncthreads();
        for (int i = threadIdx.x; i < TSB * 2 * NPAD; i += CF::NT) {
          const int j = i / (2 * NPAD), rem = i - j * 2 * NPAD;
          const int which = rem / NPAD, n = rem - which * NPAD;
          const int64_t t = t0 + tt + j;
          float sum = 0.f;
#pragma unroll
          for (int w = 0; w < NW; ++w) sum += s_part[(w * TSB + j) * 2 * NPAD + rem];
          if (t < cend && n < N)
            (which ? dC_part : dB_part)[(((int64_t)dblk * batch + b) * L + t) * N + n] = sum;
        }
        __syncthreads();
      }
    }
    for (int i = threadIdx.x; i < TD; i += CF::NT) {
      const int tt = i / DPB, dd = i - tt * DPB;
      const int64_t t = t0 + tt;
      const int dch = d0 + dd;
      if (t < cend && dch < dim) {
        const int64_t idx = ((int64_t)b * L + t) * dim + dch;
        if (du) du[idx] = from_f<T>(s_du[i]);
        if (ddelta) ddelta[idx] = from_f<T>(s_ddt[i]);
        if (dz && has_z) dz[idx] = from_f<T>(s_dz[i]);
      }
    }
  }
  if (d < dim) {
#pragma unroll
    for (int i = 0; i < NS; ++i)
      if (g * NS + i < N) adj[rowoff + i] = dA_acc[i];  // dA partial replaces the adjoint
    if (g == 0) {
      dD_part[((int64_t)b * nc + c) * dim + d] = dD_acc;
      dbias_part[((int64_t)b * nc + c) * dim + d] = db_acc;
    }
  }
  }  // chunk loop
}

// ---- B4: out[m] = sum over rows r (fixed order) of in[r, m] -----------------------------------
template <typename TO>
__global__ void colsum_kernel(TO* out, const float* in, int64_t R, int64_t M,
                              int64_t rows_per_split) {
  const int64_t m = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (m >= M) return;
  const int64_t r0 = (int64_t)blockIdx.y * rows_per_split;
  const int64_t r1 = min(R, r0 + rows_per_split);
  float s = 0.f;
  int64_t r = r0;
  for (; r + 4 <= r1; r += 4) {
    const float a0 = in[r * M + m], a1 = in[(r + 1) * M + m], a2 = in[(r + 2) * M + m],
                a3 = in[(r + 3) * M + m];
    s += a0;
    s += a1;
    s += a2;
    s += a3;
  }
  for (; r < r1; ++r) s += in[r * M + m];
  out[(int64_t)blockIdx.y * M + m] = from_f<TO>(s);
}

constexpr int64_t kColsumSplitRows = 32;
constexpr int64_t kColsumOnePass = 32;

int64_t colsum_temp_floats(int64_t R, int64_t M) {
  return R <= kColsumOnePass ? 0 : ((R + kColsumSplitRows - 1) / kColsumSplitRows) * M;
}

template <typename TO>
void colsum(TO* out, const float* in, int64_t R, int64_t M, float* temp, cudaStream_t stream) {
  if (M == 0) return;
  const unsigned bx = static_cast<unsigned>((M + 255) / 256);
  if (R <= kColsumOnePass) {
    colsum_kernel<TO><<<dim3(bx, 1), 256, 0, stream>>>(out, in, R, M, R > 0 ? R : 1);
    return;
  }
  const int64_t RS = (R + kColsumSplitRows - 1) / kColsumSplitRows;
  colsum_kernel<float><<<dim3(bx, static_cast<unsigned>(RS)), 256, 0, stream>>>(temp, in, R, M,
                                                                                kColsumSplitRows);
  colsum_kernel<TO><<<dim3(bx, 1), 256, 0, stream>>>(out, temp, RS, M, RS);
}

// ---- single-token step ------------------------------------------------------------------------
template <typename T>
__global__ void scan_step_kernel(T* out, float* state, const T* u, const T* delta, const float* A,
                                 const T* Bm, const T* Cm, const float* Dv, const T* z,
                                 const float* bias, bool softplus, int64_t batch, int64_t dim,
                                 int N) {
  const int64_t r = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (r >= batch * dim) return;
  const int64_t b = r / dim, d = r - b * dim;
  float v = to_f(delta[r]) + (bias ? bias[d] : 0.f);
  const float dt = (softplus && v <= 20.f) ? log1pf(expf(v)) : v;
  const float uv = to_f(u[r]);
  float* st = state + r * N;
  const float* Ad = A + d * N;
  const T* Bb = Bm + b * N;
  const T* Cb = Cm + b * N;
  float y = 0.f;
  for (int n = 0; n < N; ++n) {
    const float hn = fast_exp2(dt * Ad[n] * kLog2e) * st[n] + dt * to_f(Bb[n]) * uv;
    st[n] = hn;
    y += to_f(Cb[n]) * hn;
  }
  y += (Dv ? Dv[d] : 0.f) * uv;
  if (z) {
    const float zz = to_f(z[r]);
    y *= zz * sigmoid_f(zz);
  }
  out[r] = from_f<T>(y);
}

// ---- host side ----------------------------------------------------------------------------------
template <typename Fn>
void dispatch_cfg(int64_t N, Fn&& fn) {
  if (N <= 4) fn(Cfg<4, 1>{});
  else if (N <= 8) fn(Cfg<4, 2>{});
  else if (N <= 16) fn(Cfg<4, 4>{});
  else if (N <= 32) fn(Cfg<4, 8>{});
  else if (N <= 64) fn(Cfg<4, 16>{});
  else if (N <= 128) fn(Cfg<4, 32>{});
  else fn(Cfg<8, 32>{});
}

template <typename Fn>
void dispatch_dtype(ScanDType dtype, Fn&& fn) {
  if (dtype == ScanDType::Float32) fn(float{});
  else fn(__nv_bfloat16{});
}

int64_t channels_per_block(int64_t N) {
  int64_t dpb = 0;
  dispatch_cfg(N, [&](auto cf) { dpb = decltype(cf)::DPB; });
  return dpb;
}

void check_launch(const char* what) {
  const cudaError_t err = cudaGetLastError();
  S6_CHECK(err == cudaSuccess, "{}: kernel launch failed: {}", what, cudaGetErrorString(err));
}

using NamedPtr = std::pair<const char*, const void*>;

void check_aligned(const char* what, const char* arg, const void* p, size_t align) {
  S6_CHECK(reinterpret_cast<uintptr_t>(p) % align == 0, "{}: {} is not {}-byte aligned", what,
           arg, align);
}

void check_dims(const char* what, int64_t batch, int64_t length, int64_t dim, int64_t dstate) {
  S6_CHECK(batch >= 0 && length >= 0 && dim >= 0, "{}: negative size (batch {}, length {}, dim {})",
           what, batch, length, dim);
  S6_CHECK(dstate >= 1 && dstate <= kScanMaxDState, "{}: dstate {} is outside [1, {}]", what,
           dstate, kScanMaxDState);
  S6_CHECK(batch <= 65535, "{}: batch {} exceeds 65535", what, batch);
  S6_CHECK(dim <= (int64_t(1) << 30) / dstate, "{}: dim {} too large", what, dim);
  S6_CHECK(scan_num_chunks(length) < (int64_t(1) << 31), "{}: length {} too large", what, length);
}

template <typename K>
void set_smem(K kernel, size_t bytes) {
  if (bytes > 48 * 1024) {
    const cudaError_t err = cudaFuncSetAttribute(
        kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes));
    S6_CHECK(err == cudaSuccess, "selective_scan: cannot set {} bytes of shared memory: {}", bytes,
             cudaGetErrorString(err));
  }
}

int combine_segments(int64_t ns) {
  int seg = 1;
  while (seg < 32 && int64_t(seg) * 16 < ns - 1) seg *= 2;
  return seg;
}

template <bool REVERSE>
void launch_combine(float* x, const float* dts, const float* A, const float* init, int64_t nc,
                    int64_t ns, int64_t K, int64_t batch, int64_t dim, int64_t N,
                    cudaStream_t stream) {
  const int seg = combine_segments(ns);
  const int64_t M = dim * N;
  dim3 grid(static_cast<unsigned>((M + 31) / 32), static_cast<unsigned>(batch));
  scan_chunk_combine_kernel<REVERSE><<<grid, dim3(32, seg), 0, stream>>>(
      x, dts, A, init, static_cast<int>(nc), static_cast<int>(ns), static_cast<int>(K),
      static_cast<int>(dim), static_cast<int>(N));
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

// Super-chunks: each block walks K consecutive chunks, so that only the ns - 1 super-chunk
// boundaries need the extra end-state pass (F1 / B1). ns is the fewest that gives the grid about
// `blocks_per_sm` blocks per SM (the env variables S6_SCAN_FWD_BLOCKS / S6_SCAN_BWD_BLOCKS, when
// set, give the target number of blocks of the whole grid instead: for tuning and tests).
struct Split {
  int64_t K, ns;
};
Split split_chunks(int64_t nc, int64_t cols, const char* env, int64_t blocks_per_sm,
                   int64_t single_pass_cols_per_sm = 0) {
  int64_t target = blocks_per_sm * num_sms();
  if (single_pass_cols_per_sm > 0 && cols >= single_pass_cols_per_sm * num_sms()) target = 1;
  if (const char* v = std::getenv(env)) {
    const long long x = std::atoll(v);
    if (x > 0) target = x;
  }
  int64_t ns = std::clamp<int64_t>((target + cols - 1) / std::max<int64_t>(cols, 1), 1, nc);
  const int64_t K = (nc + ns - 1) / ns;
  ns = (nc + K - 1) / K;
  return {K, ns};
}

// Measured on H100 (docs/scan_notes.md): the backward main kernel and the forward of narrow grids
// want many blocks; a forward whose (batch x channel-block) columns already fill two blocks per
// SM runs fastest as one super-chunk (no F1 pass at all).
constexpr int64_t kFwdBlocksPerSm = 32;
constexpr int64_t kBwdBlocksPerSm = 32;
constexpr int64_t kFwdSinglePassColsPerSm = 2;

}  // namespace

int64_t scan_fwd_workspace_floats(int64_t batch, int64_t length, int64_t dim, int64_t dstate) {
  (void)dstate;
  return std::max<int64_t>(1, batch * scan_num_chunks(length) * dim);
}

namespace {
struct BwdLayout {
  int64_t adj, dts, dD, dbias, dB, dC, temp, total;
};
BwdLayout bwd_layout(int64_t batch, int64_t length, int64_t dim, int64_t dstate) {
  const int64_t nc = scan_num_chunks(length);
  const int64_t ndb = (dim + channels_per_block(dstate) - 1) / channels_per_block(dstate);
  const int64_t rows = batch * nc;
  auto up = [](int64_t v) { return (v + 3) / 4 * 4; };  // keep 16-byte alignment
  BwdLayout l{};
  int64_t off = 0;
  l.adj = off, off += up(rows * dim * dstate);
  l.dts = off, off += up(rows * dim);
  l.dD = off, off += up(rows * dim);
  l.dbias = off, off += up(rows * dim);
  l.dB = off, off += up(ndb * batch * length * dstate);
  l.dC = off, off += up(ndb * batch * length * dstate);
  l.temp = off;
  off += up(std::max({colsum_temp_floats(rows, dim * dstate), colsum_temp_floats(rows, dim),
                      colsum_temp_floats(ndb, batch * length * dstate)}));
  l.total = std::max<int64_t>(off, 1);
  return l;
}
}  // namespace

int64_t scan_bwd_workspace_floats(int64_t batch, int64_t length, int64_t dim, int64_t dstate) {
  return bwd_layout(batch, length, dim, dstate).total;
}

void selective_scan_fwd(void* out, float* final_state, float* chunk_states, float* workspace,
                        const void* u, const void* delta, const float* A, const void* B,
                        const void* C, const float* D, const void* z, const float* delta_bias,
                        const float* initial_state, bool delta_softplus, int64_t batch,
                        int64_t length, int64_t dim, int64_t dstate, ScanDType dtype,
                        void* stream_ptr) {
  const char* what = "selective_scan_fwd (CUDA)";
  check_dims(what, batch, length, dim, dstate);
  cudaStream_t stream = static_cast<cudaStream_t>(stream_ptr);
  if (batch == 0 || dim == 0) return;
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
  for (auto [name, p] : std::initializer_list<NamedPtr>{{"out", out}, {"u", u},
                         {"delta", delta}, {"B", B}, {"C", C}, {"z", z}})
    if (p) check_aligned(what, name, p, es);
  for (auto [name, p] : std::initializer_list<NamedPtr>{{"chunk_states", chunk_states},
                         {"workspace", workspace}, {"A", A}, {"D", D}, {"delta_bias", delta_bias},
                         {"initial_state", initial_state}, {"final_state", final_state}})
    if (p) check_aligned(what, name, p, 4);
  const int64_t nc = scan_num_chunks(length);
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
      const Split sp = split_chunks(nc, int64_t(dblocks) * batch, "S6_SCAN_FWD_BLOCKS",
                                    kFwdBlocksPerSm, kFwdSinglePassColsPerSm);
      if (sp.ns > 1) {
        const size_t smem = (2 * CF::TD + kTS * CF::NPAD) * sizeof(float);
        auto k1 = scan_fwd_chunk_end_kernel<CF, T>;
        set_smem(k1, smem);
        k1<<<dim3(static_cast<unsigned>(sp.ns - 1), dblocks, static_cast<unsigned>(batch)),
             CF::NT, smem, stream>>>(chunk_states, dts, ut, dt, A, Bt, delta_bias, delta_softplus,
                                     length, static_cast<int>(dim), static_cast<int>(dstate),
                                     static_cast<int>(nc), static_cast<int>(sp.K),
                                     static_cast<int>(sp.ns));
        check_launch("selective_scan_fwd chunk end states");
      }
      launch_combine<false>(chunk_states, dts, A, initial_state, nc, sp.ns, sp.K, batch, dim,
                            dstate, stream);
      check_launch("selective_scan_fwd chunk combine");
      const size_t smem = CF::kFwdSmemFloats * sizeof(float);
      auto k3 = scan_fwd_out_kernel<CF, T>;
      set_smem(k3, smem);
      k3<<<dim3(static_cast<unsigned>(sp.ns), dblocks, static_cast<unsigned>(batch)), CF::NT, smem,
           stream>>>(static_cast<T*>(out), final_state, chunk_states, ut, dt, A, Bt, Ct, D, zt,
                     delta_bias, delta_softplus, length, static_cast<int>(dim),
                     static_cast<int>(dstate), static_cast<int>(nc), static_cast<int>(sp.K),
                     static_cast<int>(sp.ns));
      check_launch("selective_scan_fwd outputs");
    });
  });
}

void selective_scan_bwd(void* du, void* ddelta, float* dA, void* dB, void* dC, float* dD, void* dz,
                        float* ddelta_bias, float* workspace, const void* dout, const void* u,
                        const void* delta, const float* A, const void* B, const void* C,
                        const float* D, const void* z, const float* delta_bias,
                        const float* chunk_states, bool delta_softplus, int64_t batch,
                        int64_t length, int64_t dim, int64_t dstate, ScanDType dtype,
                        void* stream_ptr) {
  const char* what = "selective_scan_bwd (CUDA)";
  check_dims(what, batch, length, dim, dstate);
  cudaStream_t stream = static_cast<cudaStream_t>(stream_ptr);
  auto zero = [&](float* p, int64_t n) {
    if (!p || n == 0) return;
    cudaError_t e = cudaMemsetAsync(p, 0, size_t(n) * 4, stream);
    S6_CHECK(e == cudaSuccess, "{}: {}", what, cudaGetErrorString(e));
  };
  if (batch == 0 || length == 0 || dim == 0) {
    zero(dA, dim * dstate);
    zero(dD, dim);
    zero(ddelta_bias, dim);
    return;
  }
  S6_CHECK(workspace && dout && u && delta && A && B && C && chunk_states,
           "{}: workspace, dout, u, delta, A, B, C and chunk_states are required", what);
  S6_CHECK(!dz || z, "{}: dz requested without z", what);
  const size_t es = dtype == ScanDType::Float32 ? 4 : 2;
  for (auto [name, p] : std::initializer_list<NamedPtr>{{"du", du}, {"ddelta", ddelta},
                         {"dB", dB}, {"dC", dC}, {"dz", dz}, {"dout", dout}, {"u", u},
                         {"delta", delta}, {"B", B}, {"C", C}, {"z", z}})
    if (p) check_aligned(what, name, p, es);
  for (auto [name, p] : std::initializer_list<NamedPtr>{{"dA", dA}, {"dD", dD},
                         {"ddelta_bias", ddelta_bias}, {"workspace", workspace}, {"A", A},
                         {"D", D}, {"delta_bias", delta_bias}, {"chunk_states", chunk_states}})
    if (p) check_aligned(what, name, p, 4);
  check_aligned(what, "workspace", workspace, 16);
  const int64_t nc = scan_num_chunks(length);
  const BwdLayout lay = bwd_layout(batch, length, dim, dstate);
  float* adj = workspace + lay.adj;
  float* dts = workspace + lay.dts;
  float* dD_part = workspace + lay.dD;
  float* dbias_part = workspace + lay.dbias;
  float* dB_part = workspace + lay.dB;
  float* dC_part = workspace + lay.dC;
  float* temp = workspace + lay.temp;
  const int64_t ndb = (dim + channels_per_block(dstate) - 1) / channels_per_block(dstate);
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
      const T* dot = static_cast<const T*>(dout);
      const Split sp = split_chunks(nc, int64_t(dblocks) * batch, "S6_SCAN_BWD_BLOCKS",
                                    kBwdBlocksPerSm);
      if (sp.ns > 1) {
        const size_t smem = (2 * CF::TD + kTS * CF::NPAD) * sizeof(float);
        auto k1 = scan_bwd_chunk_adj_kernel<CF, T>;
        set_smem(k1, smem);
        k1<<<dim3(static_cast<unsigned>(sp.ns - 1), dblocks, static_cast<unsigned>(batch)),
             CF::NT, smem, stream>>>(adj, dts, dot, dt, A, Ct, zt, delta_bias, delta_softplus,
                                     length, static_cast<int>(dim), static_cast<int>(dstate),
                                     static_cast<int>(nc), static_cast<int>(sp.K),
                                     static_cast<int>(sp.ns));
        check_launch("selective_scan_bwd chunk adjoints");
      }
      launch_combine<true>(adj, dts, A, nullptr, nc, sp.ns, sp.K, batch, dim, dstate, stream);
      check_launch("selective_scan_bwd chunk combine");
      const size_t smem = CF::kBwdSmemFloats * sizeof(float);
      auto k3 = scan_bwd_main_kernel<CF, T>;
      set_smem(k3, smem);
      k3<<<dim3(static_cast<unsigned>(sp.ns), dblocks, static_cast<unsigned>(batch)), CF::NT, smem,
           stream>>>(static_cast<T*>(du), static_cast<T*>(ddelta), static_cast<T*>(dz), dB_part,
                     dC_part, adj, dD_part, dbias_part, dot, ut, dt, A, Bt, Ct, D, zt, delta_bias,
                     chunk_states, delta_softplus, length, static_cast<int>(dim),
                     static_cast<int>(dstate), static_cast<int>(nc), static_cast<int>(batch),
                     static_cast<int>(sp.K));
      check_launch("selective_scan_bwd main");
      const int64_t rows = batch * nc;
      if (dA) colsum<float>(dA, adj, rows, dim * dstate, temp, stream);
      if (dD) colsum<float>(dD, dD_part, rows, dim, temp, stream);
      if (ddelta_bias) colsum<float>(ddelta_bias, dbias_part, rows, dim, temp, stream);
      if (dB) colsum<T>(static_cast<T*>(dB), dB_part, ndb, batch * length * dstate, temp, stream);
      if (dC) colsum<T>(static_cast<T*>(dC), dC_part, ndb, batch * length * dstate, temp, stream);
      check_launch("selective_scan_bwd reductions");
    });
  });
}

void selective_scan_step(void* out, float* state, const void* u, const void* delta, const float* A,
                         const void* B, const void* C, const float* D, const void* z,
                         const float* delta_bias, bool delta_softplus, int64_t batch, int64_t dim,
                         int64_t dstate, ScanDType dtype, void* stream_ptr) {
  const char* what = "selective_scan_step (CUDA)";
  check_dims(what, batch, 1, dim, dstate);
  if (batch == 0 || dim == 0) return;
  S6_CHECK(out && state && u && delta && A && B && C, "{}: out, state, u, delta, A, B and C are required", what);
  const size_t es = dtype == ScanDType::Float32 ? 4 : 2;
  for (auto [name, p] : std::initializer_list<NamedPtr>{{"out", out}, {"u", u},
                         {"delta", delta}, {"B", B}, {"C", C}, {"z", z}})
    if (p) check_aligned(what, name, p, es);
  cudaStream_t stream = static_cast<cudaStream_t>(stream_ptr);
  const int64_t rows = batch * dim;
  dispatch_dtype(dtype, [&](auto ttag) {
    using T = decltype(ttag);
    scan_step_kernel<T><<<static_cast<unsigned>((rows + 127) / 128), 128, 0, stream>>>(
        static_cast<T*>(out), state, static_cast<const T*>(u), static_cast<const T*>(delta), A,
        static_cast<const T*>(B), static_cast<const T*>(C), D, static_cast<const T*>(z),
        delta_bias, delta_softplus, batch, dim, static_cast<int>(dstate));
  });
  check_launch("selective_scan_step");
}

}  // namespace s6::kernels::cuda
