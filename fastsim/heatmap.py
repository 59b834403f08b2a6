"""Heatmap PNGs of layer-similarity matrices (matplotlib, no screen needed)."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np


def save_heatmap(
    matrix: np.ndarray,
    labels: Sequence[str],
    path: str | os.PathLike,
    *,
    title: str,
    colorbar_label: str,
    blocks: Sequence[tuple[int, int]] = (),
    vmin: float = 0.0,
    vmax: float = 1.0,
) -> str:
    """One L x L heatmap: layer labels on both axes, a colour bar on the shared [vmin, vmax]
    scale, detected blocks outlined, and cell values written when the matrix is small enough to
    read them (L <= 16)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    m = np.asarray(matrix, dtype=np.float64)
    L = m.shape[0]
    size = 4.5 + 0.22 * L
    fig, ax = plt.subplots(figsize=(size + 1.2, size))
    try:
        image = ax.imshow(m, cmap="viridis", vmin=vmin, vmax=vmax, origin="upper", interpolation="nearest")
        ax.set_xticks(range(L), labels, rotation=90 if L > 16 else 0, fontsize=8)
        ax.set_yticks(range(L), labels, fontsize=8)
        ax.set_xlabel("layer")
        ax.set_ylabel("layer")
        ax.set_title(title, fontsize=10)
        bar = fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
        bar.set_label(colorbar_label)
        for a, b in blocks:
            ax.add_patch(Rectangle((a - 0.5, a - 0.5), b - a + 1, b - a + 1, fill=False, edgecolor="red", linewidth=2))
        if L <= 16:
            for i in range(L):
                for j in range(L):
                    if np.isfinite(m[i, j]):
                        shade = (m[i, j] - vmin) / (vmax - vmin) if vmax > vmin else 0.0
                        ax.text(j, i, f"{m[i, j]:.2f}", ha="center", va="center", fontsize=6,
                                color="black" if shade > 0.6 else "white")
        fig.tight_layout()
        fig.savefig(os.fspath(path), dpi=120)
    finally:
        plt.close(fig)
    return os.fspath(path)
