// Internals shared by the CUDA selective scan's forward, backward and step files (not a public
// header: kernels/cuda/selective_scan.h is). Everything here has internal linkage.
//
// CUDA selective scan (Mamba S6): chunked forward and backward, and the single-token step.
//
// Parallel over batch, channels and time. L is cut into chunks of 64 steps, or of 16 for problems
// too small to fill the GPU otherwise (plan_scan, selective_scan_fwd.cu); a thread owns
// one channel d and NS consecutive states of one chunk and walks the chunk sequentially (LPD lanes
// share a channel, so sums over the states take log2(LPD) shuffles). Channel-last layout makes a
// block's loads of u/delta/z/dout coalesced over d; every 16-step sub-chunk of u, delta (turned into
// dt = softplus(delta + bias) once per element), B and C is staged through shared memory (B3
// copies the next one in with cp.async while it computes the current one).
//
// Forward:  F1 per chunk, the end state from zero and the chunk's sum of dt (its decay is
//           exp(A * sum dt)); F2 an in-place scan over the chunks per (b, d, n) (segmented over the
//           chunks, then combined in a fixed order) giving the state entering every chunk =
//           chunk_states (saved for the backward); F3 recomputes every chunk from its start state
//           and writes out (and final_state).
// Backward: B1 per chunk, the state adjoint leaving the chunk (towards earlier time) from zero;
//           B2 the same scan in reverse gives the adjoint entering every chunk from later time;
//           B3 per chunk: recompute the forward states from chunk_states, keeping one checkpoint
//           per 16-step sub-chunk in registers (a sweep that 16-step chunks do not need), then per
//           sub-chunk (last first) recompute its 16 states into registers (at dstate 9..16: with
//           64-step chunks 8 states per thread, 2 lanes per channel, per 4-step quarter; with
//           16-step chunks 4 states per thread per 8-step half) and run the reverse
//           recurrence, producing du, ddelta, dz, and
//           partials for dA/dD/ddelta_bias (per block) and dB/dC (per block of channels, reduced
//           over the block's warps in a fixed order); B4 deterministic column sums of partials.
#pragma once
#include "kernels/cuda/selective_scan.h"

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <initializer_list>
#include <utility>

#include "core/error.h"

