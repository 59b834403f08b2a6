"""The metric registry: one module per metric, one line each in ``REGISTRY``.

Every name here is the one vocabulary of fastsim: the public functions, ``similarity_matrix``,
``LayerSimilarity``, ``fastsim analyze --metrics``, and the JSON, CSV and heatmap file names.
"""

from __future__ import annotations

from .registry import REGISTRY, Metric, get, names, title

__all__ = ["REGISTRY", "Metric", "get", "names", "title"]
