"""The built-in demo: layer-similarity matrices of a synthetic layer stack with planted blocks.

The stack imitates a 12-layer encoder (plus its input row): a residual stream whose updates are
small inside two blocks of layers and large at the block boundary, so every metric should show
two bright blocks. Each metric's matrix is computed by fastsim and, on a subsample, checked
against the NumPy float64 reference.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from . import reference
from .api import similarity_matrix
from .blocks import find_blocks

BLOCKS = ((1, 5), (6, 12))  # inclusive layer ranges of the planted blocks


def synthetic_layers(n: int, d: int, num_layers: int = 12, seed: int = 0) -> list[torch.Tensor]:
    """num_layers + 1 float32 (n, d) hidden states: the input, then one per layer."""
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(n, d, generator=g)
    layers = [h]
    starts = {start for start, _ in BLOCKS}
    for layer in range(1, num_layers + 1):
        # A block start rewrites most of the stream; inside a block each layer nudges it.
        weight = 2.0 if layer in starts else 0.15
        update = torch.tanh(h @ (torch.randn(d, d, generator=g) / d**0.5))
        h = h + weight * update + 0.05 * torch.randn(n, d, generator=g)
        layers.append(h)
    return layers


def _format(matrix: np.ndarray) -> str:
    L = matrix.shape[0]
    head = "      " + "".join(f"{j:>6d}" for j in range(L))
    rows = [f"{i:>4d}  " + "".join(f"{v:6.2f}" for v in matrix[i]) for i in range(L)]
    return "\n".join([head, *rows])


def run(n: int = 2000, d: int = 256, k: int = 10, check_samples: int = 300, seed: int = 0) -> dict[str, np.ndarray]:
    """Compute and print every metric's matrix; return them by name."""
    torch.manual_seed(seed)
    layers = synthetic_layers(n, d, seed=seed)
    print(f"fastsim demo: {len(layers)} hidden states (input + 12 layers), n = {n} samples, d = {d}")
    print(f"planted blocks of near-identical layers: {', '.join(f'{a}-{b}' for a, b in BLOCKS)}\n")
    jobs = {
        "cosine": {},
        "cka (linear)": {"kernel": "linear"},
        "cka (linear, debiased)": {"kernel": "linear", "debiased": True},
        "cka (rbf, median sigma)": {"kernel": "rbf"},
        f"mutual_knn (k={k})": {"k": k},
    }
    sub = [x[:check_samples].numpy() for x in layers]
    results = {}
    for name, opts in jobs.items():
        metric = name.split(" ")[0]
        start = time.perf_counter()
        matrix = similarity_matrix(layers, metric, **opts).numpy()
        seconds = time.perf_counter() - start
        small = similarity_matrix([torch.from_numpy(x).double() for x in sub], metric, **opts).numpy()
        error = np.abs(small - reference.similarity_matrix(sub, metric, **opts)).max()
        print(f"{name}: {seconds:.2f} s; float64 check on {check_samples} samples: max |fastsim - reference| = {error:.1e}")
        print(_format(matrix))
        found = ", ".join(f"{a}-{b}" for a, b in find_blocks(matrix)) or "none"
        print(f"detected blocks: {found}\n")
        results[name] = matrix
    return results
