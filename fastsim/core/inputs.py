"""Checking and converting the arrays users pass in, and converting results back.

NumPy arrays become zero-copy CPU tensors; results go back to the caller's type: NumPy in,
NumPy out; torch in, torch out on the same device.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from . import budget, threads

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


@dataclass(frozen=True)
class Origin:
    """Where the inputs came from, so results can be returned in kind."""

    numpy: bool
    device: torch.device


def numpy_to_torch(name: str, x: np.ndarray) -> torch.Tensor:
    if isinstance(x, np.ma.MaskedArray):
        raise TypeError(
            f"{name} is a NumPy masked array; fastsim would ignore its mask. Pass the rows you mean, "
            f"e.g. {name}[~{name}.mask.any(1)].data, or {name}.filled(value)"
        )
    if x.dtype.kind != "f" or x.dtype.itemsize not in (2, 4, 8):
        raise TypeError(f"{name} must have a floating dtype (float16, float32 or float64); got dtype {x.dtype}")
    if not x.dtype.isnative or any(s < 0 for s in x.strides):
        # torch takes neither byte-swapped data nor negative strides (a[::-1]): copy those.
        x = np.ascontiguousarray(x, dtype=x.dtype.newbyteorder("="))
    with warnings.catch_warnings():
        # Read-only arrays are fine: fastsim never writes into its inputs.
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(x)


def as_tensor(name: str, x: Any) -> tuple[torch.Tensor, bool]:
    """Return (tensor, came_from_numpy) for a NumPy array or torch tensor; reject anything else."""
    if isinstance(x, torch.Tensor):
        if x.layout != torch.strided:
            raise TypeError(f"{name} must be a dense tensor; got layout {x.layout} (convert with .to_dense())")
        if x.device.type == "meta":
            raise ValueError(f"{name} is on the meta device and holds no values")
        if x.dtype not in FLOAT_DTYPES:
            raise TypeError(
                f"{name} must have a floating dtype (float16, bfloat16, float32 or float64); got {x.dtype}"
            )
        return x.detach(), False
    if isinstance(x, np.ndarray):
        return numpy_to_torch(name, x), True
    raise TypeError(f"{name} must be a NumPy array or a torch tensor; got {type(x).__name__}")


def check_matrix(name: str, x: torch.Tensor) -> None:
    if x.dim() != 2:
        raise ValueError(f"{name} must be 2-D with shape (n_samples, n_features); got shape {tuple(x.shape)}")
    if x.shape[1] == 0:
        raise ValueError(f"{name} must have at least one feature column; got shape {tuple(x.shape)}")


def check_finite(name: str, x: torch.Tensor) -> None:
    """Raise if x holds NaN or +-Inf, naming the first offending row (streamed over row chunks)."""
    row = first_nonfinite_row(x)
    if row is not None:
        raise ValueError(f"{name} contains NaN or Inf (first in row {row}); clean the input or pass check_finite=False")


def all_finite(x: torch.Tensor) -> bool:
    """Whether x holds no NaN and no +-Inf: one reduction (min and max propagate NaN)."""
    if x.numel() == 0:
        return True
    lo, hi = torch.aminmax(x)
    return bool(torch.isfinite(lo) & torch.isfinite(hi))


def first_nonfinite_row(x: torch.Tensor) -> int | None:
    """Index of the first row of a 2-D tensor holding NaN or Inf, or None."""
    if all_finite(x):  # the common case: one pass, no (n, d) bool temporary
        return None
    for start, end in budget.row_chunks(x.shape[0], max(x.shape[1], 1) * 2):
        bad = ~torch.isfinite(x[start:end]).all(dim=1)
        if bool(bad.any()):
            return start + int(bad.nonzero()[0, 0])
    return None


def prepare(
    named: Sequence[tuple[str, Any]], *, finite: bool, same_features: bool = False, what: str = "cosine"
) -> tuple[list[torch.Tensor], Origin]:
    """Validate a group of (name, array) inputs that are compared with each other.

    All must be of one kind (NumPy or torch), 2-D, on one device, with the same number of rows
    (and, with same_features, the same number of columns: `what` names the metric that needs it).
    """
    tensors: list[torch.Tensor] = []
    kinds: list[bool] = []
    for name, x in named:
        t, from_numpy = as_tensor(name, x)
        check_matrix(name, t)
        tensors.append(t)
        kinds.append(from_numpy)
    names = [name for name, _ in named]
    if len(set(kinds)) > 1:
        raise TypeError(f"{names[0]} and {names[kinds.index(not kinds[0])]} must both be NumPy arrays or both torch tensors")
    devices = {t.device for t in tensors}
    if len(devices) > 1:
        raise ValueError(f"all of {', '.join(names)} must be on one device; got {sorted(map(str, devices))}")
    n0 = tensors[0].shape[0]
    for name, t in zip(names[1:], tensors[1:]):
        if t.shape[0] != n0:
            raise ValueError(
                f"{names[0]} and {name} must have the same number of rows (samples): "
                f"{names[0]} has {n0}, {name} has {t.shape[0]}"
            )
        if same_features and t.shape[1] != tensors[0].shape[1]:
            raise ValueError(
                f"{names[0]} and {name} must have the same number of features for {what}: "
                f"{names[0]} has {tensors[0].shape[1]}, {name} has {t.shape[1]}"
            )
    if finite:
        with threads.pool(tensors[0].device) as pmap:  # one single-threaded task per input
            rows = list(pmap(first_nonfinite_row, tensors))
        for name, row in zip(names, rows):
            if row is not None:
                raise ValueError(
                    f"{name} contains NaN or Inf (first in row {row}); clean the input or pass check_finite=False"
                )
    return tensors, Origin(numpy=kinds[0], device=tensors[0].device)


def split_layers(layers: Any) -> list[tuple[str, Any]]:
    """Name each layer of a sequence of (n, d) arrays, or of one (L, n, d) array."""
    if isinstance(layers, (np.ndarray, torch.Tensor)):
        if layers.ndim != 3:
            raise ValueError(
                f"layers must be a sequence of 2-D arrays or one 3-D array (L, n, d); got shape {tuple(layers.shape)}"
            )
        if isinstance(layers, np.ma.MaskedArray):
            numpy_to_torch("layers", layers)  # raises: masks are not silently dropped
        items = [layers[i] for i in range(layers.shape[0])]
    elif isinstance(layers, (list, tuple)):
        items = list(layers)
    else:
        raise TypeError(f"layers must be a list/tuple of arrays or one 3-D array; got {type(layers).__name__}")
    if len(items) == 0:
        raise ValueError("layers must hold at least one layer")
    return [(f"layers[{i}]", x) for i, x in enumerate(items)]


def to_origin(result: torch.Tensor, origin: Origin) -> Any:
    """Return a 0-d or (L, L) result as the caller's kind: NumPy scalar/array or a tensor on its device."""
    if origin.numpy:
        out = result.detach().cpu().numpy()
        return out[()] if out.ndim == 0 else out
    return result.to(origin.device)
