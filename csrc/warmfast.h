#pragma once
#include <cstdint>

namespace warmfast {

// logits: [rows, vocab] float32 row-major; targets: [rows].
// Writes log p(target), argmax and logsumexp for every row.
void logprob_rows(const float* logits, int64_t rows, int64_t vocab, const int64_t* targets,
                  float* out_logprob, int64_t* out_argmax, float* out_lse);

// Paged decode attention (attention.cpp): q [rows, hq, d]; k, v [num_blocks, block_size, hk, d];
// tables [rows, max_blocks]; lens [rows] >= 1; out [rows, hq, d]; all row-major, hq % hk == 0.
void paged_decode_attention(const float* q, const float* k, const float* v, const int32_t* tables,
                            const int32_t* lens, float* out, int64_t rows, int64_t hq, int64_t hk,
                            int64_t d, int64_t block_size, int64_t max_blocks, float scale);

// Per-row sampling settings (see sampling.cpp for the exact contract).
// temperature 0 = greedy; top_k 0 = off; top_p 1 = off; min_p 0 = off.
struct SampleParams {
  double temperature = 1.0;
  int64_t top_k = 0;
  double top_p = 1.0;
  double min_p = 0.0;
};

// probs: [rows, vocab] float32, not necessarily normalised (only ratios matter).
// out[r] = the sampled index, or -1 when row r has no positive finite entry.
void sample_rows(const float* probs, int64_t rows, int64_t vocab, const uint64_t* seeds,
                 const uint64_t* requests, const uint32_t* steps, const SampleParams* params,
                 int64_t* out);

// One row of the above.
int64_t sample_row(const float* probs, int64_t vocab, uint64_t seed, uint64_t request,
                   uint32_t step, const SampleParams& params);

// The first n Philox words of (seed, request, step): exposed so tests can check the generator.
void uniform_words(uint64_t seed, uint64_t request, uint32_t step, int64_t n, uint32_t* out);

}  // namespace warmfast
