// CUDA mutual-kNN overlap kernels.
//
// overlap_all_pairs: each thread compares two layers' rows of one sample entry by entry (k^2
// compares, rows read straight from global memory through the cache; k is small in practice).
// blockIdx.y strides over layer pairs, threads stride over samples, each
// block reduces its partial count in shared memory and adds it with one atomic per pair.
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

#include "overlap.h"

namespace fastsim {
namespace {

constexpr int kThreads = 256;

void check(cudaError_t status, const char* what) {
  if (status != cudaSuccess) {
    throw std::runtime_error(std::string("fastsim CUDA error in ") + what + ": " + cudaGetErrorString(status));
  }
}

template <typename Index>
__device__ int32_t count_common(const Index* x, const Index* y, int64_t k) {
  int32_t common = 0;
  for (int64_t p = 0; p < k; ++p) {
    const Index v = x[p];
    for (int64_t q = 0; q < k; ++q) {
      if (y[q] == v) {
        ++common;
        break;
      }
    }
  }
  return common;
}

__global__ void fill_diagonal_kernel(int64_t* totals, int64_t num_layers, int64_t value) {
  const int64_t x = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (x < num_layers) totals[x * num_layers + x] = value;
}

template <typename Index>
__global__ void overlap_pairs_kernel(const Index* __restrict__ lists, int64_t* __restrict__ totals,
                                     int64_t num_layers, int64_t n, int64_t k) {
  __shared__ long long partial[kThreads];
  const int64_t pairs = num_layers * (num_layers - 1) / 2;
  for (int64_t p = blockIdx.y; p < pairs; p += gridDim.y) {
    // Decode the pair index p into (x, y) with x < y.
    int64_t pair = p, x = 0;
    while (pair >= num_layers - 1 - x) {
      pair -= num_layers - 1 - x;
      ++x;
    }
    const int64_t y = x + 1 + pair;
    const Index* lx = lists + x * n * k;
    const Index* ly = lists + y * n * k;

    long long local = 0;
    for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
         i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
      local += count_common(lx + i * k, ly + i * k, k);
    }
    partial[threadIdx.x] = local;
    __syncthreads();
    for (int stride = kThreads / 2; stride > 0; stride /= 2) {
      if (threadIdx.x < stride) partial[threadIdx.x] += partial[threadIdx.x + stride];
      __syncthreads();
    }
    if (threadIdx.x == 0 && partial[0] != 0) {
      atomicAdd(reinterpret_cast<unsigned long long*>(totals + x * num_layers + y),
                static_cast<unsigned long long>(partial[0]));
      atomicAdd(reinterpret_cast<unsigned long long*>(totals + y * num_layers + x),
                static_cast<unsigned long long>(partial[0]));
    }
    __syncthreads();  // partial[] is reused by the next pair
  }
}

unsigned int grid_for(int64_t n, int64_t cap) {
  int64_t blocks = (n + kThreads - 1) / kThreads;
  if (blocks < 1) blocks = 1;
  if (blocks > cap) blocks = cap;
  return static_cast<unsigned int>(blocks);
}

}  // namespace

template <typename Index>
void overlap_all_pairs_cuda(const Index* lists, int64_t* totals, int64_t num_layers, int64_t n, int64_t k,
                            std::uintptr_t stream) {
  auto s = reinterpret_cast<cudaStream_t>(stream);
  const int64_t L = num_layers;
  check(cudaMemsetAsync(totals, 0, sizeof(int64_t) * L * L, s), "overlap_all_pairs (memset)");
  fill_diagonal_kernel<<<grid_for(L, 65535), kThreads, 0, s>>>(totals, L, n * k);
  check(cudaGetLastError(), "overlap_all_pairs (diagonal)");
  const int64_t pairs = L * (L - 1) / 2;
  if (pairs == 0 || n == 0) return;
  dim3 grid(grid_for(n, 1024), static_cast<unsigned int>(pairs < 65535 ? pairs : 65535));
  overlap_pairs_kernel<Index><<<grid, kThreads, 0, s>>>(lists, totals, L, n, k);
  check(cudaGetLastError(), "overlap_all_pairs");
}

template void overlap_all_pairs_cuda<int32_t>(const int32_t*, int64_t*, int64_t, int64_t, int64_t, std::uintptr_t);
template void overlap_all_pairs_cuda<int64_t>(const int64_t*, int64_t*, int64_t, int64_t, int64_t, std::uintptr_t);

}  // namespace fastsim
