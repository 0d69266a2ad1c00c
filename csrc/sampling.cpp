// Batch-invariant sampling: the token of a row is a pure function of
// (its probabilities, temperature, top_k, top_p, min_p, seed, request id, step).
//
// The contract (the Triton kernel in kernels/sampling.py and sample_ref beside it follow it):
//   p_i      the row's float32 entries; NaN, negative and infinite entries count as 0; only
//            ratios matter (the row need not be normalised). b_i = the float32 bit pattern of p_i
//            (monotone in p_i for p_i >= 0), so every ranking below is exact and tie-aware.
//   greedy   temperature == 0: the lowest index of the maximum p_i.
//   w_i      = p_i / p_max when T == 1, else exp(log(p_i / p_max) / T), in float64 (w_max = 1).
//   W_i      = floor(w_i * 2^32) as int64: the mass used by top-p. Integer sums are exact, so
//            the top-p decision does not depend on summation order (exact for vocab <= 2^21).
//   top-k    (0 < k < V) keep b_i >= t_k, t_k = the k-th largest b with multiplicity:
//            every entry tied with the k-th is kept (the HF TopK rule).
//   top-p    (top_p < 1) keep b_i >= t_p, t_p = the smallest value t >= t_k with
//            S(t) = sum_{b_j > t} W_j < top_p * Z, Z = sum of W over the top-k survivors:
//            an entry survives iff the mass strictly above it is below top_p; ties go together.
//   min-p    (min_p > 0) keep w_i >= min_p (relative to the most probable entry, post-temperature).
//   race     token = argmax over kept i of key_i = x_i / E_i, x_i = p_i (T == 1) or w_i,
//            E_i = -log(u_i), u_i = (Philox(seed, request, step, i) + 0.5) / 2^32, in float64;
//            the exponential race picks i with probability x_i / sum(x) and needs no prefix sum.
//            The lowest index wins an exact tie. Thresholds are found by bisection on b, the same
//            algorithm as the Triton kernel, so both paths read the same numbers.
#include "philox.h"
#include "simd.h"
#include "warmfast.h"

#include <cmath>
#include <cstring>
#include <vector>

