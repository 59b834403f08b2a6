// Python bindings of fastsim._C.
//
// Buffers cross the boundary as raw addresses (Tensor.data_ptr(), ndarray.ctypes.data) with
// their sizes, plus a CUDA stream handle for device work, so the module never links libtorch
// and does not depend on the installed torch version. The Python wrappers in
// fastsim/native.py check dtype, contiguity and device before calling in.
#include <pybind11/pybind11.h>

#include <cstdint>
#include <stdexcept>
#include <string>

#include "overlap.h"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace py = pybind11;

namespace {

void check_sizes(int64_t n, int64_t k, std::uintptr_t a, std::uintptr_t out) {
  if (n < 0) throw std::invalid_argument("n must be >= 0");
  if (k < 1) throw std::invalid_argument("k must be >= 1");
  if (n > 0 && (a == 0 || out == 0)) throw std::invalid_argument("null buffer address");
}

bool is_cuda(const std::string& device) {
  if (device == "cpu") return false;
  if (device == "cuda") return true;
  throw std::invalid_argument("device must be 'cpu' or 'cuda', got '" + device + "'");
}

template <typename Index>
void rows_dispatch(std::uintptr_t a, std::uintptr_t b, std::uintptr_t out, int64_t n, int64_t k, bool cuda,
                   std::uintptr_t stream) {
  auto pa = reinterpret_cast<const Index*>(a);
  auto pb = reinterpret_cast<const Index*>(b);
  auto po = reinterpret_cast<int32_t*>(out);
  if (cuda) {
#ifdef FASTSIM_WITH_CUDA
    fastsim::overlap_rows_cuda<Index>(pa, pb, po, n, k, stream);
    return;
#else
    (void)stream;
    throw std::runtime_error("fastsim._C was built without CUDA kernels");
#endif
  }
  py::gil_scoped_release release;
  fastsim::overlap_rows_cpu<Index>(pa, pb, po, n, k);
}

template <typename Index>
void pairs_dispatch(std::uintptr_t lists, std::uintptr_t totals, int64_t L, int64_t n, int64_t k, bool cuda,
                    std::uintptr_t stream) {
  auto pl = reinterpret_cast<const Index*>(lists);
  auto pt = reinterpret_cast<int64_t*>(totals);
  if (cuda) {
#ifdef FASTSIM_WITH_CUDA
    fastsim::overlap_all_pairs_cuda<Index>(pl, pt, L, n, k, stream);
    return;
#else
    (void)stream;
    throw std::runtime_error("fastsim._C was built without CUDA kernels");
#endif
  }
  py::gil_scoped_release release;
  fastsim::overlap_all_pairs_cpu<Index>(pl, pt, L, n, k);
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "fastsim compiled kernels (C++ CPU kernels; CUDA kernels when built with a CUDA compiler)";

  m.def(
      "overlap_rows",
      [](std::uintptr_t a, std::uintptr_t b, std::uintptr_t out, int64_t n, int64_t k, int index_bits,
         const std::string& device, std::uintptr_t stream) {
        check_sizes(n, k, a, out);
        if (n > 0 && b == 0) throw std::invalid_argument("null buffer address");
        const bool cuda = is_cuda(device);
        if (index_bits == 32) return rows_dispatch<int32_t>(a, b, out, n, k, cuda, stream);
        if (index_bits == 64) return rows_dispatch<int64_t>(a, b, out, n, k, cuda, stream);
        throw std::invalid_argument("index_bits must be 32 or 64");
      },
      py::arg("a"), py::arg("b"), py::arg("out"), py::arg("n"), py::arg("k"), py::arg("index_bits"),
      py::arg("device"), py::arg("stream") = 0,
      "out[i] (int32) = number of indices shared by rows a[i] and b[i] of two (n, k) index buffers.");

  m.def(
      "overlap_all_pairs",
      [](std::uintptr_t lists, std::uintptr_t totals, int64_t num_layers, int64_t n, int64_t k, int index_bits,
         const std::string& device, std::uintptr_t stream) {
        check_sizes(n, k, lists, totals);
        if (num_layers < 1) throw std::invalid_argument("num_layers must be >= 1");
        if (totals == 0) throw std::invalid_argument("null buffer address");
        const bool cuda = is_cuda(device);
        if (index_bits == 32) return pairs_dispatch<int32_t>(lists, totals, num_layers, n, k, cuda, stream);
        if (index_bits == 64) return pairs_dispatch<int64_t>(lists, totals, num_layers, n, k, cuda, stream);
        throw std::invalid_argument("index_bits must be 32 or 64");
      },
      py::arg("lists"), py::arg("totals"), py::arg("num_layers"), py::arg("n"), py::arg("k"), py::arg("index_bits"),
      py::arg("device"), py::arg("stream") = 0,
      "totals (L, L, int64) = summed per-row overlaps of every pair of layers in an (L, n, k) index buffer.");

  m.def("cuda_compiled", []() {
#ifdef FASTSIM_WITH_CUDA
    return true;
#else
    return false;
#endif
  });
  m.def("openmp_threads", []() {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
  });
}
