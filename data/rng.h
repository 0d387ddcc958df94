// Per-example counter-based random streams for the task generators (Philox4x32-10, no state beyond counters).
#pragma once
#include <cstdint>

#include "core/philox.h"

namespace s6::data {

enum class Split : uint32_t { Train = 0, Validation = 1 };

// 64-bit Philox key for one (seed, split, task signature). Training and validation keys differ for
// every seed, so validation sets never overlap the training stream by construction.
inline uint64_t derive_key(uint64_t seed, Split split, uint64_t task_id, uint64_t a, uint64_t b, uint64_t c) {
  auto fold = [](PhiloxBlock x) {
    return static_cast<uint64_t>(x.v[0]) | (static_cast<uint64_t>(x.v[1]) << 32);
  };
  constexpr uint64_t kDomain = 0x5336444154415321ull;  // "S6DATA!"
  uint64_t k = fold(philox4x32(seed, kDomain, static_cast<uint64_t>(split)));
  k = fold(philox4x32(k, task_id, a));
  return fold(philox4x32(k, b, c));
}

// Uniform integer in [0, n) by Lemire's multiply-and-reject (exactly uniform); precomputed per n.
struct Bounded {
  uint32_t n = 1;
  uint32_t threshold = 0;  // reject when the low part of the product is below this
  bool small = true;       // n <= 256: one random byte per draw
  Bounded() = default;
  S6_HOST_DEVICE explicit Bounded(uint32_t n_) : n(n_), small(n_ <= 256) {
    threshold = small ? (256u - n) % n : static_cast<uint32_t>(-n) % n;
  }
  // One draw from a random byte (small) or word (otherwise): false when it is rejected.
  S6_HOST_DEVICE bool accept(uint32_t bits, uint32_t& value) const {
    if (small) {
      const uint32_t m = bits * n;
      value = m >> 8;
      return (m & 0xffu) >= threshold;
    }
    const uint64_t m = static_cast<uint64_t>(bits) * n;
    value = static_cast<uint32_t>(m >> 32);
    return static_cast<uint32_t>(m) >= threshold;
  }
};

// The random stream of one example: block j is philox4x32(key, (example << 32) | j, batch_index).
// Different (batch_index, example) pairs read disjoint counter ranges. Host and device code share
// it: the device generators (data/device_sampling.cu) must reproduce these streams bit for bit.
class ExampleRng {
 public:
  S6_HOST_DEVICE ExampleRng(uint64_t key, uint64_t batch_index, uint64_t example)
      : key_(key), hi_(batch_index), lo_(example << 32) {}

  S6_HOST_DEVICE uint32_t u32() {
    if (word_ == 4) refill();
    return block_.v[word_++];
  }
  S6_HOST_DEVICE uint32_t byte() {
    if (bytes_left_ == 0) {
      bits_ = u32();
      bytes_left_ = 4;
    }
    uint32_t b = bits_ & 0xffu;
    bits_ >>= 8;
    --bytes_left_;
    return b;
  }
  S6_HOST_DEVICE uint32_t below(const Bounded& d) {
    uint32_t v = 0;
    while (!d.accept(d.small ? byte() : u32(), v)) {
    }
    return v;
  }
  S6_HOST_DEVICE uint32_t below(uint32_t n) { return below(Bounded(n)); }

  // Where the stream stands, so that a parallel generator can continue it: the index of the word
  // the next u32() returns, the bytes byte() still holds from its last word, and any word by index.
  S6_HOST_DEVICE uint64_t next_word() const { return block_index_ * 4 + word_ - 4; }
  S6_HOST_DEVICE int pending_bytes() const { return bytes_left_; }
  S6_HOST_DEVICE uint32_t pending_bits() const { return bits_; }
  S6_HOST_DEVICE uint32_t word_at(uint64_t w) const { return philox4x32(key_, lo_ + w / 4, hi_).v[w % 4]; }

 private:
  S6_HOST_DEVICE void refill() {
    block_ = philox4x32(key_, lo_ + block_index_++, hi_);
    word_ = 0;
  }
  uint64_t key_, hi_, lo_;
  uint64_t block_index_ = 0;
  PhiloxBlock block_{};
  int word_ = 4;
  uint32_t bits_ = 0;
  int bytes_left_ = 0;
};

}  // namespace s6::data
