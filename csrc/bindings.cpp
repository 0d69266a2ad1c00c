// warmfast._C: numpy-array bindings (torch CPU tensors pass through .numpy() without a copy).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cmath>
#include <sstream>
#include <vector>
#include <string>

#include "philox.h"
#include "warmfast.h"

namespace py = pybind11;
using f32 = py::array_t<float, py::array::c_style | py::array::forcecast>;
using i64 = py::array_t<int64_t, py::array::c_style | py::array::forcecast>;
using u64 = py::array_t<uint64_t, py::array::c_style | py::array::forcecast>;
using u32 = py::array_t<uint32_t, py::array::c_style | py::array::forcecast>;

static void check_rows(const char* name, const py::buffer_info& b, int64_t rows) {
  if (b.ndim != 1 || b.shape[0] != rows) {
    std::ostringstream m;
    m << name << " must have shape [" << rows << "] (one per row), got ndim=" << b.ndim
      << (b.ndim ? " shape[0]=" + std::to_string(b.shape[0]) : std::string());
    throw py::value_error(m.str());
  }
}

static py::tuple logprob(f32 logits, i64 targets) {
  auto L = logits.request();
  if (L.ndim != 2) throw py::value_error("logits must be 2-D [rows, vocab], got ndim=" + std::to_string(L.ndim));
  const int64_t rows = L.shape[0], vocab = L.shape[1];
  auto T = targets.request();
  check_rows("targets", T, rows);
  const int64_t* t = static_cast<const int64_t*>(T.ptr);
  for (int64_t r = 0; r < rows; ++r) {
    if (t[r] < 0 || t[r] >= vocab) {
      std::ostringstream m;
      m << "targets[" << r << "] = " << t[r] << " is outside the vocabulary [0, " << vocab << ")";
      throw py::value_error(m.str());
    }
  }
  py::array_t<float> lp(rows), lse(rows);
  py::array_t<int64_t> am(rows);
  {
    py::gil_scoped_release nogil;
    warmfast::logprob_rows(static_cast<const float*>(L.ptr), rows, vocab, t, lp.mutable_data(),
                           am.mutable_data(), lse.mutable_data());
  }
  return py::make_tuple(lp, am, lse);
}

using f64 = py::array_t<double, py::array::c_style | py::array::forcecast>;

// An optional per-row parameter: None -> `fill` for every row; else shape [rows].
template <typename T>
static std::vector<T> per_row(const py::object& arr, const char* name, int64_t rows, T fill) {
  std::vector<T> out(rows, fill);
  if (arr.is_none()) return out;
  auto a = py::array_t<T, py::array::c_style | py::array::forcecast>::ensure(arr);
  if (!a) throw py::value_error(std::string(name) + " must be an array of numbers");
  auto info = a.request();
  check_rows(name, info, rows);
  const T* p = static_cast<const T*>(info.ptr);
  for (int64_t r = 0; r < rows; ++r) out[r] = p[r];
  return out;
}

