// warmfast._C: numpy-array bindings (torch CPU tensors pass through .numpy() without a copy).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <sstream>
#include <string>

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

static py::array_t<int64_t> sample(f32 probs, u64 seeds, u64 requests, u32 steps) {
  auto P = probs.request();
  if (P.ndim != 2) throw py::value_error("probs must be 2-D [rows, vocab], got ndim=" + std::to_string(P.ndim));
  const int64_t rows = P.shape[0], vocab = P.shape[1];
  if (vocab > 0xFFFFFFFFll) throw py::value_error("vocab larger than 2^32 is not supported");
  auto S = seeds.request(), R = requests.request(), K = steps.request();
  check_rows("seeds", S, rows);
  check_rows("request_ids", R, rows);
  check_rows("steps", K, rows);
  py::array_t<int64_t> out(rows);
  {
    py::gil_scoped_release nogil;
    warmfast::sample_rows(static_cast<const float*>(P.ptr), rows, vocab,
                          static_cast<const uint64_t*>(S.ptr), static_cast<const uint64_t*>(R.ptr),
                          static_cast<const uint32_t*>(K.ptr), out.mutable_data());
  }
  const int64_t* o = out.data();
  for (int64_t r = 0; r < rows; ++r) {
    if (o[r] < 0) throw py::value_error("probs row " + std::to_string(r) + " has no positive entry");
  }
  return out;
}

static py::array_t<uint32_t> philox_words(uint64_t seed, uint64_t request, uint32_t step, int64_t n) {
  py::array_t<uint32_t> out(n);
  warmfast::uniform_words(seed, request, step, n, out.mutable_data());
  return out;
}

PYBIND11_MODULE(_C, m) {
  m.doc() = "warmfast C++ primitives: log-prob rows and Philox-keyed sampling (OpenMP)";
  m.def("logprob", &logprob, py::arg("logits"), py::arg("targets"),
        "(logits [N,V] f32, targets [N] i64) -> (logprob [N] f32, argmax [N] i64, logsumexp [N] f32)");
  m.def("sample", &sample, py::arg("probs"), py::arg("seeds"), py::arg("request_ids"), py::arg("steps"),
        "(probs [N,V] f32, seeds [N] u64, request_ids [N] u64, steps [N] u32) -> tokens [N] i64");
  m.def("philox_words", &philox_words, py::arg("seed"), py::arg("request_id"), py::arg("step"), py::arg("n"),
        "first n Philox4x32-10 words of (seed, request, step)");
}
