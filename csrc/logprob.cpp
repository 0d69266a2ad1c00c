// Log-softmax + target gather + argmax over float32 rows, without writing a log-softmax tensor.
//
// The row's logsumexp is max + log(sum exp(x - max)). The exponentials use exp_neg (simd.h, one
// float ulp, vectorized) and are summed in float over blocks of 1024 entries and in double across
// blocks.
#include "simd.h"
#include "warmfast.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace warmfast {

namespace {

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
