"""fastsim: fast, exact layer-similarity metrics for neural networks.

>>> import numpy as np, fastsim
>>> a = np.random.default_rng(0).normal(size=(1000, 64))
>>> float(fastsim.cka(a, a))
1.0
"""

from . import reference
from .api import cka, cknna, cosine, mutual_knn, similarity_matrix
from .options import DegenerateWarning
from .layer_similarity import LayerSimilarity
from .analysis import analyze
from .streaming import StreamingCKA

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
    "DegenerateWarning",
    "__version__",
]
