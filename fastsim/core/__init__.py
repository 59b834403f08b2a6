"""The shared core below the metrics: one home for each piece of math and policy.

* ``errors``: DegenerateWarning and the argument checks that name the argument.
* ``budget``: the memory budget (FASTSIM_CHUNK_MB) and row chunking.
* ``precision``: the accumulation dtype and the matmul precision modes.
* ``inputs``: checking and converting user arrays, returning results in kind.
* ``scaling``: exact power-of-two scaling, unit rows and exact float64 cosine similarities.
* ``moments``: per-layer scale, mean and second moments (centering without cancellation).
* ``hsic``: HSIC (biased and unbiased) and CKA from a few sums: the one formula.
* ``kernel_sums``: the sums HSIC needs, from the data (feature space or kernel blocks).
* ``comoments``: mergeable co-moment states (streaming, merging, all-reduce).
* ``knn``: exact cosine k-nearest neighbours and neighbour-list overlaps.
* ``triton_support``: whether Triton kernels can run here; stacked layer views.
* ``numpy_reference``: float64 NumPy primitives that the metric references are built from.

Nothing here imports from ``fastsim.metrics`` or above.
"""
