// The running top-k heap and its tie rule, shared by the CPU (topk_cpu.cpp) and CUDA
// (topk_cuda.cu) k-selection: one definition of "better" for every path.
//
//     (v, i) is better than (w, j)  <=>  v > w  or  (v == w and i < j)
//
// (larger similarity first, ties to the smaller index). Each heap is a min-heap under this order,
// so its root is the worst kept entry and a candidate enters only when it is better than the root.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define FASTSIM_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define FASTSIM_HOST_DEVICE inline
#endif

namespace fastsim {
namespace heap {

template <typename T>
FASTSIM_HOST_DEVICE bool better(T v, int64_t i, T w, int64_t j) {
  return v > w || (v == w && i < j);
}

// Replace the root of the min-heap (hv, hi) of size m by (v, c) and restore the heap order.
template <typename T>
FASTSIM_HOST_DEVICE void replace_root(T* hv, int64_t* hi, int64_t m, T v, int64_t c) {
  int64_t p = 0;
  for (;;) {
    int64_t child = 2 * p + 1;
    if (child >= m) break;
    // the worse child
    if (child + 1 < m && better(hv[child], hi[child], hv[child + 1], hi[child + 1])) ++child;
    if (!better(v, c, hv[child], hi[child])) break;  // (v, c) is no better than the worse child: stop here
    hv[p] = hv[child];
    hi[p] = hi[child];
    p = child;
  }
  hv[p] = v;
  hi[p] = c;
}

// Offer (v, c) to the heap: it enters when it is better than the root.
template <typename T>
FASTSIM_HOST_DEVICE void offer(T* hv, int64_t* hi, int64_t m, T v, int64_t c) {
  if (better(v, c, hv[0], hi[0])) replace_root(hv, hi, m, v, c);
}

}  // namespace heap
}  // namespace fastsim
