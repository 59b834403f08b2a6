// Running top-k selection over similarity tiles (exact k-nearest neighbours).
//
// State: for every sample r a heap of `count` (value, index) entries, stored in two dense
// row-major (n, count) buffers `vals` and `idx`; the heap and its tie rule (larger similarity
// first, ties to the smaller index) are defined once, in heap.h. Initialise vals to -inf and idx to
// INT64_MAX (fastsim/native.py does): every real candidate beats such a slot, and the result does
// not depend on the order in which tiles are fed. NaN values never enter.
//
// A tile is a dense block S[i, j] = sim(row0 + i, col0 + j), i < rows, j < cols, row stride ld.
// topk_tile_* feeds it to
//   * the heaps of its rows (every j, except the sample itself, row0 + i == col0 + j), and
//   * the heaps of its columns col0 + j for j >= col_side_begin (S read down the columns, i.e.
//     the transposed block: a symmetric similarity computed once serves both samples).
// The caller must feed each unordered pair {r, c} to r's heap and to c's heap once each.
//
// topk_sort_cpu orders every heap best first (value descending, then index ascending); on the GPU
// fastsim/native.py orders them with two stable torch sorts.
#pragma once

#include <cstdint>

namespace fastsim {

// threads: OpenMP threads for this tile (0: the OpenMP default). fastsim runs the CPU selection
// on one thread beside the next tile's GEMM, which is faster than a team that must wait at its
// barriers for threads the OS gave to the GEMM or to other processes.
template <typename T>
void topk_tile_cpu(const T* tile, int64_t ld, int64_t rows, int64_t cols, int64_t row0, int64_t col0,
                   int64_t col_side_begin, T* vals, int64_t* idx, int64_t count, int threads = 0);

template <typename T>
void topk_sort_cpu(T* vals, int64_t* idx, int64_t n, int64_t count);

// The CPU scans use AVX-512 where the CPU has it. enable = 0 / 1 forbids / allows it (tests run
// the portable path that way); -1 leaves it. Returns whether AVX-512 scans are used now.
bool topk_simd(int enable);

// Tiles whose column heaps are all full are scanned once (rows and, from L1, columns against
// frozen bars) by default; enable = 0 forces the two-pass scan (tests compare both).
bool topk_single_pass(int enable);

#ifdef FASTSIM_WITH_CUDA
// Device pointers; work is queued on `stream` (a cudaStream_t as an integer).
template <typename T>
void topk_tile_cuda(const T* tile, int64_t ld, int64_t rows, int64_t cols, int64_t row0, int64_t col0,
                    int64_t col_side_begin, T* vals, int64_t* idx, int64_t count, std::uintptr_t stream);
#endif

}  // namespace fastsim