static py::array_t<int64_t> sample(f32 probs, u64 seeds, u64 requests, u32 steps,
                                   const py::object& temperature, const py::object& top_k,
                                   const py::object& top_p, const py::object& min_p) {
  auto P = probs.request();
  if (P.ndim != 2) throw py::value_error("probs must be 2-D [rows, vocab], got ndim=" + std::to_string(P.ndim));
  const int64_t rows = P.shape[0], vocab = P.shape[1];
  if (vocab > 0xFFFFFFFFll) throw py::value_error("vocab larger than 2^32 is not supported");
  auto S = seeds.request(), R = requests.request(), K = steps.request();
  check_rows("seeds", S, rows);
  check_rows("request_ids", R, rows);
  check_rows("steps", K, rows);
  const auto temp = per_row<double>(temperature, "temperature", rows, 1.0);
  const auto tk = per_row<int64_t>(top_k, "top_k", rows, 0);
  const auto tp = per_row<double>(top_p, "top_p", rows, 1.0);
  const auto mp = per_row<double>(min_p, "min_p", rows, 0.0);
  std::vector<warmfast::SampleParams> params(rows);
  for (int64_t r = 0; r < rows; ++r) {
    std::ostringstream m;
    if (!(temp[r] >= 0.0) || !std::isfinite(temp[r])) m << "temperature[" << r << "] = " << temp[r] << " must be finite and >= 0";
    else if (tk[r] < 0) m << "top_k[" << r << "] = " << tk[r] << " must be >= 0 (0 = off)";
    else if (!(tp[r] > 0.0 && tp[r] <= 1.0)) m << "top_p[" << r << "] = " << tp[r] << " must be in (0, 1]";
    else if (!(mp[r] >= 0.0 && mp[r] <= 1.0)) m << "min_p[" << r << "] = " << mp[r] << " must be in [0, 1]";
    if (!m.str().empty()) throw py::value_error(m.str());
    params[r] = warmfast::SampleParams{temp[r], tk[r], tp[r], mp[r]};
  }
  py::array_t<int64_t> out(rows);
  {
    py::gil_scoped_release nogil;
    warmfast::sample_rows(static_cast<const float*>(P.ptr), rows, vocab,
                          static_cast<const uint64_t*>(S.ptr), static_cast<const uint64_t*>(R.ptr),
                          static_cast<const uint32_t*>(K.ptr), params.data(), out.mutable_data());
  }
  const int64_t* o = out.data();
  for (int64_t r = 0; r < rows; ++r) {
    if (o[r] < 0) throw py::value_error("probs row " + std::to_string(r) + " has no positive finite entry");
  }
  return out;
}

using i32 = py::array_t<int32_t, py::array::c_style | py::array::forcecast>;
using f32_exact = py::array_t<float, py::array::c_style>;  // no conversion: the cache is read in place

static std::string shape_of(const py::buffer_info& b) {
  std::string s = "[";
  for (py::ssize_t i = 0; i < b.ndim; ++i) s += (i ? ", " : "") + std::to_string(b.shape[i]);
  return s + "]";
}

static py::array_t<float> paged_decode_attention(f32 q, f32_exact k_cache, f32_exact v_cache,
                                                 i32 block_tables, i32 seq_lens, float scale) {
  auto Q = q.request(), K = k_cache.request(), V = v_cache.request();
  auto T = block_tables.request(), L = seq_lens.request();
  if (Q.ndim != 3) throw py::value_error("q must be [rows, hq, d], got shape " + shape_of(Q));
  if (K.ndim != 4 || V.ndim != 4 || shape_of(K) != shape_of(V))
    throw py::value_error("k_cache and v_cache must both be [num_blocks, block_size, hk, d], got " +
                          shape_of(K) + " and " + shape_of(V));
  const int64_t rows = Q.shape[0], hq = Q.shape[1], d = Q.shape[2];
  const int64_t num_blocks = K.shape[0], block_size = K.shape[1], hk = K.shape[2];
  if (K.shape[3] != d) throw py::value_error("q head dim " + std::to_string(d) + " != cache head dim " + std::to_string(K.shape[3]));
  if (hk == 0 || hq % hk) throw py::value_error("query heads " + std::to_string(hq) + " are not a multiple of kv heads " + std::to_string(hk));
  if (T.ndim != 2 || T.shape[0] != rows) throw py::value_error("block_tables must be [" + std::to_string(rows) + ", max_blocks], got " + shape_of(T));
  check_rows("seq_lens", L, rows);
  const int64_t max_blocks = T.shape[1];
  const int32_t* tab = static_cast<const int32_t*>(T.ptr);
  const int32_t* len = static_cast<const int32_t*>(L.ptr);
  for (int64_t r = 0; r < rows; ++r) {  // every block a row reads must exist
    std::ostringstream m;
    if (len[r] < 1 || len[r] > max_blocks * block_size) {
      m << "seq_lens[" << r << "] = " << len[r] << " must be in [1, " << max_blocks * block_size << "]";
      throw py::value_error(m.str());
    }
    for (int64_t j = 0; j < (len[r] + block_size - 1) / block_size; ++j) {
      const int32_t blk = tab[r * max_blocks + j];
      if (blk < 0 || blk >= num_blocks) {
        m << "block_tables[" << r << ", " << j << "] = " << blk << " is outside the cache's " << num_blocks << " blocks";
        throw py::value_error(m.str());
      }
    }
  }
  py::array_t<float> out({rows, hq, d});
  {
    py::gil_scoped_release nogil;
    warmfast::paged_decode_attention(static_cast<const float*>(Q.ptr), static_cast<const float*>(K.ptr),
                                     static_cast<const float*>(V.ptr), tab, len, out.mutable_data(),
                                     rows, hq, hk, d, block_size, max_blocks, scale);
  }
  return out;
}

