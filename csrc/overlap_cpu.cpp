// CPU mutual-kNN overlap kernels (OpenMP over samples).
#include <algorithm>
#include <vector>

#include "overlap.h"

namespace fastsim {
namespace {

// Number of common values of two ascending runs of distinct values.
template <typename Index>
int32_t count_common_sorted(const Index* x, const Index* y, int64_t k) {
  int32_t common = 0;
  int64_t p = 0, q = 0;
  while (p < k && q < k) {
    if (x[p] < y[q]) {
      ++p;
    } else if (y[q] < x[p]) {
      ++q;
    } else {
      ++common;
      ++p;
      ++q;
    }
  }
  return common;
}

}  // namespace

template <typename Index>
void overlap_all_pairs_cpu(const Index* lists, int64_t* totals, int64_t num_layers, int64_t n, int64_t k) {
  const int64_t L = num_layers;
  std::fill(totals, totals + L * L, int64_t{0});
#pragma omp parallel
  {
    std::vector<Index> rows(static_cast<size_t>(L * k));  // row i of every layer, each sorted
    std::vector<int64_t> local(static_cast<size_t>(L * L), 0);
#pragma omp for schedule(static)
    for (int64_t i = 0; i < n; ++i) {
      for (int64_t x = 0; x < L; ++x) {
        const Index* src = lists + (x * n + i) * k;
        Index* dst = rows.data() + x * k;
        std::copy(src, src + k, dst);
        std::sort(dst, dst + k);
      }
      for (int64_t x = 0; x < L; ++x) {
        for (int64_t y = x + 1; y < L; ++y) {
          local[x * L + y] += count_common_sorted(rows.data() + x * k, rows.data() + y * k, k);
        }
      }
    }
#pragma omp critical
    for (int64_t x = 0; x < L; ++x) {
      for (int64_t y = x + 1; y < L; ++y) {
        totals[x * L + y] += local[x * L + y];
      }
    }
  }
  for (int64_t x = 0; x < L; ++x) {
    totals[x * L + x] = n * k;
    for (int64_t y = x + 1; y < L; ++y) {
      totals[y * L + x] = totals[x * L + y];
    }
  }
}

template void overlap_all_pairs_cpu<int32_t>(const int32_t*, int64_t*, int64_t, int64_t, int64_t);
template void overlap_all_pairs_cpu<int64_t>(const int64_t*, int64_t*, int64_t, int64_t, int64_t);

}  // namespace fastsim