namespace warmfast {

namespace {

constexpr double kMassScale = 4294967296.0;  // 2^32

inline uint32_t clean_bits(float x) {
  if (!(x > 0.0f) || !std::isfinite(x)) return 0u;  // NaN, <= 0 and inf never win
  uint32_t b;
  std::memcpy(&b, &x, sizeof b);
  return b;
}

inline float from_bits(uint32_t b) {
  float x;
  std::memcpy(&x, &b, sizeof x);
  return x;
}

// count(b >= t) and sum(W where b > t): the bisection passes of top-k and top-p, branch-free so
// the compiler vectorizes them.
WF_CLONES int64_t count_at_least(const uint32_t* b, int64_t n, uint32_t t) {
  int64_t count = 0;
  for (int64_t i = 0; i < n; ++i) count += b[i] >= t ? 1 : 0;
  return count;
}

WF_CLONES int64_t mass_above(const uint32_t* b, const int64_t* W, int64_t n, uint32_t t) {
  int64_t S = 0;
  for (int64_t i = 0; i < n; ++i) S += b[i] > t ? W[i] : 0;
  return S;
}

}  // namespace

int64_t sample_row(const float* probs, int64_t vocab, uint64_t seed, uint64_t request,
                   uint32_t step, const SampleParams& sp) {
  std::vector<uint32_t> b(vocab);
  uint32_t bmax = 0;
  int64_t argmax = -1;
  for (int64_t i = 0; i < vocab; ++i) {
    b[i] = clean_bits(probs[i]);
    if (b[i] > bmax) { bmax = b[i]; argmax = i; }  // strict: the lowest index of the maximum
  }
  if (bmax == 0) return -1;  // no positive entry; the binding reports it
  if (sp.temperature == 0.0) return argmax;

  const double pmax = static_cast<double>(from_bits(bmax));
  const bool unit_t = sp.temperature == 1.0;
  std::vector<double> w(vocab);
  for (int64_t i = 0; i < vocab; ++i) {
    const double r = static_cast<double>(from_bits(b[i])) / pmax;
    w[i] = b[i] == 0 ? 0.0 : (unit_t ? r : std::exp(std::log(r) / sp.temperature));
  }

  uint32_t t_k = 1;  // smallest positive bit pattern: zero entries are never kept
  if (sp.top_k > 0 && sp.top_k < vocab) {
    uint32_t lo = 1, hi = bmax;  // largest t with count(b >= t) >= k
    for (int it = 0; it < 32 && lo < hi; ++it) {
      const uint32_t mid = lo + (hi - lo + 1) / 2;
      const int64_t count = count_at_least(b.data(), vocab, mid);
      if (count >= sp.top_k) lo = mid; else hi = mid - 1;
    }
    t_k = lo;
  }

  uint32_t t_p = t_k;
  if (sp.top_p < 1.0) {
    std::vector<int64_t> W(vocab);
    int64_t Z = 0;
    for (int64_t i = 0; i < vocab; ++i) {
      W[i] = static_cast<int64_t>(w[i] * kMassScale);
      if (b[i] >= t_k) Z += W[i];
    }
    const double thr = sp.top_p * static_cast<double>(Z);
    uint32_t lo = t_k, hi = bmax;  // smallest t in [t_k, bmax] with S(t) < thr; S(bmax) = 0
    for (int it = 0; it < 32 && lo < hi; ++it) {
      const uint32_t mid = lo + (hi - lo) / 2;
      const int64_t S = mass_above(b.data(), W.data(), vocab, mid);
      if (static_cast<double>(S) < thr) hi = mid; else lo = mid + 1;
    }
    t_p = lo;
  }

  // The race. Entry i's word is lane i % 4 of Philox block i / 4, so one block serves four
  // entries. The logarithm is skipped when the entry cannot win: -log(u) > 1 - u for u < 1 (and
  // 1 - u is exact in double), so key = x / -log(u) <= x / (1 - u) in rounded arithmetic too;
  // if that bound does not beat the best key the entry would not have replaced it. After the
  // first few entries almost every bound fails, so the race costs about one Philox block per
  // four entries and a handful of logarithms.
  double best = -1.0;
  int64_t best_i = -1;
  const uint32_t c2 = static_cast<uint32_t>(request), c3 = static_cast<uint32_t>(request >> 32);
  const uint32_t k0 = static_cast<uint32_t>(seed), k1 = static_cast<uint32_t>(seed >> 32);
  for (int64_t base = 0; base < vocab; base += 4) {
    bool any = false;  // a block is drawn only if one of its entries is in the race
    for (int64_t i = base; i < base + 4 && i < vocab; ++i) any |= b[i] >= t_p && b[i] != 0;
    if (!any) continue;
    const Philox4 words = philox4x32_10(static_cast<uint32_t>(base >> 2), step, c2, c3, k0, k1);
    for (int64_t i = base; i < base + 4 && i < vocab; ++i) {
      if (b[i] < t_p || b[i] == 0) continue;
      if (sp.min_p > 0.0 && !(w[i] >= sp.min_p)) continue;
      const double x = unit_t ? static_cast<double>(from_bits(b[i])) : w[i];
      if (!(x > 0.0)) continue;  // a weight that underflowed in float64 cannot be drawn
      const double u = uint_to_unit_open(words.v[i & 3]);
      if (!(x / (1.0 - u) > best)) continue;  // cannot win (see above)
      const double key = x / -std::log(u);
      if (key > best) { best = key; best_i = i; }
    }
  }
  return best_i;
}

void sample_rows(const float* probs, int64_t rows, int64_t vocab, const uint64_t* seeds,
                 const uint64_t* requests, const uint32_t* steps, const SampleParams* params,
                 int64_t* out) {
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t r = 0; r < rows; ++r) {
    out[r] = sample_row(probs + r * vocab, vocab, seeds[r], requests[r], steps[r], params[r]);
  }
}

void uniform_words(uint64_t seed, uint64_t request, uint32_t step, int64_t n, uint32_t* out) {
  for (int64_t i = 0; i < n; ++i) out[i] = philox_word(seed, request, step, static_cast<uint32_t>(i));
}

}  // namespace warmfast
