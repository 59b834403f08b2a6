"""Triton kernels of fastsim, shipped in the wheel as ``fastsim.kernels``.

Each module holds ``@triton.jit`` kernels and the launcher that calls them; the public metrics in
``fastsim`` reach them through ``backend="triton"``. On a machine without a GPU they run under
Triton's interpreter when ``TRITON_INTERPRET=1`` is set before triton is imported.
"""
