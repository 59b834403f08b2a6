"""Backends behind the public metrics.

* ``torch``  — plain torch ops, chunked so that no n x n matrix is ever held whole (CPU and GPU).
* ``triton`` — Triton kernels from ``fastsim.kernels`` (CUDA tensors, or CPU tensors under
  ``TRITON_INTERPRET=1``).
* ``cuda``   — fastsim's compiled kernels in ``fastsim._C``: CUDA C++ on GPU tensors and the C++
  twin of the same kernel on CPU tensors.
"""
