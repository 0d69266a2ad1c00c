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
//            The lowest index wins an exact tie.
// Exactness: exp and log are each platform's float64 functions (glibc here, libdevice on the GPU,
// numpy in the Triton interpreter, torch in sample_ref); they differ in the last bit on some inputs,
// and such a difference changes a token only through a float64 near-tie (floor(w * 2^32) crossing an
// integer and then deciding a top-p cut, two race keys within an ulp, w within an ulp of min_p).
// T == 1 uses no exp / log, greedy and top-k no float arithmetic at all.
// How: t_k and t_p are found by radix selection on the 31-bit patterns, here three digits of 11,
// 10 and 10 bits (kShift; the Triton kernels use 7 + 8 + 8 + 8 for top-k): each level histograms the
// entries whose higher bits equal the prefix chosen so far (counts for top-k, integer masses W for
// top-p) and picks the digit holding the threshold, so a threshold costs a few histograms, not 32
// bisection passes. Only integers are summed, so any split of a row gives the same thresholds.
// This file computes w_i exactly only where it can matter: a per-exponent upper bound on w
// (ExpBound) proves W_i = 0, a min-p failure or a lost race for most entries.
#include "philox.h"
#include "simd.h"
#include "warmfast.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

namespace warmfast {

namespace {

constexpr double kMassScale = 4294967296.0;  // 2^32
constexpr int kBins = 2048;                  // radix digits: bits 30..20, 19..10, 9..0
constexpr int kShift[3] = {20, 10, 0};

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

// The contract's w_i for b_i > 0.
inline double weight(uint32_t b, double pmax, double temperature) {
  const double r = static_cast<double>(from_bits(b)) / pmax;
  return temperature == 1.0 ? r : std::exp(std::log(r) / temperature);
}

// Upper bounds on w by float exponent field e: p < 2^(e - 126), so w < (2^(e - 126) / p_max)^(1/T).
// With monotone exp/log the computed w never exceeds its bound; the factor 1 + 1e-6 covers an
// implementation that is off by a few ulps (log(r) / T amplifies them by |log r| / T).
struct ExpBound {
  double w[256];
  ExpBound(double pmax, double temperature) {
    for (int e = 0; e < 256; ++e) {
      const double r = std::fmin(1.0, std::ldexp(1.0, e - 126) / pmax);
      w[e] = (temperature == 1.0 ? r : std::exp(std::log(r) / temperature)) * (1.0 + 1e-6);
    }
  }
  double operator()(uint32_t b) const { return w[b >> 23]; }
};

// Radix selection state: the threshold's bits chosen so far and the level reached.
inline bool in_prefix(uint32_t b, uint32_t prefix, int level) {
  return level == 0 || (b >> kShift[level - 1]) == (prefix >> kShift[level - 1]);
}
inline uint32_t digit(uint32_t b, int level) { return (b >> kShift[level]) & (kBins - 1); }

// t_k: the largest t with count(b >= t) >= k, by three counting histograms. Level 0 reads the
// whole row; the entries of the chosen level-0 bucket are gathered, so levels 1-2 read only them.
uint32_t topk_threshold(const uint32_t* b, int64_t n, int64_t k) {
  std::vector<int64_t> hist(kBins);
  std::vector<uint32_t> cand;
  uint32_t prefix = 0;
  int64_t above = 0;  // entries strictly above the prefix's range
  for (int level = 0; level < 3; ++level) {
    std::fill(hist.begin(), hist.end(), 0);
    if (level == 0) {
      for (int64_t i = 0; i < n; ++i) ++hist[digit(b[i], 0)];
    } else {
      for (uint32_t x : cand) ++hist[digit(x, level)];
    }
    int d = kBins - 1;  // the highest digit with above + count(digits >= d) >= k
    for (int64_t ge = above + hist[d]; ge < k; ge += hist[--d]) {}
    for (int e = d + 1; e < kBins; ++e) above += hist[e];
    prefix |= static_cast<uint32_t>(d) << kShift[level];
    if (level == 0) {
      for (int64_t i = 0; i < n; ++i) if (digit(b[i], 0) == static_cast<uint32_t>(d)) cand.push_back(b[i]);
    } else {
      std::vector<uint32_t> keep;
      for (uint32_t x : cand) if (digit(x, level) == static_cast<uint32_t>(d)) keep.push_back(x);
      cand.swap(keep);
    }
  }
  return prefix;
}

// t* = the smallest t with S(t) = sum_{b_j > t} W_j < thr, by three mass histograms over the
// entries with W > 0 (cb, cW). S(largest t of digit d's range) = above + mass of digits > d.
uint32_t topp_threshold(const std::vector<uint32_t>& cb, const std::vector<int64_t>& cW, double thr) {
  std::vector<int64_t> hist(kBins);
  uint32_t prefix = 0;
  int64_t above = 0;  // mass strictly above the prefix's range
  for (int level = 0; level < 3; ++level) {
    std::fill(hist.begin(), hist.end(), 0);
    for (size_t i = 0; i < cb.size(); ++i) {
      if (in_prefix(cb[i], prefix, level)) hist[digit(cb[i], level)] += cW[i];
    }
    int d = kBins - 1;  // the lowest digit with above + mass(digits > d) < thr
    int64_t s = above;
    while (d > 0 && static_cast<double>(s + hist[d]) < thr) s += hist[d--];
    above = s;
    prefix |= static_cast<uint32_t>(d) << kShift[level];
  }
  return prefix;
}

// Philox words of 16 consecutive blocks (entries 4 * block0 ... + 63). The loop runs over the
// blocks with the ten rounds unrolled inside, so the compiler puts the 16 blocks in vector lanes
// (vpmuludq; written with the rounds outside, GCC left it scalar).
WF_CLONES void philox_words64(uint32_t block0, uint32_t step, uint32_t c2, uint32_t c3, uint32_t k0,
                              uint32_t k1, uint32_t* __restrict out) {
  constexpr uint32_t M0 = 0xD2511F53u, M1 = 0xCD9E8D57u, W0 = 0x9E3779B9u, W1 = 0xBB67AE85u;
  uint32_t o0[16], o1[16], o2[16], o3[16];
  for (int j = 0; j < 16; ++j) {
    uint32_t a = block0 + j, b = step, c = c2, d = c3, key0 = k0, key1 = k1;
#pragma GCC unroll 10
    for (int r = 0; r < 10; ++r) {  // philox4x32_10 of philox.h
      const uint64_t p0 = static_cast<uint64_t>(M0) * a, p1 = static_cast<uint64_t>(M1) * c;
      const uint32_t n0 = static_cast<uint32_t>(p1 >> 32) ^ b ^ key0, n1 = static_cast<uint32_t>(p1);
      const uint32_t n2 = static_cast<uint32_t>(p0 >> 32) ^ d ^ key1, n3 = static_cast<uint32_t>(p0);
      a = n0; b = n1; c = n2; d = n3;
      key0 += W0; key1 += W1;
    }
    o0[j] = a; o1[j] = b; o2[j] = c; o3[j] = d;
  }
  for (int j = 0; j < 16; ++j) {
    out[4 * j] = o0[j]; out[4 * j + 1] = o1[j]; out[4 * j + 2] = o2[j]; out[4 * j + 3] = o3[j];
  }
}

// Bounds x_up / (1 - u) of 64 entries (x_up = -1 where an entry is not in the race).
WF_CLONES void race_bounds64(const double* x_up, const uint32_t* words, double* bound) {
  for (int j = 0; j < 64; ++j) {
    const double u = (static_cast<double>(words[j]) + 0.5) * (1.0 / 4294967296.0);
    bound[j] = x_up[j] / (1.0 - u);
  }
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
  const double T = sp.temperature;
  const bool unit_t = T == 1.0;
  const ExpBound up(pmax, T);

  uint32_t t_k = 1;  // smallest positive bit pattern: zero entries are never kept
  if (sp.top_k > 0 && sp.top_k < vocab) t_k = std::max<uint32_t>(1, topk_threshold(b.data(), vocab, sp.top_k));

  uint32_t t_p = t_k;
  if (sp.top_p < 1.0) {
    // Only the top-k survivors' masses matter: for t >= t_k, S(t) sums entries above t >= t_k, and
    // without the rest S(t < t_k) = Z >= top_p * Z, so the threshold found is still >= t_k.
    // W_i = 0 wherever the bound proves w_i < 2^-32; the rest get their exact weight.
    std::vector<uint32_t> cb;
    std::vector<int64_t> cW;
    int64_t Z = 0;
    for (int64_t i = 0; i < vocab; ++i) {
      if (b[i] < t_k || up(b[i]) * kMassScale < 1.0) continue;  // t_k >= 1: zeros skipped too
      const int64_t W = static_cast<int64_t>(weight(b[i], pmax, T) * kMassScale);
      if (W == 0) continue;
      cb.push_back(b[i]);
      cW.push_back(W);
      Z += W;
    }
    t_p = std::max(t_k, topp_threshold(cb, cW, sp.top_p * static_cast<double>(Z)));
  }

  // The race, 64 entries at a time. The logarithm and the exact weight are skipped when the entry
  // cannot win: -log(u) > 1 - u for u < 1 (and 1 - u is exact in double), and x <= x_up, so
  // key = x / -log(u) <= x_up / (1 - u) in rounded arithmetic too; if that bound does not beat
  // the best key so far the entry would not have replaced it. After the first few entries almost
  // every bound fails, so the race costs about one Philox block per four entries and a handful
  // of logarithms. A chunk with no entry in the race draws no Philox words.
  double best = -1.0;
  int64_t best_i = -1;
  const uint32_t c2 = static_cast<uint32_t>(request), c3 = static_cast<uint32_t>(request >> 32);
  const uint32_t k0 = static_cast<uint32_t>(seed), k1 = static_cast<uint32_t>(seed >> 32);
  const bool min_p_on = sp.min_p > 0.0;
  alignas(64) double x_up[64], bound[64];
  alignas(64) uint32_t words[64];
  for (int64_t base = 0; base < vocab; base += 64) {
    const int64_t m = std::min<int64_t>(64, vocab - base);
    bool any = false;
    for (int64_t j = 0; j < 64; ++j) {
      const uint32_t bj = j < m ? b[base + j] : 0;
      const bool in = bj >= t_p && bj != 0 && !(min_p_on && up(bj) < sp.min_p);
      x_up[j] = in ? (unit_t ? static_cast<double>(from_bits(bj)) : up(bj)) : -1.0;
      any |= in;
    }
    if (!any) continue;
    philox_words64(static_cast<uint32_t>(base >> 2), step, c2, c3, k0, k1, words);
    race_bounds64(x_up, words, bound);
    for (int64_t j = 0; j < m; ++j) {
      if (!(bound[j] > best)) continue;  // not in the race, or cannot win (see above)
      const int64_t i = base + j;
      const double w = weight(b[i], pmax, T);
      if (min_p_on && !(w >= sp.min_p)) continue;
      const double x = unit_t ? static_cast<double>(from_bits(b[i])) : w;
      if (!(x > 0.0)) continue;  // a weight that underflowed in float64 cannot be drawn
      const double key = x / -std::log(uint_to_unit_open(words[j]));
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
