"""Triton kernels of fastsim, shipped in the wheel as ``fastsim.kernels``.

A leaf package: nothing here imports from ``fastsim`` (the dtype/precision policy is in
``precision``, the launch configurations in each module). Each kernel module holds its
``@triton.jit`` kernels, ``launch_config(...)`` (the launcher's inputs -> the one
``config.LaunchConfig`` it launches), ``configs()`` (every configuration its dispatch can pick on
a GPU) and the launcher:

* ``comoment.upper_gram``: upper-triangle Gram tiles of one (n, D) chunk;
* ``linear_cka.linear_cka_sums``: feature-space linear CKA sums of all layer pairs in one pass;
* ``kernel_tiles.kernel_tile_sums``: sample-space linear / RBF CKA sums from kernel tiles;
* ``cosine.row_cosine`` and ``cosine.layer_cosine_sums``: per-sample and all-pairs cosine;
* ``mimic_block.mimic_block``: one fused mimicking block.

``targets`` compiles every configuration for real GPUs offline (``python -m fastsim.kernels.targets``).
The public metrics in ``fastsim`` reach the kernels through ``backend="triton"``. Without a GPU they
run under Triton's interpreter when ``TRITON_INTERPRET=1`` is set before triton is imported.
"""
