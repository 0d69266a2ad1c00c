// Batch-invariant sampling: the token of a row is a pure function of
// (its probabilities, seed, request id, step). Exponential race (equivalently Gumbel-max):
//   token = argmax_i p_i / E_i,  E_i = -log(u_i),  u_i = Philox(seed, request, step, i)
// picks i with probability p_i and needs no prefix sum, so the result does not depend on the
// order of a reduction: the Triton kernel computes the same per-entry values in float64.
#include "philox.h"
#include "warmfast.h"

#include <cmath>

namespace warmfast {

int64_t sample_row(const float* probs, int64_t vocab, uint64_t seed, uint64_t request,
                   uint32_t step) {
  double best = -1.0;
  int64_t best_i = -1;
  for (int64_t i = 0; i < vocab; ++i) {
    const double p = static_cast<double>(probs[i]);
    if (!(p > 0.0)) continue;  // zero (filtered) entries never win; NaN never wins either
    const double e = -std::log(uint_to_unit_open(philox_word(seed, request, step,
                                                             static_cast<uint32_t>(i))));
    const double key = p / e;
    if (key > best) { best = key; best_i = i; }
  }
  return best_i;  // -1 only for an all-zero row; the binding reports it
}

void sample_rows(const float* probs, int64_t rows, int64_t vocab, const uint64_t* seeds,
                 const uint64_t* requests, const uint32_t* steps, int64_t* out) {
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    out[r] = sample_row(probs + r * vocab, vocab, seeds[r], requests[r], steps[r]);
  }
}

void uniform_words(uint64_t seed, uint64_t request, uint32_t step, int64_t n, uint32_t* out) {
  for (int64_t i = 0; i < n; ++i) out[i] = philox_word(seed, request, step, static_cast<uint32_t>(i));
}

}  // namespace warmfast