namespace s6::kernels::cuda {

namespace {

constexpr int kTS = static_cast<int>(kScanShortChunkLength);        // steps per staged sub-chunk
constexpr int kMaxNSub = static_cast<int>(kScanChunkLength) / kTS;  // sub-chunks per chunk, at most
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;
static_assert(kScanChunkLength % kTS == 0, "a chunk must be a multiple of the sub-chunk");

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
template <int NS_, int LPD_, int NT_ = (32 * LPD_ < 128 ? 32 * LPD_ : 128)> struct Cfg {
  static constexpr int NS = NS_, LPD = LPD_;
  static constexpr int NT = NT_;        // threads per block
  static constexpr int DPB = NT / LPD;  // channels per block
  static constexpr int NW = NT / 32;
  static constexpr int NPAD = NS * LPD;  // padded dstate
  static constexpr int LOG_LPD = log2c(LPD);
  static constexpr int TD = kTS * DPB;
  // dB/dC: steps per cross-warp flush (bounded shared memory for large dstate).
  static constexpr int TSB_RAW = 4096 / (NW * 2 * NPAD);
  static constexpr int TSB = TSB_RAW >= kTS ? kTS : TSB_RAW >= 8 ? 8 : TSB_RAW >= 4 ? 4 : TSB_RAW >= 2 ? 2 : 1;
  // The B3-only configuration for dstate 9..16 (Cfg<8, 2, 128>, B3's default with 64-step
  // chunks): 8 states per thread, 2 lanes per channel, so less per-channel work repeated over
  // lanes and more independent state chains.
  static constexpr bool kWide = NS == 8 && LPD == 2;
  // dB/dC sums over a warp's channels: through shared memory at 4 or 8 lanes per channel and for
  // the wide configuration (fewer instructions per value than the shuffle butterfly there:
  // docs/scan_notes.md, v5a and v9); by the butterfly otherwise.
  static constexpr bool kSmemReduce = LPD == 4 || LPD == 8 || kWide;
  // Per warp: V / 4 slabs of [32 lanes][4 values] (V = 2 NS), each padded by 128 / V floats so
  // that the 32 outputs one read instruction covers (all V / 4 slabs) fall in distinct banks.
  // Double-buffered, except for the wide configuration (shared memory limits its blocks per SM:
  // one buffer, and a second __syncwarp per step).
  static constexpr int kRedSlab = 32 * 4 + 128 / (2 * NS);
  static constexpr int kRedWarpFloats = (2 * NS / 4) * kRedSlab;
  static constexpr int kRedBuffers = kWide ? 1 : 2;
  static constexpr int kRedFloats = kSmemReduce ? kRedBuffers * NW * kRedWarpFloats : 0;
  // du, ddelta, dz: staged in shared memory for coalesced stores, except for the wide
  // configuration, whose channel lanes store them each step (16 consecutive channels per warp:
  // whole sectors) to save 3 TD floats of shared memory.
  static constexpr bool kBwdDirectOut = kWide;
  // B3 at 128 registers per thread where that fits without spilling (the compiler's own choice
  // drifts above it with small code changes, losing a block per SM).
  static constexpr int kBwdMinBlocks = NS == 4 && LPD <= 16 ? 65536 / (128 * NT) : 1;
  static constexpr int kFwdSmemFloats = 3 * TD + 2 * kTS * NPAD;
  static constexpr int kBwdSmemFloats = (kBwdDirectOut ? 5 : 8) * TD + 2 * kTS * NPAD + NW * TSB * 2 * NPAD +
                                        kRedFloats;
  // B3's raw tile for asynchronous staging (u, delta, dout, z; B, C), sized for float elements,
  // after the rest (kBwdSmemFloats is a multiple of 4, so it starts 16-byte aligned).
  static constexpr int kBwdRawFloats = 4 * TD + 2 * kTS * NPAD;
  static_assert(kBwdSmemFloats % 4 == 0, "the raw tile must start 16-byte aligned");
  static_assert(kTS % TSB == 0, "flush group must divide the sub-chunk");
  // B3 reversing each sub-chunk in kBwdPieces pieces of kTS / kBwdPieces steps, the later first,
  // from checkpoints of the state entering each piece: hist[kTS / pieces][NS] registers of
  // recomputed states instead of hist[kTS][NS]; at most kBwdPiecedRegs registers, and dB/dC
  // flushed every 8 steps (less shared memory). Built for dstate 16 (two 8-step halves: 96
  // registers and 41 KB, for 5 blocks per SM instead of 4) and for the wide configuration, in
  // 4-step quarters (124 registers and 52.5 KB, 4 blocks per SM; halves spilled at 128 registers).
  static constexpr int kBwdPieces = kWide ? 4 : NS == 4 && LPD == 4 ? 2 : 1;
  static constexpr int kBwdPiecedRegs = kWide ? 128 : 96;
  __host__ __device__ static constexpr int bwd_tsb(int pieces) {
    return pieces == 1 || TSB < kTS / 2 ? TSB : kTS / 2;
  }
  __host__ __device__ static constexpr int bwd_smem_floats(int pieces) {
    return kBwdSmemFloats - NW * (TSB - bwd_tsb(pieces)) * 2 * NPAD;
  }
  __host__ __device__ static constexpr int bwd_min_blocks(int pieces) {
    return pieces == 1 ? kBwdMinBlocks : 65536 / (kBwdPiecedRegs * NT);
  }
  static_assert(bwd_smem_floats(kBwdPieces) % 4 == 0, "the raw tile must start 16-byte aligned");
};

}  // namespace scan_detail

namespace {

using scan_detail::Cfg;

template <int NS> __device__ __forceinline__ void load_vec(float (&dst)[NS], const float* src) {
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

template <int LPD> __device__ __forceinline__ float lane_allreduce(float v) {
#pragma unroll
  for (int m = 1; m < LPD; m <<= 1) v += __shfl_xor_sync(0xffffffffu, v, m);
  return v;
}

// Stages kTS steps x DPB channels of the per-channel sequences (null destinations are skipped).
// Steps at or past tend and channels past dim read as zeros (dt = 0: identity step).
template <class CF, typename T>
__device__ __forceinline__ void stage_seq(float* s_dt, float* s_dsp, float* s_u, float* s_dout, float* s_z,
                                          float* s_gy, const T* u, const T* delta, const T* dout, const T* z,
                                          const float* bias, bool softplus, int b, int64_t t0, int64_t tend,
                                          int d0, int64_t L, int dim) {
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
// loads do not wait on DRAM (the backward's staging is otherwise exposed latency at 4 warps per
// scheduler: docs/scan_notes.md, v5). Non-null sequences only; each
// per-channel row is prefetched at its first and last channel (it may straddle two lines).
template <class CF, typename T>
__device__ __forceinline__ void prefetch_stage(std::initializer_list<const T*> seqs, const T* Bm, const T* Cm,
                                               int b, int64_t t0, int64_t tend, int d0, int64_t L, int dim,
                                               int N, int64_t ld) {
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
  // B and C rows of these steps (ld apart) lie in one span each.
  const int64_t span = ((int64_t)(rows - 1) * ld + N) * sizeof(T);
  const int lines = static_cast<int>((span + 127) / 128) + 1;
  for (const T* m : {Bm, Cm}) {
    if (m && i >= 0 && i < lines) {
      const char* base = reinterpret_cast<const char*>(m + ((int64_t)b * L + t0) * ld);
      const int64_t off = (int64_t)i * 128 < span ? (int64_t)i * 128 : span - 1;
      asm volatile("prefetch.global.L1 [%0];" ::"l"(base + off));
    }
    i -= lines;
  }
}

// Stages kTS steps of B or C (batch, length, dstate; rows ld apart), zero-padded to NPAD states.
template <class CF, typename T> __device__ __forceinline__ void stage_bc(float* s, const T* src, int b,
                                                                         int64_t t0, int64_t tend, int64_t L,
                                                                         int N, int64_t ld) {
  for (int i = threadIdx.x; i < kTS * CF::NPAD; i += CF::NT) {
    const int tt = i / CF::NPAD, n = i - tt * CF::NPAD;
    const int64_t t = t0 + tt;
    s[i] = (t < tend && n < N) ? to_f(src[((int64_t)b * L + t) * ld + n]) : 0.f;
  }
}

template <class CF>
__device__ __forceinline__ void load_A(float (&A2)[CF::NS], const float* A, int d, int g, int dim, int N) {
#pragma unroll
  for (int i = 0; i < CF::NS; ++i) {
    const int n = g * CF::NS + i;
    A2[i] = (d < dim && n < N) ? A[(int64_t)d * N + n] * kLog2e : 0.f;
  }
}

// One step of the recurrence for a thread's NS states: h = exp(dt A) h + dt u B (A2 = A log2 e).
template <int NS> __device__ __forceinline__ void advance_state(float (&h)[NS], const float (&A2)[NS],
                                                                float dtv, float dtu, const float (&Bt)[NS]) {
#pragma unroll
  for (int i = 0; i < NS; ++i) h[i] = fast_exp2(dtv * A2[i]) * h[i] + dtu * Bt[i];
}

// F1 / B1: a super-chunk's end state (or adjoint), N floats of channel d in chunk slot `slot` of
// `out` (batch x chunks, dim, N), and its sum of dt at dts[dts_at].
template <class CF>
__device__ __forceinline__ void store_chunk_end(float* out, int64_t slot, const float (&v)[CF::NS], float* dts,
                                                int64_t dts_at, float dsum, int d, int g, int dim, int N) {
  if (d < dim) {
    float* dst = out + (slot * dim + d) * N;
#pragma unroll
    for (int i = 0; i < CF::NS; ++i) {
      const int n = g * CF::NS + i;
      if (n < N) dst[n] = v[i];
    }
    if (g == 0) dts[dts_at] = dsum;
  }
}

// ---- register prefetch of one staged sub-chunk ----------------------------------------------------
// A thread's items of the kTS x DPB tile are i = tid + k * NT (k < IT); NT is a multiple of DPB, so
// they all belong to channel d0 + tid % DPB, at steps tid / DPB + k * LPD. Loads for the next
// sub-chunk are issued before the current one is computed (latency hidden by the compute), and
// written to shared memory after it.
template <class CF> struct Tile {
  static constexpr int IT = (CF::TD + CF::NT - 1) / CF::NT;           // per-channel items per thread
  static constexpr int ITB = (kTS * CF::NPAD + CF::NT - 1) / CF::NT;  // B/C items per thread
};

template <class CF, typename T> __device__ __forceinline__ void prefetch_seq(T (&r)[Tile<CF>::IT], const T* src,
                                                                             int b, int64_t t0, int64_t tend,
                                                                             int dS, int64_t L, int dim) {
  const int tt0 = threadIdx.x / CF::DPB;
#pragma unroll
  for (int k = 0; k < Tile<CF>::IT; ++k) {
    const int tt = tt0 + k * CF::LPD;
    const int64_t t = t0 + tt;
    r[k] = (src && tt < kTS && t < tend && dS < dim) ? src[((int64_t)b * L + t) * dim + dS] : from_f<T>(0.f);
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
__device__ __forceinline__ void store_dt(float* s_dt, float* s_dsp, const T (&r)[Tile<CF>::IT], float bias_d,
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

template <class CF, typename T> __device__ __forceinline__ void prefetch_bc(T (&r)[Tile<CF>::ITB], const T* src,
                                                                            int b, int64_t t0, int64_t tend,
                                                                            int64_t L, int N, int64_t ld) {
#pragma unroll
  for (int k = 0; k < Tile<CF>::ITB; ++k) {
    const int i = threadIdx.x + k * CF::NT;
    const int tt = i / CF::NPAD, n = i - tt * CF::NPAD;
    const int64_t t = t0 + tt;
    r[k] = (tt < kTS && t < tend && n < N) ? src[((int64_t)b * L + t) * ld + n] : from_f<T>(0.f);
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

// ---- asynchronous staging: cp.async of one sub-chunk's raw inputs into shared memory -------------
// Used by B3 for the sub-chunk after the one it computes, so that no staging waits on L2/DRAM. The
// per-channel rows go in 16-byte copies (dim a multiple of 16 / sizeof(T), 16-byte aligned
// sequences), the B and C rows in 4-byte ones; entries past tend or dim are zero-filled.
template <typename T> __host__ __device__ constexpr bool async_rows_fit(int dpb) {
  return dpb % (16 / static_cast<int>(sizeof(T))) == 0;
}

__device__ __forceinline__ void cp_async16(void* dst, const void* src, int src_bytes) {
  const unsigned d = static_cast<unsigned>(__cvta_generic_to_shared(dst));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(d), "l"(src), "r"(src_bytes));
}
__device__ __forceinline__ void cp_async4(void* dst, const void* src, int src_bytes) {
  const unsigned d = static_cast<unsigned>(__cvta_generic_to_shared(dst));
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;" ::"r"(d), "l"(src), "r"(src_bytes));
}
__device__ __forceinline__ void cp_async_wait_all() { asm volatile("cp.async.wait_all;" ::: "memory"); }

// The raw tile: u, delta, dout, z as [kTS][DPB]; B, C as [kTS][N].
template <class CF, typename T> struct RawTile {
  T *u, *delta, *dout, *z, *B, *C;
  __device__ explicit RawTile(float* base) {
    T* r = reinterpret_cast<T*>(base);
    u = r, delta = r + CF::TD, dout = r + 2 * CF::TD, z = r + 3 * CF::TD;
    B = r + 4 * CF::TD, C = B + kTS * CF::NPAD;
  }
};

template <class CF, typename T>
__device__ __forceinline__ void stage_async(const RawTile<CF, T>& raw, const T* u, const T* delta,
                                            const T* dout, const T* z, const T* Bm, const T* Cm, int b,
                                            int64_t t0, int64_t tend, int d0, int64_t L, int dim, int N,
                                            int64_t ld) {
  if constexpr (async_rows_fit<T>(CF::DPB)) {
    constexpr int E = 16 / static_cast<int>(sizeof(T)), CPR = CF::DPB / E;
    for (int i = threadIdx.x; i < kTS * CPR; i += CF::NT) {
      const int tt = i / CPR, k = i - tt * CPR;
      const int64_t t = t0 + tt;
      const int d = d0 + k * E;
      const int valid = t < tend ? max(0, min(E, dim - d)) : 0;
      const int64_t at = valid ? ((int64_t)b * L + t) * dim + d : 0;
      const int bytes = valid * static_cast<int>(sizeof(T));
      const int o = tt * CF::DPB + k * E;
      cp_async16(raw.u + o, u + at, bytes);
      cp_async16(raw.delta + o, delta + at, bytes);
      cp_async16(raw.dout + o, dout + at, bytes);
      if (z) cp_async16(raw.z + o, z + at, bytes);
    }
    const int W = N * static_cast<int>(sizeof(T)) / 4;  // 4-byte words per B/C row
    for (int i = threadIdx.x; i < kTS * W; i += CF::NT) {
      const int tt = i / W, w = i - tt * W;
      const int64_t t = t0 + tt;
      const int64_t at = t < tend ? ((int64_t)b * L + t) * ld : 0;
      const int bytes = t < tend ? 4 : 0;
      cp_async4(reinterpret_cast<char*>(raw.B + tt * N) + 4 * w, reinterpret_cast<const char*>(Bm + at) + 4 * w,
                bytes);
      cp_async4(reinterpret_cast<char*>(raw.C + tt * N) + 4 * w, reinterpret_cast<const char*>(Cm + at) + 4 * w,
                bytes);
    }
  }
}

// The same values stage_seq / stage_bc write, from the raw tile (after cp_async_wait_all and a
// barrier).
template <class CF, typename T>
__device__ __forceinline__ void unpack_stage(float* s_dt, float* s_dsp, float* s_u, float* s_dout, float* s_z,
                                             float* s_B, float* s_C, const RawTile<CF, T>& raw,
                                             const float* bias, bool softplus, int64_t t0, int64_t tend, int d0,
                                             int dim, int N) {
  for (int i = threadIdx.x; i < CF::TD; i += CF::NT) {
    const int tt = i / CF::DPB, dd = i - tt * CF::DPB;
    const int d = d0 + dd;
    const bool ok = t0 + tt < tend && d < dim;
    float dtv = 0.f, sp = 1.f;
    if (ok) {
      const float v = to_f(raw.delta[i]) + (bias ? bias[d] : 0.f);
      dtv = v;
      if (softplus && v <= 20.f) softplus_fast(v, dtv, sp);
    }
    s_dt[i] = dtv;
    s_dsp[i] = sp;
    s_u[i] = to_f(raw.u[i]);
    s_dout[i] = to_f(raw.dout[i]);
    if (s_z) s_z[i] = to_f(raw.z[i]);
  }
  for (int i = threadIdx.x; i < kTS * CF::NPAD; i += CF::NT) {
    const int tt = i / CF::NPAD, n = i - tt * CF::NPAD;
    s_B[i] = n < N ? to_f(raw.B[tt * N + n]) : 0.f;
    s_C[i] = n < N ? to_f(raw.C[tt * N + n]) : 0.f;
  }
}

// ---- F2 / B2: in-place scan over super-chunks, per (b, m = d * N + n) ----------------------------
// Position p = 0..ns-1 is super-chunk k = p (forward) or ns-1-p (reverse); its slot is chunk k K
// (forward: the state entering it) or its last chunk (reverse: the adjoint entering it from later
// time). Position 0 becomes the seed (init or zero); position p >= 1 becomes
// x_p + exp(A * dts[super-chunk at p-1]) * (value at p-1).
// blockDim = (32, SEG): each of the SEG rows scans a contiguous run of positions; the runs are
// combined in order by row 0, so the result does not depend on timing.
template <bool REVERSE> __global__ void __launch_bounds__(1024)
    scan_chunk_combine_kernel(float* x, const float* dts, const float* A, const float* init, int nc, int ns,
                              int K, int dim, int N) {
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
  // The values and decay sums of positions p .. p + U - 1 of this row's run (zeros past its end).
  auto load = [&](int p, float(&xv)[U], float(&dv)[U]) {
#pragma unroll
    for (int j = 0; j < U; ++j) {
      const bool in = p + j < p1;
      xv[j] = in ? *slot(p + j) : 0.f;
      dv[j] = in ? dt_at(p + j - 1) : 0.f;
    }
  };
  // Phase 1: each run's aggregate (decay, value) from zero.
  float hh = 0.f, S = 0.f;
  if (ok) {
    for (int p = p0; p < p1; p += U) {
      float xv[U], dv[U];
      load(p, xv, dv);
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
      load(p, xv, dv);
#pragma unroll
      for (int j = 0; j < U; ++j) {
        hh = fast_exp2(A2 * dv[j]) * hh + xv[j];
        if (p + j < p1) *slot(p + j) = hh;
      }
    }
  }
}

// ---- host side ----------------------------------------------------------------------------------
template <typename Fn> void dispatch_cfg(int64_t N, Fn&& fn) {
  if (N <= 4) fn(Cfg<4, 1>{});
  else if (N <= 8) fn(Cfg<4, 2>{});
  else if (N <= 16) fn(Cfg<4, 4>{});
  else if (N <= 32) fn(Cfg<4, 8>{});
  else if (N <= 64) fn(Cfg<4, 16>{});
  else if (N <= 128) fn(Cfg<4, 32>{});
  else fn(Cfg<8, 32>{});
}

template <typename Fn> void dispatch_dtype(ScanDType dtype, Fn&& fn) {
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

bool is_aligned(const void* p, size_t align) { return reinterpret_cast<uintptr_t>(p) % align == 0; }

void check_aligned(const char* what, const char* arg, const void* p, size_t align) {
  S6_CHECK(is_aligned(p, align), "{}: {} is not {}-byte aligned", what, arg, align);
}

void check_dims(const char* what, int64_t batch, int64_t length, int64_t dim, int64_t dstate) {
  S6_CHECK(batch >= 0 && length >= 0 && dim >= 0, "{}: negative size (batch {}, length {}, dim {})", what,
           batch, length, dim);
  S6_CHECK(dstate >= 1 && dstate <= kScanMaxDState, "{}: dstate {} is outside [1, {}]", what, dstate,
           kScanMaxDState);
  S6_CHECK(batch <= 65535, "{}: batch {} exceeds 65535", what, batch);
  S6_CHECK(dim <= (int64_t(1) << 30) / dstate, "{}: dim {} too large", what, dim);
  S6_CHECK(scan_num_chunks(length, kScanShortChunkLength) < (int64_t(1) << 31), "{}: length {} too large", what,
           length);
}

template <typename K> void set_smem(K kernel, size_t bytes) {
  if (bytes > 48 * 1024) {
    const cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                                 static_cast<int>(bytes));
    S6_CHECK(err == cudaSuccess, "selective_scan: cannot set {} bytes of shared memory: {}", bytes,
             cudaGetErrorString(err));
  }
}

int combine_segments(int64_t ns) {
  int seg = 1;
  while (seg < 32 && int64_t(seg) * 16 < ns - 1) seg *= 2;
  return seg;
}

template <bool REVERSE> void launch_combine(float* x, const float* dts, const float* A, const float* init,
                                            int64_t nc, int64_t ns, int64_t K, int64_t batch, int64_t dim,
                                            int64_t N, cudaStream_t stream) {
  const int seg = combine_segments(ns);
  const int64_t M = dim * N;
  dim3 grid(static_cast<unsigned>((M + 31) / 32), static_cast<unsigned>(batch));
  scan_chunk_combine_kernel<REVERSE>
      <<<grid, dim3(32, seg), 0, stream>>>(x, dts, A, init, static_cast<int>(nc), static_cast<int>(ns),
                                           static_cast<int>(K), static_cast<int>(dim), static_cast<int>(N));
}

// Super-chunks: each block walks K consecutive chunks, so that only the ns - 1 super-chunk
// boundaries need the extra end-state pass (F1 / B1). ns is the fewest that gives the grid about
// `target` blocks (ScanPlan::fwd_blocks / bwd_blocks).
struct Split {
  int64_t K, ns;
};
Split split_chunks(int64_t nc, int64_t cols, int64_t target) {
  int64_t ns = std::clamp<int64_t>((target + cols - 1) / std::max<int64_t>(cols, 1), 1, nc);
  const int64_t K = (nc + ns - 1) / ns;
  ns = (nc + K - 1) / K;
  return {K, ns};
}

// The plan's fields the launchers rely on (a default-constructed plan has none of them).
void check_plan(const char* what, const ScanPlan& plan) {
  S6_CHECK(plan.chunk == kScanShortChunkLength || plan.chunk == kScanChunkLength,
           "{}: plan.chunk must be {} or {}, got {} (take the plan from plan_scan)", what,
           kScanShortChunkLength, kScanChunkLength, plan.chunk);
  S6_CHECK(plan.bwd_states == 4 || plan.bwd_states == 8, "{}: plan.bwd_states must be 4 or 8, got {}", what,
           plan.bwd_states);
  S6_CHECK(plan.fwd_blocks > 0 && plan.bwd_blocks > 0,
           "{}: plan.fwd_blocks and plan.bwd_blocks must be positive, got {} and {}", what, plan.fwd_blocks,
           plan.bwd_blocks);
}

// The pointer arguments' element type: float or bfloat16 on CUDA.
void check_dtype(const char* what, ScanDType dtype) {
  S6_CHECK(dtype == ScanDType::Float32 || dtype == ScanDType::BFloat16,
           "{}: params.dtype must be Float32 or BFloat16, got {}", what, static_cast<int>(dtype));
}

}  // namespace

}  // namespace s6::kernels::cuda
