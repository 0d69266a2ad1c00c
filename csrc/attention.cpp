// Paged decode attention on the CPU: one query token per row over the row's cached keys, read in
// place from the block pool (no gather, no mask tensor). fp32 throughout.
#include "simd.h"
#include "warmfast.h"

#include <algorithm>
#include <vector>

namespace warmfast {

namespace {

// One (row, kv head): its `groups` query heads over the row's `len` keys. scores: [groups, len].
// Scores are dot products taken four keys at a time: four independent accumulators keep the
// vector units busy while each horizontal sum finishes (one key at a time is latency-bound).
WF_CLONES void attend(const float* qh, const float* k, const float* v, const int32_t* table, int64_t len,
                      int64_t groups, int64_t d, int64_t block_size, int64_t block_stride,
                      int64_t token_stride, int64_t head_offset, float scale, float* scores, float* oh) {
  for (int64_t t0 = 0, j = 0; t0 < len; t0 += block_size, ++j) {  // block by block, no division
    const float* blk = k + table[j] * block_stride + head_offset;
    const int64_t n = std::min(block_size, len - t0);
    for (int64_t g = 0; g < groups; ++g) {
      const float* qg = qh + g * d;
      float* s = scores + g * len + t0;
      int64_t r = 0;
      for (; r + 4 <= n; r += 4) {
        const float* k0 = blk + r * token_stride;
        const float* k1 = k0 + token_stride;
        const float* k2 = k1 + token_stride;
        const float* k3 = k2 + token_stride;
        float a0 = 0.0f, a1 = 0.0f, a2 = 0.0f, a3 = 0.0f;
#pragma omp simd reduction(+ : a0, a1, a2, a3)
        for (int64_t i = 0; i < d; ++i) {
          a0 += qg[i] * k0[i];
          a1 += qg[i] * k1[i];
          a2 += qg[i] * k2[i];
          a3 += qg[i] * k3[i];
        }
        s[r] = a0 * scale;
        s[r + 1] = a1 * scale;
        s[r + 2] = a2 * scale;
        s[r + 3] = a3 * scale;
      }
      for (; r < n; ++r) {
        const float* kr = blk + r * token_stride;
        float a = 0.0f;
#pragma omp simd reduction(+ : a)
        for (int64_t i = 0; i < d; ++i) a += qg[i] * kr[i];
        s[r] = a * scale;
      }
    }
  }
  for (int64_t g = 0; g < groups; ++g) {  // softmax over the row's keys
    float* s = scores + g * len;
    float m = s[0];
#pragma omp simd reduction(max : m)
    for (int64_t t = 1; t < len; ++t) m = s[t] > m ? s[t] : m;
    float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
    for (int64_t t = 0; t < len; ++t) {
      s[t] = exp_neg(s[t] - m);
      sum += s[t];
    }
    const float inv = 1.0f / sum;
#pragma omp simd
    for (int64_t t = 0; t < len; ++t) s[t] *= inv;
  }
  std::fill(oh, oh + groups * d, 0.0f);
  for (int64_t t0 = 0, j = 0; t0 < len; t0 += block_size, ++j) {
    const float* blk = v + table[j] * block_stride + head_offset;
    const int64_t n = std::min(block_size, len - t0);
    for (int64_t r = 0; r < n; ++r) {
      const float* vt = blk + r * token_stride;
      for (int64_t g = 0; g < groups; ++g) {
        const float p = scores[g * len + t0 + r];
        float* og = oh + g * d;
#pragma omp simd
        for (int64_t i = 0; i < d; ++i) og[i] += p * vt[i];
      }
    }
  }
}

}  // namespace

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
    std::vector<float> scores;  // [groups, len] of the current task
#pragma omp for schedule(dynamic, 4) collapse(2)
    for (int64_t b = 0; b < rows; ++b) {
      for (int64_t h = 0; h < hk; ++h) {
        const int64_t len = lens[b];
        scores.resize(static_cast<size_t>(groups * len));
        attend(q + (b * hq + h * groups) * d, k, v, tables + b * max_blocks, len, groups, d, block_size,
               block_stride, token_stride, h * d, scale, scores.data(),
               out + (b * hq + h * groups) * d);
      }
    }
  }
}

}  // namespace warmfast
