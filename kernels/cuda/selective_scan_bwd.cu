// CUDA selective scan backward: B1 (super-chunk adjoints), B2 (the combine in reverse,
// scan_common.cuh), B3 (every chunk's gradients) and B4 (deterministic column sums);
// kernels/cuda/scan_common.cuh has the overview.
#include "kernels/cuda/scan_common.cuh"

namespace s6::kernels::cuda {

namespace {

// ---- B1: per super-chunk s >= 1, the adjoint it passes to super-chunk s - 1 (from zero), and its
// sum of dt; written to the slot of the last chunk of super-chunk s - 1 -----------------------------
template <class CF, typename T> __global__ void __launch_bounds__(CF::NT)
    scan_bwd_chunk_adj_kernel(float* adj, float* dts, const T* dout, const T* delta, const float* A,
                              const T* Cm, const T* z, const float* bias, bool softplus, int64_t L, int dim,
                              int N, int nc, int K, int ns, int chunk, int64_t ldbc) {
  constexpr int NS = CF::NS, DPB = CF::DPB, NPAD = CF::NPAD, IT = Tile<CF>::IT, ITB = Tile<CF>::ITB;
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
  const int64_t c0 = (int64_t)s * K * chunk, cend = min(L, c0 + (int64_t)K * chunk);
  const int nsub = static_cast<int>((cend - c0 + kTS - 1) / kTS);
  T rd[IT], rg[IT], rz[IT], rC[ITB];
  {
    const int64_t t0 = c0 + (int64_t)(nsub - 1) * kTS;
    prefetch_seq<CF, T>(rd, delta, b, t0, cend, dS, L, dim);
    prefetch_seq<CF, T>(rg, dout, b, t0, cend, dS, L, dim);
    prefetch_seq<CF, T>(rz, z, b, t0, cend, dS, L, dim);
    prefetch_bc<CF, T>(rC, Cm, b, t0, cend, L, N, ldbc);
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
      prefetch_bc<CF, T>(rC, Cm, b, t0 - kTS, cend, L, N, ldbc);
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
  store_chunk_end<CF>(adj, (int64_t)b * nc + (int64_t)s * K - 1, dh, dts, ((int64_t)b * ns + s) * dim + d, dsum,
                      d, g, dim, N);
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
// A checkpoint read again from local memory (an L1 hit): volatile, so that the compiler loads it
// anew instead of holding it in registers from the piece's recompute to its last reverse step
// (the halves' 96 registers spilled at fp32 otherwise).
__device__ __forceinline__ float reload(const float& ck) { return *static_cast<const volatile float*>(&ck); }

// Step tt of the staged sub-chunk applied to a thread's states (the checkpoint sweep's step).
template <class CF>
__device__ __forceinline__ void advance_staged(float (&h)[CF::NS], const float (&A2)[CF::NS], const float* s_dt,
                                               const float* s_u, const float* s_B, int tt, int dl, int g) {
  const float dtv = s_dt[tt * CF::DPB + dl];
  const float dtu = dtv * s_u[tt * CF::DPB + dl];
  float Bt[CF::NS];
  load_vec<CF::NS>(Bt, s_B + tt * CF::NPAD + g * CF::NS);
  advance_state<CF::NS>(h, A2, dtv, dtu, Bt);
}

// du, ddelta, dz of one channel from step t0 of a sub-chunk, for B3 configurations that store
// them step by step (CF::kBwdDirectOut, dstate 9..16): step tt at [tt * dim], for tt < n (0 past
// dim); null where not wanted. An int offset: tt * dim < 16 * 2^30 / 9 (check_dims) < 2^31.
template <typename T> struct OutRows {
  T *du = nullptr, *ddelta = nullptr, *dz = nullptr;
  int n = 0;
  OutRows() = default;
  __device__ OutRows(T* du_, T* ddelta_, T* dz_, int64_t at, int n_) : n(n_) {
    if (du_) du = du_ + at;
    if (ddelta_) ddelta = ddelta_ + at;
    if (dz_) dz = dz_ + at;
  }
};

// NP pieces (1, or CF::kBwdPieces): each sub-chunk is reversed in NP pieces of HS = kTS / NP
// steps, the last first, each from the state entering it (checkpoints the sweep keeps, or
// recomputed for the sub-chunk it does not walk): HS recomputed states in registers instead of
// 16. The states come from the same operations either way, and the sums keep their order: the
// same bits for any NP.
template <class CF, typename T, int NP> __global__ void __launch_bounds__(CF::NT, CF::bwd_min_blocks(NP))
    scan_bwd_main_kernel(T* du, T* ddelta, T* dz, float* dB_part, float* dC_part, float* adj, float* dD_part,
                         float* dbias_part, const T* dout, const T* u, const T* delta, const float* A,
                         const T* Bm, const T* Cm, const float* Dv, const T* z, const float* bias,
                         const float* states, bool softplus, int64_t L, int dim, int N, int nc, int batch,
                         int KC, int chunk, int64_t ldbc, bool async_stage) {
  constexpr int NS = CF::NS, LPD = CF::LPD, DPB = CF::DPB, NPAD = CF::NPAD, TD = CF::TD;
  // A dB/dC flush group may span pieces: the pieces run last to first, so all of its steps are
  // written by the time its first one flushes it.
  constexpr int TSB = CF::bwd_tsb(NP), NW = CF::NW, V = 2 * NS, HS = kTS / NP;
  constexpr int LOGV = log2c(V), K = 5 - CF::LOG_LPD;
  constexpr int CNT = (V >> K) > 1 ? (V >> K) : 1;
  extern __shared__ float4 smem_f4[];
  float* s_dt = reinterpret_cast<float*>(smem_f4);
  float* s_dsp = s_dt + TD;
  float* s_u = s_dsp + TD;
  float* s_dout = s_u + TD;
  float* s_z = s_dout + TD;
  float* s_du = s_z + TD;  // s_du, s_ddt, s_dz: unless CF::kBwdDirectOut
  float* s_ddt = s_du + TD;
  float* s_dz = s_ddt + TD;
  float* s_B = CF::kBwdDirectOut ? s_du : s_dz + TD;
  float* s_C = s_B + kTS * NPAD;
  float* s_part = s_C + kTS * NPAD;             // [NW][TSB][2][NPAD]
  float* s_red = s_part + NW * TSB * 2 * NPAD;  // [buffers][NW][V/4 slabs], when CF::kSmemReduce
  const RawTile<CF, T> raw(reinterpret_cast<float*>(smem_f4) +  // async_stage
                           CF::bwd_smem_floats(NP));
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
    const int64_t c0 = (int64_t)c * chunk, cend = min(L, c0 + chunk);
    const int nsubc = chunk / kTS;  // 1 (short chunks: no sweep) or kMaxNSub

    // The raw tile holds the inputs of the main loop's next sub-chunk (copied during the last one).
    bool staged = false;
    // Checkpoints: the state entering every piece (NP * s + p: piece p of sub-chunk s).
    float ck[NP * kMaxNSub][NS];  // indexed by a runtime sub-chunk: local memory
#pragma unroll 1
    for (int s = 0; s < nsubc; ++s) {
#pragma unroll
      for (int i = 0; i < NS; ++i) ck[NP * s][i] = h[i];
      const int64_t t0 = c0 + (int64_t)s * kTS;
      if (s == nsubc - 1 || t0 >= cend) continue;
      __syncthreads();
      stage_seq<CF, T>(s_dt, nullptr, s_u, nullptr, nullptr, nullptr, u, delta, nullptr, nullptr, bias,
                       softplus, b, t0, cend, d0, L, dim);
      stage_bc<CF, T>(s_B, Bm, b, t0, cend, L, N, ldbc);
      if (s + 2 < nsubc) {  // the sweep's next sub-chunk
        prefetch_stage<CF, T>({u, delta}, Bm, nullptr, b, t0 + kTS, cend, d0, L, dim, N, ldbc);
      } else if (async_stage && t0 + kTS < cend) {  // the main loop's first: the last sub-chunk
        stage_async<CF, T>(raw, u, delta, dout, z, Bm, Cm, b, t0 + kTS, cend, d0, L, dim, N, ldbc);
        staged = true;
      } else {
        prefetch_stage<CF, T>({u, delta, dout, z}, Bm, Cm, b, t0 + kTS, cend, d0, L, dim, N, ldbc);
      }
      __syncthreads();
#pragma unroll 4
      for (int tt = 0; tt < kTS; ++tt) {
        advance_staged<CF>(h, A2, s_dt, s_u, s_B, tt, dl, g);
#pragma unroll
        for (int p = 1; p < NP; ++p) {
          if (tt == p * HS - 1) {
#pragma unroll
            for (int i = 0; i < NS; ++i) ck[NP * s + p][i] = h[i];
          }
        }
      }
    }

    float dA_acc[NS];
#pragma unroll
    for (int i = 0; i < NS; ++i) dA_acc[i] = 0.f;
    float dD_acc = 0.f, db_acc = 0.f;
#pragma unroll 1
    for (int s = nsubc - 1; s >= 0; --s) {
      const int64_t t0 = c0 + (int64_t)s * kTS;
      if (t0 >= cend) continue;
      OutRows<T> orow;
      if constexpr (CF::kBwdDirectOut)
        orow = OutRows<T>(du, ddelta, has_z ? dz : nullptr, ((int64_t)b * L + t0) * dim + d,
                          d < dim ? static_cast<int>(min(cend - t0, (int64_t)kTS)) : 0);
      __syncthreads();
      if (staged) {
        cp_async_wait_all();
        __syncthreads();
        unpack_stage<CF, T>(s_dt, s_dsp, s_u, s_dout, has_z ? s_z : nullptr, s_B, s_C, raw, bias, softplus, t0,
                            cend, d0, dim, N);
      } else {
        stage_seq<CF, T>(s_dt, s_dsp, s_u, s_dout, has_z ? s_z : nullptr, nullptr, u, delta, dout, z, bias,
                         softplus, b, t0, cend, d0, L, dim);
        stage_bc<CF, T>(s_B, Bm, b, t0, cend, L, N, ldbc);
        stage_bc<CF, T>(s_C, Cm, b, t0, cend, L, N, ldbc);
      }
      if (s > 0 && !async_stage)  // the next sub-chunk back (u, delta, B were read by the sweep)
        prefetch_stage<CF, T>({dout, z}, nullptr, Cm, b, t0 - kTS, t0, d0, L, dim, N, ldbc);
      else if (s == 0 && c > c_lo)  // the previous chunk's first sub-chunk, for its sweep
        prefetch_stage<CF, T>({u, delta}, Bm, nullptr, b, t0 - chunk, t0 - chunk + kTS, d0, L, dim, N, ldbc);
      __syncthreads();
      // The raw tile is free once every thread has unpacked it: copy the next sub-chunk back into
      // it while this one computes.
      staged = async_stage && s > 0;
      if (staged) stage_async<CF, T>(raw, u, delta, dout, z, Bm, Cm, b, t0 - kTS, cend, d0, L, dim, N, ldbc);
      if constexpr (NP > 1) {
        if (s == nsubc - 1) {  // not walked by the sweep: the states entering pieces 1.., once more
          float hc[NS];
#pragma unroll
          for (int i = 0; i < NS; ++i) hc[i] = ck[NP * s][i];
#pragma unroll
          for (int p = 1; p < NP; ++p) {
#pragma unroll
            for (int tp = 0; tp < HS; ++tp)
              advance_staged<CF>(hc, A2, s_dt, s_u, s_B, (p - 1) * HS + tp, dl, g);
#pragma unroll
            for (int i = 0; i < NS; ++i) ck[NP * s + p][i] = hc[i];
          }
        }
      }
      // The pieces last to first, each recomputed from the state entering it.
#pragma unroll
      for (int p = NP - 1; p >= 0; --p) {
        const int p0 = p * HS;  // the piece's first step
        const float(&hin)[NS] = ck[NP * s + p];
        // The HS states of this piece, in registers.
        float hist[HS][NS];
        {
          float hc[NS];
#pragma unroll
          for (int i = 0; i < NS; ++i) hc[i] = hin[i];
#pragma unroll
          for (int tp = 0; tp < HS; ++tp) {
            const int tt = p0 + tp;
            const float dtv = s_dt[tt * DPB + dl];
            const float dtu = dtv * s_u[tt * DPB + dl];
            float Bt[NS];
            load_vec<NS>(Bt, s_B + tt * NPAD + g * NS);
#pragma unroll
            for (int i = 0; i < NS; ++i) {
              hc[i] = fast_exp2(dtv * A2[i]) * hc[i] + dtu * Bt[i];
              hist[tp][i] = hc[i];
            }
          }
        }
#pragma unroll
        for (int tp = HS - 1; tp >= 0; --tp) {
          const int tt = p0 + tp, o = tt * DPB + dl;
          const float dtv = s_dt[o], uv = s_u[o], dov = s_dout[o];
          float Bt[NS], Ct[NS];
          load_vec<NS>(Bt, s_B + tt * NPAD + g * NS);
          load_vec<NS>(Ct, s_C + tt * NPAD + g * NS);
          float gy = dov, dzv = 0.f;
          if (has_z) {
            float yp = 0.f;
#pragma unroll
            for (int i = 0; i < NS; ++i) yp += Ct[i] * hist[tp][i];
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
            const float hp = tp > 0 ? hist[tp > 0 ? tp - 1 : 0][i] : NP > 1 ? reload(hin[i]) : hin[i];
            const float a = fast_exp2(dtv * A2[i]);
            const float ah = a * hp;
            const float dhn = dh[i] + Ct[i] * gy;
            dup += dhn * Bt[i];
            const float q = dhn * ah;
            ddp += q * A2[i];
            dA_acc[i] += q * dtv;
            vals[i] = dhn * dtu;
            vals[NS + i] = gy * hist[tp][i];
            dh[i] = a * dhn;
          }
          dup = lane_allreduce<LPD>(dup);
          ddp = lane_allreduce<LPD>(ddp) * kLn2 + uv * dup;
          if (g == 0) {
            const float ddt = ddp * s_dsp[o];
            if constexpr (CF::kBwdDirectOut) {
              if (tt < orow.n) {  // the kernel's own pointers tested: one bit test each
                const int k = tt * dim;
                if (du) orow.du[k] = from_f<T>(Dd * gy + dtv * dup);
                if (ddelta) orow.ddelta[k] = from_f<T>(ddt);
                if (dz && has_z) orow.dz[k] = from_f<T>(dzv);
              }
            } else {
              s_du[o] = Dd * gy + dtv * dup;
              s_ddt[o] = ddt;
              s_dz[o] = dzv;
            }
            dD_acc += gy * uv;
            db_acc += ddt;
          }
          // dB, dC: sum over the warp's channels, then over the block's warps at the flush.
          float* dst = s_part + ((warp * TSB + tt % TSB) * 2) * NPAD;
          if constexpr (CF::kSmemReduce) {
            // Lane = channel * LPD + g writes its V values; lane o then sums output o (and o + 32)
            // of the LPD * V per channel, o = g * V + v, over the warp's channels in a fixed order.
            // With two buffers one __syncwarp per step orders the reads after the writes and the
            // next step's writes after the reads; one buffer needs a second after the reads.
            constexpr int CPW = 32 / LPD, OUT = LPD * V, SLAB = CF::kRedSlab;
            float* red = s_red + ((tt % CF::kRedBuffers) * NW + warp) * CF::kRedWarpFloats;
#pragma unroll
            for (int k = 0; k < V; k += 4)
              *reinterpret_cast<float4*>(red + (k / 4) * SLAB + lane * 4) = make_float4(
                  vals[k], vals[k + 1], vals[k + 2], vals[k + 3]);
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
            if constexpr (CF::kRedBuffers == 1) __syncwarp();
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
      }  // piece loop
      if constexpr (!CF::kBwdDirectOut) {
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

// ---- B4: deterministic column sums of the partials, all outputs in at most two launches --------
// Job j: out[m] = sum over rows r (fixed order) of in[r, m]. Jobs of more than kColsumOnePass rows
// sum splits of kColsumSplitRows rows into their own temp first (pass 1), then the splits (pass 2).
constexpr int64_t kColsumSplitRows = 32;
constexpr int64_t kColsumOnePass = 32;
constexpr int kMaxColsumJobs = 5;

struct ColsumJob {
  void* out;  // T when out_t, else float
  const float* in;
  float* temp;
  int64_t R, M;
  bool out_t;
};
// A launch's blocks are the jobs' blocks back to back: job k owns [first[k], first[k + 1]).
struct ColsumJobs {
  ColsumJob job[kMaxColsumJobs];
  int64_t first[kMaxColsumJobs + 1];
  int n = 0;
};

__host__ __device__ int64_t colsum_splits(int64_t R) { return (R + kColsumSplitRows - 1) / kColsumSplitRows; }
int64_t colsum_temp_floats(int64_t R, int64_t M) { return R <= kColsumOnePass ? 0 : colsum_splits(R) * M; }
__host__ __device__ bool colsum_split(const ColsumJob& j) { return j.R > kColsumOnePass; }
// Blocks of 256 columns x row splits a job needs in a pass: pass 1 sums the rows of one-pass jobs
// and the splits of the others, pass 2 sums the splits.
__host__ __device__ int64_t colsum_blocks(const ColsumJob& j, bool final_pass) {
  const int64_t bx = (j.M + 255) / 256;
  if (final_pass) return colsum_split(j) ? bx : 0;
  return colsum_split(j) ? bx * colsum_splits(j.R) : bx;
}

__device__ __forceinline__ float column_sum(const float* in, int64_t r, int64_t r1, int64_t M, int64_t m) {
  float s = 0.f;
  for (; r + 4 <= r1; r += 4) {
    const float a0 = in[r * M + m], a1 = in[(r + 1) * M + m], a2 = in[(r + 2) * M + m],
                a3 = in[(r + 3) * M + m];
    s += a0;
    s += a1;
    s += a2;
    s += a3;
  }
  for (; r < r1; ++r) s += in[r * M + m];
  return s;
}

template <typename T> __global__ void colsum_jobs_kernel(ColsumJobs jobs, bool final_pass) {
  int k = 0;
  while (k + 1 < jobs.n && (int64_t)blockIdx.x >= jobs.first[k + 1]) ++k;
  const ColsumJob& j = jobs.job[k];
  const int64_t local = (int64_t)blockIdx.x - jobs.first[k], bx = (j.M + 255) / 256;
  const int64_t split = local / bx, m = (local - split * bx) * 256 + threadIdx.x;
  if (m >= j.M) return;
  if (!final_pass && colsum_split(j)) {
    const int64_t r0 = split * kColsumSplitRows;
    j.temp[split * j.M + m] = column_sum(j.in, r0, min(j.R, r0 + kColsumSplitRows), j.M, m);
    return;
  }
  const float s = final_pass ? column_sum(j.temp, 0, colsum_splits(j.R), j.M, m)
                             : column_sum(j.in, 0, j.R, j.M, m);
  if (j.out_t) static_cast<T*>(j.out)[m] = from_f<T>(s);
  else static_cast<float*>(j.out)[m] = s;
}

template <typename T> void run_colsums(ColsumJobs jobs, cudaStream_t stream) {
  for (bool final_pass : {false, true}) {
    jobs.first[0] = 0;
    for (int k = 0; k < jobs.n; ++k) jobs.first[k + 1] = jobs.first[k] + colsum_blocks(jobs.job[k], final_pass);
    const int64_t blocks = jobs.first[jobs.n];
    if (blocks == 0) continue;
    S6_CHECK(blocks < (1LL << 31), "selective_scan_bwd: {} column-sum blocks", blocks);
    colsum_jobs_kernel<T><<<static_cast<unsigned>(blocks), 256, 0, stream>>>(jobs, final_pass);
  }
}

}  // namespace

namespace {
// B3's configuration with 8 states per thread, where CF is Cfg<4, 4> (dstate 9..16); 16 states
// per thread lost everywhere (docs/scan_notes.md, v9).
using WideBwdCfg = Cfg<8, 2, 128>;
template <class CF> constexpr bool has_wide_bwd = CF::NS == 4 && CF::LPD == 4;

// B3's configuration where CF runs the other kernels: WideBwdCfg when the plan says 8 states per
// thread.
template <class CF, typename Fn> void dispatch_bwd_main_cfg(int bwd_states, Fn&& fn) {
  if constexpr (has_wide_bwd<CF>) {
    if (bwd_states == 8) return fn(WideBwdCfg{});
  }
  fn(CF{});
}

// The backward's configurations at dstate N: fn(B1's, B3's).
template <typename Fn> void dispatch_bwd_cfgs(int64_t N, int bwd_states, Fn&& fn) {
  dispatch_cfg(
      N, [&](auto cf) { dispatch_bwd_main_cfg<decltype(cf)>(bwd_states, [&](auto cf3) { fn(cf, cf3); }); });
}

// B3's channel blocks at the most, over the configurations it may run at this dstate: the rows of
// dB/dC partials the workspace holds.
int64_t bwd_main_max_dblocks(int64_t dim, int64_t N) {
  int64_t dpb = 0;
  dispatch_cfg(N, [&](auto cf) {
    using CF = decltype(cf);
    dpb = has_wide_bwd<CF> ? std::min<int64_t>(CF::DPB, WideBwdCfg::DPB) : CF::DPB;
  });
  return (dim + dpb - 1) / dpb;
}

struct BwdLayout {
  int64_t adj, dts, dD, dbias, dB, dC, temp_dA, temp_dD, temp_dbias, temp_dB, temp_dC, total;
};
BwdLayout bwd_layout(int64_t batch, int64_t length, int64_t dim, int64_t dstate, int64_t chunk) {
  const int64_t nc = scan_num_chunks(length, chunk);
  const int64_t ndb = bwd_main_max_dblocks(dim, dstate);
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
  // The column sums run at once, so each has its own temp: dA, dD, ddelta_bias, dB, dC.
  l.temp_dA = off, off += up(colsum_temp_floats(rows, dim * dstate));
  l.temp_dD = off, off += up(colsum_temp_floats(rows, dim));
  l.temp_dbias = off, off += up(colsum_temp_floats(rows, dim));
  l.temp_dB = off, off += up(colsum_temp_floats(ndb, batch * length * dstate));
  l.temp_dC = off, off += up(colsum_temp_floats(ndb, batch * length * dstate));
  l.total = std::max<int64_t>(off, 1);
  return l;
}
}  // namespace

int64_t scan_bwd_workspace_floats(const ScanDims& d, const ScanPlan& plan) {
  return bwd_layout(d.batch, d.length, d.dim, d.dstate, plan.chunk).total;
}

void selective_scan_bwd(const ScanGradParams& args, const ScanPlan& plan) {
  const char* what = "selective_scan_bwd (CUDA)";
  const int64_t batch = args.dims.batch, length = args.dims.length, dim = args.dims.dim,
                dstate = args.dims.dstate;
  check_dims(what, batch, length, dim, dstate);
  check_dtype(what, args.dtype);
  check_plan(what, plan);
  const int64_t ldbc = args.bc_row_stride ? args.bc_row_stride : dstate;
  S6_CHECK(ldbc >= dstate, "{}: B/C row stride {} is below dstate {}", what, ldbc, dstate);
  cudaStream_t stream = static_cast<cudaStream_t>(args.stream);
  void *du = args.du, *ddelta = args.ddelta, *dB = args.dB, *dC = args.dC, *dz = args.dz;
  float* dA = static_cast<float*>(args.dA);
  float* dD = static_cast<float*>(args.dD);
  float* ddelta_bias = static_cast<float*>(args.ddelta_bias);
  float* workspace = args.workspace;
  const void *dout = args.dout, *u = args.u, *delta = args.delta, *B = args.B, *C = args.C, *z = args.z;
  const float* A = static_cast<const float*>(args.A);
  const float* D = static_cast<const float*>(args.D);
  const float* delta_bias = static_cast<const float*>(args.delta_bias);
  const float* chunk_states = args.chunk_states;
  const bool delta_softplus = args.delta_softplus;
  const ScanDType dtype = args.dtype;
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
  for (auto [name, p] : std::initializer_list<NamedPtr>{{"du", du},
                                                        {"ddelta", ddelta},
                                                        {"dB", dB},
                                                        {"dC", dC},
                                                        {"dz", dz},
                                                        {"dout", dout},
                                                        {"u", u},
                                                        {"delta", delta},
                                                        {"B", B},
                                                        {"C", C},
                                                        {"z", z}})
    if (p) check_aligned(what, name, p, es);
  for (auto [name, p] : std::initializer_list<NamedPtr>{{"dA", dA},
                                                        {"dD", dD},
                                                        {"ddelta_bias", ddelta_bias},
                                                        {"workspace", workspace},
                                                        {"A", A},
                                                        {"D", D},
                                                        {"delta_bias", delta_bias},
                                                        {"chunk_states", chunk_states}})
    if (p) check_aligned(what, name, p, 4);
  check_aligned(what, "workspace", workspace, 16);
  const int64_t chunk = plan.chunk;
  const int64_t nc = scan_num_chunks(length, chunk);
  const BwdLayout lay = bwd_layout(batch, length, dim, dstate, chunk);
  float* adj = workspace + lay.adj;
  float* dts = workspace + lay.dts;
  float* dD_part = workspace + lay.dD;
  float* dbias_part = workspace + lay.dbias;
  float* dB_part = workspace + lay.dB;
  float* dC_part = workspace + lay.dC;
  dispatch_dtype(dtype, [&](auto ttag) {
    using T = decltype(ttag);
    dispatch_bwd_cfgs(dstate, plan.bwd_states, [&](auto cf, auto cf3) {
      using CF = decltype(cf);    // B1
      using CF3 = decltype(cf3);  // B3, its partials and their column sums
      const unsigned dblocks = static_cast<unsigned>((dim + CF::DPB - 1) / CF::DPB);
      const unsigned dblocks3 = static_cast<unsigned>((dim + CF3::DPB - 1) / CF3::DPB);
      const T* ut = static_cast<const T*>(u);
      const T* dt = static_cast<const T*>(delta);
      const T* Bt = static_cast<const T*>(B);
      const T* Ct = static_cast<const T*>(C);
      const T* zt = static_cast<const T*>(z);
      const T* dot = static_cast<const T*>(dout);
      // B1, B2 and B3 share the super-chunks; B3's grid is the one to fill.
      const Split sp = split_chunks(nc, int64_t(dblocks3) * batch, plan.bwd_blocks);
      if (sp.ns > 1) {
        const size_t smem = (2 * CF::TD + kTS * CF::NPAD) * sizeof(float);
        auto k1 = scan_bwd_chunk_adj_kernel<CF, T>;
        set_smem(k1, smem);
        k1<<<dim3(static_cast<unsigned>(sp.ns - 1), dblocks, static_cast<unsigned>(batch)), CF::NT, smem,
             stream>>>(adj, dts, dot, dt, A, Ct, zt, delta_bias, delta_softplus, length, static_cast<int>(dim),
                       static_cast<int>(dstate), static_cast<int>(nc), static_cast<int>(sp.K),
                       static_cast<int>(sp.ns), static_cast<int>(chunk), ldbc);
        check_launch("selective_scan_bwd chunk adjoints");
      }
      launch_combine<true>(adj, dts, A, nullptr, nc, sp.ns, sp.K, batch, dim, dstate, stream);
      check_launch("selective_scan_bwd chunk combine");
      // Asynchronous staging when the rows allow 16-byte (per-channel) and 4-byte (B, C) copies.
      const bool async_stage = async_rows_fit<T>(CF3::DPB) &&
                               dim % (16 / static_cast<int64_t>(sizeof(T))) == 0 && is_aligned(ut, 16) &&
                               is_aligned(dt, 16) && is_aligned(dot, 16) && is_aligned(zt, 16) &&
                               is_aligned(Bt, 4) && is_aligned(Ct, 4) && (ldbc * sizeof(T)) % 4 == 0 &&
                               (dstate * sizeof(T)) % 4 == 0 && !plan.sync_staging;
      // B3 in CF3::kBwdPieces pieces per sub-chunk (1 where no pieced variant is built).
      constexpr int np = CF3::kBwdPieces;
      auto k3 = scan_bwd_main_kernel<CF3, T, np>;
      const size_t smem = (CF3::bwd_smem_floats(np) + (async_stage ? CF3::kBwdRawFloats : 0)) * sizeof(float);
      set_smem(k3, smem);
      k3<<<dim3(static_cast<unsigned>(sp.ns), dblocks3, static_cast<unsigned>(batch)), CF3::NT, smem, stream>>>(
          static_cast<T*>(du), static_cast<T*>(ddelta), static_cast<T*>(dz), dB_part, dC_part, adj, dD_part,
          dbias_part, dot, ut, dt, A, Bt, Ct, D, zt, delta_bias, chunk_states, delta_softplus, length,
          static_cast<int>(dim), static_cast<int>(dstate), static_cast<int>(nc), static_cast<int>(batch),
          static_cast<int>(sp.K), static_cast<int>(chunk), ldbc, async_stage);
      check_launch("selective_scan_bwd main");
      const int64_t rows = batch * nc, bln = batch * length * dstate;
      ColsumJobs jobs;
      auto add = [&](void* out, const float* in, int64_t temp_at, int64_t R, int64_t M, bool out_t) {
        if (out) jobs.job[jobs.n++] = ColsumJob{out, in, workspace + temp_at, R, M, out_t};
      };
      add(dA, adj, lay.temp_dA, rows, dim * dstate, false);
      add(dD, dD_part, lay.temp_dD, rows, dim, false);
      add(ddelta_bias, dbias_part, lay.temp_dbias, rows, dim, false);
      add(dB, dB_part, lay.temp_dB, dblocks3, bln, true);  // B3's channel blocks (<= the layout's)
      add(dC, dC_part, lay.temp_dC, dblocks3, bln, true);
      run_colsums<T>(jobs, stream);
      check_launch("selective_scan_bwd reductions");
    });
  });
}

}  // namespace s6::kernels::cuda
