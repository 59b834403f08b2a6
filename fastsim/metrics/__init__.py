"""The metric registry: one module per metric, one line each in ``registry.REGISTRY``.

Every name here is the one vocabulary of fastsim: the public functions, ``similarity_matrix``,
``LayerSimilarity``, ``fastsim analyze --metrics``, and the JSON, CSV and heatmap file names.
A metric module declares (``spec.Metric``) its name, title, options and their checks, its float64
NumPy reference, its all-pairs implementations per backend, and how it streams.
"""

from __future__ import annotations

from .registry import REGISTRY, get, names, title
from .spec import BACKENDS, Metric, Option

__all__ = ["REGISTRY", "Metric", "Option", "BACKENDS", "get", "names", "title"]
