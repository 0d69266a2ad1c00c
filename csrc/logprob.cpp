// Log-softmax + target gather + argmax over float32 rows, without writing a log-softmax tensor.
#include "warmfast.h"

#include <cmath>
#include <limits>

namespace warmfast {

void logprob_rows(const float* logits, int64_t rows, int64_t vocab, const int64_t* targets,
                  float* out_logprob, int64_t* out_argmax, float* out_lse) {
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    const float* x = logits + r * vocab;
    float best = -std::numeric_limits<float>::infinity();
    int64_t best_i = 0;
    for (int64_t i = 0; i < vocab; ++i) {
      if (x[i] > best) { best = x[i]; best_i = i; }  // first maximum wins, like torch.argmax
    }
    double sum = 0.0;  // double accumulation: vocab up to 256k terms
    for (int64_t i = 0; i < vocab; ++i) sum += std::exp(static_cast<double>(x[i]) - best);
    const double lse = static_cast<double>(best) + std::log(sum);
    out_logprob[r] = static_cast<float>(static_cast<double>(x[targets[r]]) - lse);
    out_argmax[r] = best_i;
    out_lse[r] = static_cast<float>(lse);
  }
}

}  // namespace warmfast
