"""fastsim: fast, exact layer-similarity metrics for neural networks.

>>> import numpy as np, fastsim
>>> a = np.random.default_rng(0).normal(size=(1000, 64))
>>> float(fastsim.cka(a, a))
1.0
"""

from . import metrics, reference
from .analysis import analyze
from .api import cka, cknna, cosine, mutual_knn, similarity_matrix
from .core.errors import DegenerateWarning
from .layer_similarity import LayerSimilarity
from .metrics.cka import StreamingCKA

__version__ = "0.1.0"

__all__ = [
    "cka",
    "cosine",
    "mutual_knn",
    "cknna",
    "similarity_matrix",
    "StreamingCKA",
    "LayerSimilarity",
    "analyze",
    "reference",
    "metrics",
    "DegenerateWarning",
    "__version__",
]
