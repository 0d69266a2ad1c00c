// Hot loops of the CPU path: vectorization helpers shared by the .cpp files.
#pragma once
#include <cstdint>
#include <cstring>

// WF_CLONES: compile a function for AVX-512, AVX2+FMA and the baseline; the loader picks the best
// one for the machine (GCC target_clones on x86-64; elsewhere one plain build).
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define WF_CLONES __attribute__((target_clones("avx512f", "avx2,fma", "default")))
#else
#define WF_CLONES
#endif

namespace warmfast {

// e^x for x <= 0 in float, written so compilers vectorize it (no libm call). Range reduction
// x = n ln2 + g, |g| <= ln2/2, then a degree-6 Taylor polynomial for e^g: relative error about
// 1.2e-7 (one float ulp). x below -87 is clamped (e^-87 ~ 1.6e-38).
inline float exp_neg(float x) {
  x = x < -87.0f ? -87.0f : x;
  const float t = x * 1.44269504088896341f;  // x / ln2
  const float shifter = 12582912.0f;         // 1.5 * 2^23: adding it rounds t to an integer
  const float r = t + shifter;
  int32_t rbits, sbits;
  std::memcpy(&rbits, &r, 4);
  std::memcpy(&sbits, &shifter, 4);
  const int32_t n = rbits - sbits;            // round(t), in [-126, 0]
  const float g = (t - (r - shifter)) * 0.693147180559945309f;  // x - n ln2, |g| <= ln2 / 2
  float p = 1.0f / 720.0f;
  p = p * g + 1.0f / 120.0f;
  p = p * g + 1.0f / 24.0f;
  p = p * g + 1.0f / 6.0f;
  p = p * g + 0.5f;
  p = p * g + 1.0f;
  p = p * g + 1.0f;  // e^g
  int32_t pbits;
  std::memcpy(&pbits, &p, 4);
  pbits += n * (1 << 23);  // times 2^n: p in [0.7, 1.42] and n >= -126 keep it a normal float
  float out;
  std::memcpy(&out, &pbits, 4);
  return out;
}

}  // namespace warmfast
