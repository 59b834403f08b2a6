"""Accumulators: state that grows with every batch of samples, merges across processes, and
gives a result at any time. One protocol (``Accumulator``: update / compute / reset / merge /
all_reduce), metric-agnostic pieces here (a bounded uniform sample, per-batch averaging); each
metric's exact streaming state lives in its metric module (e.g. ``StreamingCKA`` in
``fastsim.metrics.cka``)."""

from .base import Accumulator
from .per_batch import PerBatch
from .reservoir import BottomKSample

__all__ = ["Accumulator", "BottomKSample", "PerBatch"]
