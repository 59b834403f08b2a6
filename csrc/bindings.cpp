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
#include "topk.h"

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

template <typename T>
void topk_tile_dispatch(std::uintptr_t tile, int64_t ld, int64_t rows, int64_t cols, int64_t row0, int64_t col0,
                        int64_t col_side_begin, std::uintptr_t vals, std::uintptr_t idx, int64_t count, bool cuda,
                        std::uintptr_t stream, int threads) {
  auto pt = reinterpret_cast<const T*>(tile);
  auto pv = reinterpret_cast<T*>(vals);
  auto pi = reinterpret_cast<int64_t*>(idx);
  if (cuda) {
#ifdef FASTSIM_WITH_CUDA
    fastsim::topk_tile_cuda<T>(pt, ld, rows, cols, row0, col0, col_side_begin, pv, pi, count, stream);
    return;
#else
    (void)stream;
    throw std::runtime_error("fastsim._C was built without CUDA kernels");
#endif
  }
  py::gil_scoped_release release;
  fastsim::topk_tile_cpu<T>(pt, ld, rows, cols, row0, col0, col_side_begin, pv, pi, count, threads);
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "fastsim compiled kernels (C++ CPU kernels; CUDA kernels when built with a CUDA compiler)";

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

  m.def(
      "topk_tile",
      [](std::uintptr_t tile, int64_t ld, int64_t rows, int64_t cols, int64_t row0, int64_t col0,
         int64_t col_side_begin, std::uintptr_t vals, std::uintptr_t idx, int64_t n, int64_t count, int value_bits,
         const std::string& device, std::uintptr_t stream, int threads) {
        if (threads < 0) throw std::invalid_argument("threads must be >= 0 (0: the OpenMP default)");
        if (rows < 0 || cols < 0) throw std::invalid_argument("rows and cols must be >= 0");
        if (count < 1) throw std::invalid_argument("count must be >= 1");
        if (ld < cols) throw std::invalid_argument("ld must be >= cols");
        if (row0 < 0 || col0 < 0 || row0 + rows > n || col0 + cols > n)
          throw std::invalid_argument("tile rows/columns must lie within [0, n)");
        if (rows > 0 && cols > 0 && (tile == 0 || vals == 0 || idx == 0))
          throw std::invalid_argument("null buffer address");
        const bool cuda = is_cuda(device);
        if (value_bits == 32)
          return topk_tile_dispatch<float>(tile, ld, rows, cols, row0, col0, col_side_begin, vals, idx, count, cuda,
                                           stream, threads);
        if (value_bits == 64)
          return topk_tile_dispatch<double>(tile, ld, rows, cols, row0, col0, col_side_begin, vals, idx, count, cuda,
                                            stream, threads);
        throw std::invalid_argument("value_bits must be 32 or 64");
      },
      py::arg("tile"), py::arg("ld"), py::arg("rows"), py::arg("cols"), py::arg("row0"), py::arg("col0"),
      py::arg("col_side_begin"), py::arg("vals"), py::arg("idx"), py::arg("n"), py::arg("count"),
      py::arg("value_bits"), py::arg("device"), py::arg("stream") = 0, py::arg("threads") = 0,
      "Feed a (rows, cols) similarity tile (row stride ld) of samples row0.. x col0.. to the running top-count "
      "heaps (n, count) of its rows (self excluded) and of its columns col0 + j, j >= col_side_begin. threads: CPU "
      "OpenMP threads (0: default).");

  m.def(
      "topk_sort",
      [](std::uintptr_t vals, std::uintptr_t idx, int64_t n, int64_t count, int value_bits) {
        if (n < 0 || count < 1) throw std::invalid_argument("need n >= 0 and count >= 1");
        if (n > 0 && (vals == 0 || idx == 0)) throw std::invalid_argument("null buffer address");
        py::gil_scoped_release release;
        if (value_bits == 32)
          return fastsim::topk_sort_cpu<float>(reinterpret_cast<float*>(vals), reinterpret_cast<int64_t*>(idx), n,
                                               count);
        if (value_bits == 64)
          return fastsim::topk_sort_cpu<double>(reinterpret_cast<double*>(vals), reinterpret_cast<int64_t*>(idx), n,
                                                count);
        throw std::invalid_argument("value_bits must be 32 or 64");
      },
      py::arg("vals"), py::arg("idx"), py::arg("n"), py::arg("count"), py::arg("value_bits"),
      "CPU: order each of the n heaps best first (value descending, index ascending).");

  m.def(
      "topk_simd", [](int enable) { return fastsim::topk_simd(enable); }, py::arg("enable") = -1,
      "CPU k-selection: 0 forbids, 1 allows the AVX-512 scans (-1 leaves the setting); returns whether they are "
      "used now.");

  m.def(
      "topk_single_pass", [](int enable) { return fastsim::topk_single_pass(enable); }, py::arg("enable") = -1,
      "CPU k-selection: 0 forces the two-pass tile scan, 1 allows the single pass (-1 leaves it); returns the "
      "setting.");

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
