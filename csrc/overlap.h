// Mutual k-nearest-neighbour overlap counting.
//
// Given neighbour-index lists, count for each sample how many neighbours two
// lists share. Rows hold distinct indices (neighbour lists of one sample never
// repeat an index); for such rows every kernel here returns |A_i ∩ B_i|.
//
// Layouts are dense row-major: a list array is (n, k); a stack of L layers'
// lists is (L, n, k). Index types: int32 or int64.
#pragma once

#include <cstdint>

namespace fastsim {

// totals[x * L + y] = sum over i of |lists[x, i, :] ∩ lists[y, i, :]| for all layer pairs
// (symmetric; the diagonal is n * k). Each layer's row is sorted once and shared by all pairs.
template <typename Index>
void overlap_all_pairs_cpu(const Index* lists, int64_t* totals, int64_t num_layers, int64_t n, int64_t k);

#ifdef FASTSIM_WITH_CUDA
// CUDA twin of the function above; pointers are device pointers, work is queued on `stream`
// (a cudaStream_t passed as an integer; 0 is the legacy default stream). `totals` is overwritten.
template <typename Index>
void overlap_all_pairs_cuda(const Index* lists, int64_t* totals, int64_t num_layers, int64_t n, int64_t k,
                            std::uintptr_t stream);
#endif

}  // namespace fastsim
