// CPU running top-k over similarity tiles (see topk.h). OpenMP: the row side splits the tile's
// rows between threads, the column side splits its columns into stripes, so no two threads
// share a heap (dynamic schedules, so a thread slowed by other load takes less of the tile).
//
// The scan is a threshold filter: each heap's root value is the bar a candidate must reach
// (v >= bar, equality for the index tie-break), tested 16 values at a time with a branch-free OR
// that the compiler vectorises; the rare hits go through the full (value, index) comparison and a
// sift-down. After the first few tiles almost nothing passes, so the cost is one read of the tile
// per side.
#include <algorithm>
#include <atomic>
#include <limits>
#include <cstdint>
#include <numeric>
#include <vector>

#include "heap.h"
#include "topk.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#endif

#ifdef _OPENMP
#include <omp.h>
#endif

namespace fastsim {
namespace {

using heap::better;
using heap::offer;
using heap::replace_root;

constexpr int64_t kLanes = 16;

std::atomic<bool> single_pass_enabled{true};  // off: always the two-pass scan (tests)

// ---- Scans of one tile row (row side) or one row segment against per-column bars (column side).
// Portable versions; AVX-512 versions below are picked at run time where the CPU has it.

template <typename T>
void row_scan_generic(const T* s, int64_t cols, int64_t col0, int64_t r, T* hv, int64_t* hi, int64_t count) {
  T bar = hv[0];
  int64_t j = 0;
  for (; j + kLanes <= cols; j += kLanes) {
    int hit = 0;
    for (int64_t u = 0; u < kLanes; ++u) hit |= s[j + u] >= bar;
    if (!hit) continue;
    for (int64_t u = 0; u < kLanes; ++u) {
      if (s[j + u] >= bar && col0 + j + u != r) {
        offer(hv, hi, count, s[j + u], col0 + j + u);
        bar = hv[0];
      }
    }
  }
  for (; j < cols; ++j) {
    if (s[j] >= bar && col0 + j != r) {
      offer(hv, hi, count, s[j], col0 + j);
      bar = hv[0];
    }
  }
}

// Columns [ja, jb) of one tile row (sample r); bar[j - ja] is column col0 + j's bar.
template <typename T>
void column_scan_generic(const T* s, int64_t ja, int64_t jb, int64_t col0, int64_t r, T* bar, T* vals, int64_t* idx,
                         int64_t count) {
  for (int64_t j = ja; j < jb; j += kLanes) {
    const int64_t lanes = std::min(kLanes, jb - j);
    const T* b = bar + (j - ja);
    int hit = 0;
    for (int64_t u = 0; u < lanes; ++u) hit |= s[j + u] >= b[u];
    if (!hit) continue;
    for (int64_t u = 0; u < lanes; ++u) {
      const int64_t c = col0 + j + u;
      if (s[j + u] >= b[u] && c != r) {
        offer(vals + c * count, idx + c * count, count, s[j + u], r);
        bar[j + u - ja] = vals[c * count];
      }
    }
  }
}

#if defined(__x86_64__) && defined(__GNUC__)
#define FASTSIM_AVX512 1
// 64 values per test: four 16-float (or eight 8-double) compares OR-ed into one mask.
__attribute__((target("avx512f"))) void row_scan_avx512(const float* s, int64_t cols, int64_t col0, int64_t r,
                                                        float* hv, int64_t* hi, int64_t count) {
  float bar = hv[0];
  int64_t j = 0;
  for (; j + 64 <= cols; j += 64) {
    const __m512 b = _mm512_set1_ps(bar);
    uint64_t m = static_cast<uint64_t>(_mm512_cmp_ps_mask(_mm512_loadu_ps(s + j), b, _CMP_GE_OQ)) |
                 static_cast<uint64_t>(_mm512_cmp_ps_mask(_mm512_loadu_ps(s + j + 16), b, _CMP_GE_OQ)) << 16 |
                 static_cast<uint64_t>(_mm512_cmp_ps_mask(_mm512_loadu_ps(s + j + 32), b, _CMP_GE_OQ)) << 32 |
                 static_cast<uint64_t>(_mm512_cmp_ps_mask(_mm512_loadu_ps(s + j + 48), b, _CMP_GE_OQ)) << 48;
    while (m) {  // only the lanes that passed the bar at the start of the span (the bar only rises)
      const int64_t u = __builtin_ctzll(m);
      m &= m - 1;
      if (s[j + u] >= bar && col0 + j + u != r) {
        offer(hv, hi, count, s[j + u], col0 + j + u);
        bar = hv[0];
      }
    }
  }
  row_scan_generic(s + j, cols - j, col0 + j, r, hv, hi, count);
}

__attribute__((target("avx512f"))) void row_scan_avx512(const double* s, int64_t cols, int64_t col0, int64_t r,
                                                        double* hv, int64_t* hi, int64_t count) {
  double bar = hv[0];
  int64_t j = 0;
  for (; j + 32 <= cols; j += 32) {
    const __m512d b = _mm512_set1_pd(bar);
    uint32_t m = static_cast<uint32_t>(_mm512_cmp_pd_mask(_mm512_loadu_pd(s + j), b, _CMP_GE_OQ)) |
                 static_cast<uint32_t>(_mm512_cmp_pd_mask(_mm512_loadu_pd(s + j + 8), b, _CMP_GE_OQ)) << 8 |
                 static_cast<uint32_t>(_mm512_cmp_pd_mask(_mm512_loadu_pd(s + j + 16), b, _CMP_GE_OQ)) << 16 |
                 static_cast<uint32_t>(_mm512_cmp_pd_mask(_mm512_loadu_pd(s + j + 24), b, _CMP_GE_OQ)) << 24;
    while (m) {
      const int64_t u = __builtin_ctz(m);
      m &= m - 1;
      if (s[j + u] >= bar && col0 + j + u != r) {
        offer(hv, hi, count, s[j + u], col0 + j + u);
        bar = hv[0];
      }
    }
  }
  row_scan_generic(s + j, cols - j, col0 + j, r, hv, hi, count);
}

__attribute__((target("avx512f"))) void column_scan_avx512(const float* s, int64_t ja, int64_t jb, int64_t col0,
                                                           int64_t r, float* bar, float* vals, int64_t* idx,
                                                           int64_t count) {
  int64_t j = ja;
  for (; j + 16 <= jb; j += 16) {
    __mmask16 m = _mm512_cmp_ps_mask(_mm512_loadu_ps(s + j), _mm512_loadu_ps(bar + (j - ja)), _CMP_GE_OQ);
    while (m) {
      const int64_t u = __builtin_ctz(m);
      m &= m - 1;
      const int64_t c = col0 + j + u;
      if (s[j + u] >= bar[j + u - ja] && c != r) {
        offer(vals + c * count, idx + c * count, count, s[j + u], r);
        bar[j + u - ja] = vals[c * count];
      }
    }
  }
  if (j < jb) column_scan_generic(s, j, jb, col0, r, bar + (j - ja), vals, idx, count);
}

__attribute__((target("avx512f"))) void column_scan_avx512(const double* s, int64_t ja, int64_t jb, int64_t col0,
                                                           int64_t r, double* bar, double* vals, int64_t* idx,
                                                           int64_t count) {
  int64_t j = ja;
  for (; j + 8 <= jb; j += 8) {
    __mmask8 m = _mm512_cmp_pd_mask(_mm512_loadu_pd(s + j), _mm512_loadu_pd(bar + (j - ja)), _CMP_GE_OQ);
    while (m) {
      const int64_t u = __builtin_ctz(m);
      m &= m - 1;
      const int64_t c = col0 + j + u;
      if (s[j + u] >= bar[j + u - ja] && c != r) {
        offer(vals + c * count, idx + c * count, count, s[j + u], r);
        bar[j + u - ja] = vals[c * count];
      }
    }
  }
  if (j < jb) column_scan_generic(s, j, jb, col0, r, bar + (j - ja), vals, idx, count);
}

std::atomic<bool> avx512_allowed{true};

bool use_avx512() {
  static const bool supported = __builtin_cpu_supports("avx512f");
  return supported && avx512_allowed.load(std::memory_order_relaxed);
}
#endif

template <typename T>
void row_side(const T* tile, int64_t ld, int64_t rows, int64_t cols, int64_t row0, int64_t col0, T* vals,
              int64_t* idx, int64_t count) {
#ifdef FASTSIM_AVX512
  const bool wide = use_avx512();
#endif
#pragma omp for schedule(dynamic, 16)
  for (int64_t i = 0; i < rows; ++i) {
    const int64_t r = row0 + i;
#ifdef FASTSIM_AVX512
    if (wide) {
      row_scan_avx512(tile + i * ld, cols, col0, r, vals + r * count, idx + r * count, count);
      continue;
    }
#endif
    row_scan_generic(tile + i * ld, cols, col0, r, vals + r * count, idx + r * count, count);
  }
}

constexpr int64_t kColumnStripe = 512;  // columns per work item of the column side

template <typename T>
void column_side(const T* tile, int64_t ld, int64_t rows, int64_t cols, int64_t row0, int64_t col0,
                 int64_t begin, T* vals, int64_t* idx, int64_t count) {
  // Work items are stripes of columns (dynamic schedule: a thread slowed by other load takes
  // fewer); a stripe is scanned down all rows of the tile, its bars kept in a local array.
  const int64_t stripes = (cols - begin + kColumnStripe - 1) / kColumnStripe;
  std::vector<T> bar(static_cast<size_t>(kColumnStripe));
#ifdef FASTSIM_AVX512
  const bool wide = use_avx512();
#endif
#pragma omp for schedule(dynamic, 1)
  for (int64_t stripe = 0; stripe < stripes; ++stripe) {
    const int64_t ja = begin + stripe * kColumnStripe;
    const int64_t jb = std::min(cols, ja + kColumnStripe);
    for (int64_t j = ja; j < jb; ++j) bar[j - ja] = vals[(col0 + j) * count];
#ifdef FASTSIM_AVX512
    if (wide) {
      for (int64_t i = 0; i < rows; ++i)
        column_scan_avx512(tile + i * ld, ja, jb, col0, row0 + i, bar.data(), vals, idx, count);
      continue;
    }
#endif
    for (int64_t i = 0; i < rows; ++i)
      column_scan_generic(tile + i * ld, ja, jb, col0, row0 + i, bar.data(), vals, idx, count);
  }
}

// ---- Single-pass variant for tiles whose column heaps are all full (every tile after the first
// row block): each tile row is scanned for its own heap and, while it is still in L1, tested
// against a frozen snapshot of the column bars. Hits (rare) go to per-thread buckets by column
// stripe and are offered to the column heaps afterwards. The final heap is the best `count`
// entries under a strict total order, so it does not depend on the order of the offers.

template <typename T>
struct Hit {
  int64_t col;  // sample index of the column
  int64_t row;  // sample index of the row
  T value;
};

template <typename T>
void column_hits_generic(const T* s, int64_t begin, int64_t cols, int64_t col0, int64_t r, const T* bar,
                         std::vector<Hit<T>>* buckets) {
  for (int64_t j = begin; j < cols; ++j) {
    if (s[j] >= bar[j - begin] && col0 + j != r) buckets[(j - begin) / kColumnStripe].push_back({col0 + j, r, s[j]});
  }
}

#ifdef FASTSIM_AVX512
__attribute__((target("avx512f"))) void column_hits_avx512(const float* s, int64_t begin, int64_t cols, int64_t col0,
                                                           int64_t r, const float* bar,
                                                           std::vector<Hit<float>>* buckets) {
  int64_t j = begin;
  for (; j + 16 <= cols; j += 16) {
    __mmask16 m = _mm512_cmp_ps_mask(_mm512_loadu_ps(s + j), _mm512_loadu_ps(bar + (j - begin)), _CMP_GE_OQ);
    while (m) {
      const int u = __builtin_ctz(m);
      m &= m - 1;
      if (col0 + j + u != r) buckets[(j + u - begin) / kColumnStripe].push_back({col0 + j + u, r, s[j + u]});
    }
  }
  column_hits_generic(s, j, cols, col0, r, bar + (j - begin), buckets + (j - begin) / kColumnStripe);
}

__attribute__((target("avx512f"))) void column_hits_avx512(const double* s, int64_t begin, int64_t cols,
                                                           int64_t col0, int64_t r, const double* bar,
                                                           std::vector<Hit<double>>* buckets) {
  int64_t j = begin;
  for (; j + 8 <= cols; j += 8) {
    __mmask8 m = _mm512_cmp_pd_mask(_mm512_loadu_pd(s + j), _mm512_loadu_pd(bar + (j - begin)), _CMP_GE_OQ);
    while (m) {
      const int u = __builtin_ctz(m);
      m &= m - 1;
      if (col0 + j + u != r) buckets[(j + u - begin) / kColumnStripe].push_back({col0 + j + u, r, s[j + u]});
    }
  }
  column_hits_generic(s, j, cols, col0, r, bar + (j - begin), buckets + (j - begin) / kColumnStripe);
}
#endif

template <typename T>
void single_pass(const T* tile, int64_t ld, int64_t rows, int64_t cols, int64_t row0, int64_t col0, int64_t begin,
                 const T* bar, T* vals, int64_t* idx, int64_t count, bool parallel, int team) {
  const int64_t stripes = (cols - begin + kColumnStripe - 1) / kColumnStripe;
  std::vector<std::vector<std::vector<Hit<T>>>> buckets;
#ifdef FASTSIM_AVX512
  const bool wide = use_avx512();
#endif
#pragma omp parallel if (parallel) num_threads(team)
  {
    int threads = 1, me = 0;
#ifdef _OPENMP
    threads = omp_get_num_threads();
    me = omp_get_thread_num();
#endif
#pragma omp single
    buckets.assign(static_cast<size_t>(threads), std::vector<std::vector<Hit<T>>>(static_cast<size_t>(stripes)));
    std::vector<Hit<T>>* mine = buckets[static_cast<size_t>(me)].data();
#pragma omp for schedule(dynamic, 16)
    for (int64_t i = 0; i < rows; ++i) {
      const int64_t r = row0 + i;
      const T* s = tile + i * ld;
#ifdef FASTSIM_AVX512
      if (wide) {
        row_scan_avx512(s, cols, col0, r, vals + r * count, idx + r * count, count);
        column_hits_avx512(s, begin, cols, col0, r, bar, mine);
        continue;
      }
#endif
      row_scan_generic(s, cols, col0, r, vals + r * count, idx + r * count, count);
      column_hits_generic(s, begin, cols, col0, r, bar, mine);
    }
#pragma omp for schedule(dynamic, 1)
    for (int64_t stripe = 0; stripe < stripes; ++stripe) {
      for (int t = 0; t < threads; ++t) {
        for (const Hit<T>& h : buckets[static_cast<size_t>(t)][static_cast<size_t>(stripe)]) {
          offer(vals + h.col * count, idx + h.col * count, count, h.value, h.row);
        }
      }
    }
  }
}

}  // namespace

template <typename T>
void topk_tile_cpu(const T* tile, int64_t ld, int64_t rows, int64_t cols, int64_t row0, int64_t col0,
                   int64_t col_side_begin, T* vals, int64_t* idx, int64_t count, int threads) {
  if (rows <= 0 || cols <= 0) return;
  const int64_t begin = std::max<int64_t>(0, col_side_begin);
  int team = 1;
#ifdef _OPENMP
  team = threads > 0 ? threads : omp_get_max_threads();
#endif
  // Small tiles run on the calling thread: waking a team costs more than the scan (and much more
  // on a machine shared with other busy processes).
  const bool parallel = team > 1 && rows * cols >= (int64_t{1} << 16);
  if (begin < cols) {
    std::vector<T> bar(static_cast<size_t>(cols - begin));
    bool full = true;
    for (int64_t j = begin; j < cols; ++j) {
      bar[j - begin] = vals[(col0 + j) * count];
      full = full && bar[j - begin] > -std::numeric_limits<T>::infinity();
    }
    if (full && single_pass_enabled.load(std::memory_order_relaxed)) {
      single_pass(tile, ld, rows, cols, row0, col0, begin, bar.data(), vals, idx, count, parallel, team);
      return;
    }
  }
#pragma omp parallel if (parallel) num_threads(team)
  {
    row_side(tile, ld, rows, cols, row0, col0, vals, idx, count);  // ends with the omp-for barrier
    if (begin < cols) column_side(tile, ld, rows, cols, row0, col0, begin, vals, idx, count);
  }
}

bool topk_single_pass(int enable) {
  if (enable >= 0) single_pass_enabled.store(enable != 0);
  return single_pass_enabled.load();
}

bool topk_simd(int enable) {
#ifdef FASTSIM_AVX512
  if (enable >= 0) avx512_allowed.store(enable != 0);
  return use_avx512();
#else
  (void)enable;
  return false;
#endif
}

template <typename T>
void topk_sort_cpu(T* vals, int64_t* idx, int64_t n, int64_t count) {
#pragma omp parallel
  {
    std::vector<int64_t> order(static_cast<size_t>(count));
    std::vector<T> v(static_cast<size_t>(count));
    std::vector<int64_t> ix(static_cast<size_t>(count));
#pragma omp for schedule(static)
    for (int64_t r = 0; r < n; ++r) {
      T* hv = vals + r * count;
      int64_t* hi = idx + r * count;
      std::iota(order.begin(), order.end(), int64_t{0});
      std::sort(order.begin(), order.end(),
                [&](int64_t a, int64_t b) { return better(hv[a], hi[a], hv[b], hi[b]); });
      for (int64_t p = 0; p < count; ++p) {
        v[p] = hv[order[p]];
        ix[p] = hi[order[p]];
      }
      std::copy(v.begin(), v.end(), hv);
      std::copy(ix.begin(), ix.end(), hi);
    }
  }
}

template void topk_tile_cpu<float>(const float*, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, float*,
                                   int64_t*, int64_t, int);
template void topk_tile_cpu<double>(const double*, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, double*,
                                    int64_t*, int64_t, int);
template void topk_sort_cpu<float>(float*, int64_t*, int64_t, int64_t);
template void topk_sort_cpu<double>(double*, int64_t*, int64_t, int64_t);

}  // namespace fastsim
