// Paged decode attention on the CPU: one query token per row over the row's cached keys, read in
// place from the block pool (no gather, no mask tensor). fp32 throughout.
#include "warmfast.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

namespace warmfast {

// q:      [rows, hq, d]                       query of each row's newest token
// k, v:   [num_blocks, block_size, hk, d]     the paged cache
// tables: [rows, max_blocks] int32            block of token t of row b: tables[b, t / block_size]
// lens:   [rows] int32                        keys per row (>= 1, checked by the caller)
// out:    [rows, hq, d]
// A task is one (row, kv head): its hq / hk query heads share every key and value load.
void paged_decode_attention(const float* q, const float* k, const float* v, const int32_t* tables,
                            const int32_t* lens, float* out, int64_t rows, int64_t hq, int64_t hk,
                            int64_t d, int64_t block_size, int64_t max_blocks, float scale) {
  const int64_t groups = hq / hk;
  const int64_t token_stride = hk * d;  // between consecutive slots of a block
  const int64_t block_stride = block_size * token_stride;
#pragma omp parallel
  {
    std::vector<float> scores;  // [groups, len] for the current task
#pragma omp for schedule(dynamic, 1) collapse(2)
    for (int64_t b = 0; b < rows; ++b) {
      for (int64_t h = 0; h < hk; ++h) {
        const int64_t len = lens[b];
        const int32_t* table = tables + b * max_blocks;
        scores.assign(static_cast<size_t>(groups * len), 0.0f);
        const float* qh = q + (b * hq + h * groups) * d;  // [groups, d]
        for (int64_t t = 0; t < len; ++t) {
          const float* kt = k + table[t / block_size] * block_stride + (t % block_size) * token_stride + h * d;
          for (int64_t g = 0; g < groups; ++g) {
            const float* qg = qh + g * d;
            float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
            for (int64_t i = 0; i < d; ++i) acc += qg[i] * kt[i];
            scores[g * len + t] = acc * scale;
          }
        }
        for (int64_t g = 0; g < groups; ++g) {  // softmax over the row's keys
          float* s = scores.data() + g * len;
          const float m = *std::max_element(s, s + len);
          double sum = 0.0;
          for (int64_t t = 0; t < len; ++t) {
            s[t] = std::exp(s[t] - m);
            sum += s[t];
          }
          const float inv = static_cast<float>(1.0 / sum);
          for (int64_t t = 0; t < len; ++t) s[t] *= inv;
        }
        float* oh = out + (b * hq + h * groups) * d;
        std::fill(oh, oh + groups * d, 0.0f);
        for (int64_t t = 0; t < len; ++t) {
          const float* vt = v + table[t / block_size] * block_stride + (t % block_size) * token_stride + h * d;
          for (int64_t g = 0; g < groups; ++g) {
            const float p = scores[g * len + t];
            float* og = oh + g * d;
#pragma omp simd
            for (int64_t i = 0; i < d; ++i) og[i] += p * vt[i];
          }
        }
      }
    }
  }
}

}  // namespace warmfast
