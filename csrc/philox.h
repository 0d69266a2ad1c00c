// Counter-based Philox4x32-10 (Salmon et al., SC'11). Pure function of (key, counter):
// the same 128 random bits for the same (seed, request, step, index) on any thread or device.
#pragma once
#include <cstdint>

namespace warmfast {

struct Philox4 { uint32_t v[4]; };

inline void mulhilo32(uint32_t a, uint32_t b, uint32_t& hi, uint32_t& lo) {
  const uint64_t p = static_cast<uint64_t>(a) * static_cast<uint64_t>(b);
  hi = static_cast<uint32_t>(p >> 32);
  lo = static_cast<uint32_t>(p);
}

// 10 rounds, constants from the Random123 reference.
inline Philox4 philox4x32_10(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3,
                             uint32_t k0, uint32_t k1) {
  constexpr uint32_t M0 = 0xD2511F53u, M1 = 0xCD9E8D57u;
  constexpr uint32_t W0 = 0x9E3779B9u, W1 = 0xBB67AE85u;
  for (int r = 0; r < 10; ++r) {
    uint32_t hi0, lo0, hi1, lo1;
    mulhilo32(M0, c0, hi0, lo0);
    mulhilo32(M1, c2, hi1, lo1);
    const uint32_t n0 = hi1 ^ c1 ^ k0, n1 = lo1, n2 = hi0 ^ c3 ^ k1, n3 = lo0;
    c0 = n0; c1 = n1; c2 = n2; c3 = n3;
    k0 += W0; k1 += W1;
  }
  return Philox4{{c0, c1, c2, c3}};
}

// Uniform in the open interval (0, 1): (x + 0.5) / 2^32, exact in double.
inline double uint_to_unit_open(uint32_t x) {
  return (static_cast<double>(x) + 0.5) * (1.0 / 4294967296.0);
}

// The random word for vocabulary entry `index` of (seed, request, step).
// Counter = (index / 4, step, request_lo, request_hi); key = (seed_lo, seed_hi); lane = index % 4.
inline uint32_t philox_word(uint64_t seed, uint64_t request, uint32_t step, uint32_t index) {
  const Philox4 r = philox4x32_10(index >> 2, step, static_cast<uint32_t>(request),
                                  static_cast<uint32_t>(request >> 32),
                                  static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
  return r.v[index & 3u];
}

}  // namespace warmfast
