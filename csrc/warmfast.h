#pragma once
#include <cstdint>

namespace warmfast {

// logits: [rows, vocab] float32 row-major; targets: [rows].
// Writes log p(target), argmax and logsumexp for every row.
void logprob_rows(const float* logits, int64_t rows, int64_t vocab, const int64_t* targets,
                  float* out_logprob, int64_t* out_argmax, float* out_lse);

// probs: [rows, vocab] float32, not necessarily normalised (only ratios matter).
void sample_rows(const float* probs, int64_t rows, int64_t vocab, const uint64_t* seeds,
                 const uint64_t* requests, const uint32_t* steps, int64_t* out);

// The first n Philox words of (seed, request, step): exposed so tests can check the generator.
void uniform_words(uint64_t seed, uint64_t request, uint32_t step, int64_t n, uint32_t* out);

}  // namespace warmfast
