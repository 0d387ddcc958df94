// Counter-based Philox4x32-10 RNG. The whole state is two integers (seed, offset), so it can be
// saved, restored and seeked; the same function runs on host and device.
#pragma once
#include <cstdint>

#if defined(__CUDACC__)
#define S6_HOST_DEVICE __host__ __device__
#else
#define S6_HOST_DEVICE
#endif

namespace s6 {

struct PhiloxBlock {
  uint32_t v[4];
};

// One Philox4x32-10 block: 4 random words for (key = seed, counter = (lo, hi)).
S6_HOST_DEVICE inline PhiloxBlock philox4x32(uint64_t seed, uint64_t counter_lo, uint64_t counter_hi) {
  uint32_t k0 = static_cast<uint32_t>(seed), k1 = static_cast<uint32_t>(seed >> 32);
  uint32_t c0 = static_cast<uint32_t>(counter_lo), c1 = static_cast<uint32_t>(counter_lo >> 32);
  uint32_t c2 = static_cast<uint32_t>(counter_hi), c3 = static_cast<uint32_t>(counter_hi >> 32);
  for (int round = 0; round < 10; ++round) {
    uint64_t p0 = static_cast<uint64_t>(0xD2511F53u) * c0;
    uint64_t p1 = static_cast<uint64_t>(0xCD9E8D57u) * c2;
    uint32_t hi0 = static_cast<uint32_t>(p0 >> 32), lo0 = static_cast<uint32_t>(p0);
    uint32_t hi1 = static_cast<uint32_t>(p1 >> 32), lo1 = static_cast<uint32_t>(p1);
    c0 = hi1 ^ c1 ^ k0;
    c1 = lo1;
    c2 = hi0 ^ c3 ^ k1;
    c3 = lo0;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  return PhiloxBlock{{c0, c1, c2, c3}};
}

// Uniform in [0, 1) with 24 random bits (exactly representable in float).
S6_HOST_DEVICE inline float uint_to_unit_float(uint32_t x) { return (x >> 8) * (1.0f / 16777216.0f); }
S6_HOST_DEVICE inline double uint_to_unit_double(uint32_t hi, uint32_t lo) {
  uint64_t bits = (static_cast<uint64_t>(hi) << 21) ^ (lo >> 11);
  return static_cast<double>(bits & ((1ull << 53) - 1)) * (1.0 / 9007199254740992.0);
}

// Sequential generator over one stream: block k of stream s is philox4x32(seed, k, s).
// State = (seed, offset): offset counts the 32-bit words already drawn.
class Philox {
 public:
  explicit Philox(uint64_t seed = 0, uint64_t stream = 0, uint64_t offset = 0)
      : seed_(seed), stream_(stream), offset_(offset) {}

  uint64_t seed() const { return seed_; }
  uint64_t stream() const { return stream_; }
  uint64_t offset() const { return offset_; }
  void seek(uint64_t offset) { offset_ = offset; }

  uint32_t next_u32() {
    PhiloxBlock b = philox4x32(seed_, offset_ / 4, stream_);
    return b.v[offset_++ % 4];
  }
  // Uniform double in [0, 1).
  double uniform() {
    uint32_t hi = next_u32(), lo = next_u32();
    return uint_to_unit_double(hi, lo);
  }
  // Uniform integer in [0, n) (n > 0), by rejection so every value is equally likely.
  uint64_t below(uint64_t n);
  // Standard normal by Box-Muller (one value per call; two uniforms consumed).
  double normal();

 private:
  uint64_t seed_, stream_, offset_;
};

}  // namespace s6
