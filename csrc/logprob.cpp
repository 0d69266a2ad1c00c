// Log-softmax + target gather + argmax over float32 rows, without writing a log-softmax tensor.
//
// The row's logsumexp is max + log(sum exp(x - max)). The exponentials use exp_neg below (range
// reduction to 2^n * e^g, |g| <= ln2/2, and a degree-6 Taylor polynomial: relative error about
// 1.2e-7, one float ulp), written so the compiler vectorizes it, and are summed in float over
// blocks of 1024 entries and in double across blocks. On x86-64 with GCC the hot loop is also
// compiled for AVX2 and AVX-512 and the best one is picked at load time (target_clones).
#include "warmfast.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define WF_CLONES __attribute__((target_clones("avx512f", "avx2,fma", "default")))
#else
#define WF_CLONES
#endif

namespace warmfast {

namespace {

// e^x for x <= 0 (x is a logit minus the row maximum); x below -87 gives e^-87 (~1.6e-38), whose
// contribution to a sum that holds e^0 = 1 is far below float resolution.
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

WF_CLONES float row_max(const float* x, int64_t n) {
  float m = -std::numeric_limits<float>::infinity();
#pragma omp simd reduction(max : m)
  for (int64_t i = 0; i < n; ++i) m = x[i] > m ? x[i] : m;
  return m;
}

WF_CLONES double row_sum_exp(const float* x, int64_t n, float m) {
  constexpr int64_t kBlock = 1024;
  double total = 0.0;
  for (int64_t s = 0; s < n; s += kBlock) {
    const int64_t e = std::min(n, s + kBlock);
    float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
    for (int64_t i = s; i < e; ++i) acc += exp_neg(x[i] - m);
    total += acc;
  }
  return total;
}

}  // namespace

void logprob_rows(const float* logits, int64_t rows, int64_t vocab, const int64_t* targets,
                  float* out_logprob, int64_t* out_argmax, float* out_lse) {
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    const float* x = logits + r * vocab;
    const float best = row_max(x, vocab);
    int64_t best_i = 0;  // the first maximum, like torch.argmax (a row of NaN keeps 0)
    for (int64_t i = 0; i < vocab; ++i) {
      if (x[i] == best) { best_i = i; break; }
    }
    const double lse = static_cast<double>(best) + std::log(row_sum_exp(x, vocab, best));
    out_logprob[r] = static_cast<float>(static_cast<double>(x[targets[r]]) - lse);
    out_argmax[r] = best_i;
    out_lse[r] = static_cast<float>(lse);
  }
}

}  // namespace warmfast