static py::array_t<uint32_t> philox4x32_10(u32 counter, u32 key) {
  auto C = counter.request(), K = key.request();
  if (C.ndim != 1 || C.shape[0] != 4) throw py::value_error("counter must have shape [4]");
  if (K.ndim != 1 || K.shape[0] != 2) throw py::value_error("key must have shape [2]");
  const uint32_t* c = static_cast<const uint32_t*>(C.ptr);
  const uint32_t* k = static_cast<const uint32_t*>(K.ptr);
  const warmfast::Philox4 r = warmfast::philox4x32_10(c[0], c[1], c[2], c[3], k[0], k[1]);
  py::array_t<uint32_t> out(4);
  for (int i = 0; i < 4; ++i) out.mutable_data()[i] = r.v[i];
  return out;
}

static py::array_t<uint32_t> philox_words(uint64_t seed, uint64_t request, uint32_t step, int64_t n) {
  py::array_t<uint32_t> out(n);
  warmfast::uniform_words(seed, request, step, n, out.mutable_data());
  return out;
}

PYBIND11_MODULE(_C, m) {
  m.doc() = "warmfast C++ primitives: log-prob rows, Philox-keyed sampling, paged decode attention (OpenMP)";
  m.def("logprob", &logprob, py::arg("logits"), py::arg("targets"),
        "(logits [N,V] f32, targets [N] i64) -> (logprob [N] f32, argmax [N] i64, logsumexp [N] f32)");
  m.def("sample", &sample, py::arg("probs"), py::arg("seeds"), py::arg("request_ids"), py::arg("steps"),
        py::arg("temperature") = py::none(), py::arg("top_k") = py::none(),
        py::arg("top_p") = py::none(), py::arg("min_p") = py::none(),
        "(probs [N,V] f32, seeds [N] u64, request_ids [N] u64, steps [N] u32, temperature [N] f64 "
        "(0 = greedy, default 1), top_k [N] i64 (0 = off), top_p [N] f64 (1 = off), min_p [N] f64 "
        "(0 = off)) -> tokens [N] i64; the contract is in csrc/sampling.cpp");
  m.def("paged_decode_attention", &paged_decode_attention, py::arg("q"), py::arg("k_cache"),
        py::arg("v_cache"), py::arg("block_tables"), py::arg("seq_lens"), py::arg("scale"),
        "(q [B,Hq,D] f32, k_cache/v_cache [blocks,block_size,Hk,D] f32 (read in place), block_tables "
        "[B,max_blocks] i32, seq_lens [B] i32, scale) -> [B,Hq,D] f32: one query per row over its cached keys");
  m.def("philox4x32_10", &philox4x32_10, py::arg("counter"), py::arg("key"),
        "raw Philox4x32-10 block: (counter [4] u32, key [2] u32) -> [4] u32 (Random123 layout)");
  m.def("philox_words", &philox_words, py::arg("seed"), py::arg("request_id"), py::arg("step"), py::arg("n"),
        "first n Philox4x32-10 words of (seed, request, step)");
}
