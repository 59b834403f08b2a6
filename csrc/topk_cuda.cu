// CUDA running top-k over similarity tiles (see topk.h), in the spirit of FAISS's WarpSelect:
//
// * Row side: one warp per tile row. The 32 lanes read 16 x 32 consecutive similarities
//   (coalesced, all loads in flight before any test) and test them against the row's bar (the
//   heap root, kept in a register); one __any_sync skips the whole span when nothing passes, the
//   usual case once the heap has filled. Otherwise, per 32-wide chunk, __ballot_sync
//   collects the lanes that pass, and lane 0 offers them to the row's heap in lane order (index
//   order), then broadcasts the new bar. After the first tiles almost nothing passes, so the
//   kernel runs at the speed of one read of the tile.
// * Column side: one thread per tile column walks down its column; consecutive threads read
//   consecutive addresses (coalesced). A hit is offered to that column's heap.
//
// Heaps live in global memory ((n, count) values and indices; count up to any size, k >= 256
// included); they are touched only on hits and stay in L2. Within a kernel every warp (rows) or
// thread (columns) owns its heap; the two kernels run one after the other on `stream`.
#include <cuda_runtime.h>

#include <cstdint>
#include <stdexcept>
#include <string>

#include "heap.h"
#include "topk.h"

namespace fastsim {
namespace {

constexpr int kThreads = 256;
constexpr unsigned kFull = 0xffffffffu;

void check(cudaError_t status, const char* what) {
  if (status != cudaSuccess) {
    throw std::runtime_error(std::string("fastsim CUDA error in ") + what + ": " + cudaGetErrorString(status));
  }
}

using heap::better;
using heap::offer;

constexpr int kRowUnroll = 16;  // 32-wide chunks whose loads a warp issues before testing them
constexpr int kColUnroll = 8;  // rows whose loads a column thread issues before testing them

template <typename T>
__global__ void row_side_kernel(const T* __restrict__ tile, int64_t ld, int64_t rows, int64_t cols, int64_t row0,
                                int64_t col0, T* __restrict__ vals, int64_t* __restrict__ idx, int64_t count) {
  const int lane = threadIdx.x & 31;
  const int64_t warps = static_cast<int64_t>(gridDim.x) * (blockDim.x / 32);
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x / 32) + threadIdx.x / 32; i < rows; i += warps) {
    const int64_t r = row0 + i;
    const T* s = tile + i * ld;
    T* hv = vals + r * count;
    int64_t* hi = idx + r * count;
    T bar = hv[0];
    for (int64_t j0 = 0; j0 < cols; j0 += 32 * kRowUnroll) {
      T v[kRowUnroll];
#pragma unroll
      for (int u = 0; u < kRowUnroll; ++u) {
        const int64_t j = j0 + 32 * u + lane;
        v[u] = j < cols ? s[j] : T(0);
      }
      bool any = false;
#pragma unroll
      for (int u = 0; u < kRowUnroll; ++u) any |= v[u] >= bar;
      if (!__any_sync(kFull, any)) continue;  // the common case once the heap has filled
#pragma unroll
      for (int u = 0; u < kRowUnroll; ++u) {
        const int64_t base = j0 + 32 * u;
        const int64_t j = base + lane;
        const bool pass = j < cols && v[u] >= bar && col0 + j != r;
        unsigned hits = __ballot_sync(kFull, pass);
        while (hits) {  // in lane order, i.e. index order
          const int src = __ffs(hits) - 1;
          hits &= hits - 1;
          const T cv = __shfl_sync(kFull, v[u], src);
          if (lane == 0) {
            offer(hv, hi, count, cv, col0 + base + src);
            bar = hv[0];
          }
        }
        bar = __shfl_sync(kFull, bar, 0);
      }
    }
  }
}

template <typename T>
__global__ void column_side_kernel(const T* __restrict__ tile, int64_t ld, int64_t rows, int64_t cols, int64_t row0,
                                   int64_t col0, int64_t begin, T* __restrict__ vals, int64_t* __restrict__ idx,
                                   int64_t count) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t j = begin + blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; j < cols; j += stride) {
    const int64_t c = col0 + j;
    T* hv = vals + c * count;
    int64_t* hi = idx + c * count;
    T bar = hv[0];
    for (int64_t i0 = 0; i0 < rows; i0 += kColUnroll) {
      T v[kColUnroll];
#pragma unroll
      for (int u = 0; u < kColUnroll; ++u) v[u] = i0 + u < rows ? tile[(i0 + u) * ld + j] : T(0);
#pragma unroll
      for (int u = 0; u < kColUnroll; ++u) {
        const int64_t r = row0 + i0 + u;
        if (i0 + u < rows && v[u] >= bar && r != c) {
          offer(hv, hi, count, v[u], r);
          bar = hv[0];
        }
      }
    }
  }
}

unsigned int blocks_for(int64_t work, int64_t per_block) {
  int64_t b = (work + per_block - 1) / per_block;
  if (b < 1) b = 1;
  if (b > 65535) b = 65535;
  return static_cast<unsigned int>(b);
}

}  // namespace

template <typename T>
void topk_tile_cuda(const T* tile, int64_t ld, int64_t rows, int64_t cols, int64_t row0, int64_t col0,
                    int64_t col_side_begin, T* vals, int64_t* idx, int64_t count, std::uintptr_t stream) {
  if (rows <= 0 || cols <= 0) return;
  auto s = reinterpret_cast<cudaStream_t>(stream);
  row_side_kernel<T><<<blocks_for(rows, kThreads / 32), kThreads, 0, s>>>(tile, ld, rows, cols, row0, col0, vals,
                                                                          idx, count);
  check(cudaGetLastError(), "topk_tile (rows)");
  const int64_t begin = col_side_begin < 0 ? 0 : col_side_begin;
  if (begin < cols) {
    column_side_kernel<T><<<blocks_for(cols - begin, kThreads), kThreads, 0, s>>>(tile, ld, rows, cols, row0, col0,
                                                                                 begin, vals, idx, count);
    check(cudaGetLastError(), "topk_tile (columns)");
  }
}

template void topk_tile_cuda<float>(const float*, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, float*,
                                    int64_t*, int64_t, std::uintptr_t);
template void topk_tile_cuda<double>(const double*, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, double*,
                                     int64_t*, int64_t, std::uintptr_t);

}  // namespace fastsim
