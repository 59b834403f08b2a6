"""Warnings for degenerate input and the argument checks that name the argument."""

from __future__ import annotations

import numbers
import sys
import warnings
from typing import Any


class DegenerateWarning(RuntimeWarning):
    """A metric is undefined for valid but degenerate input (zero variance, zero vectors).

    The affected value is NaN (CKA) or the documented substitute (cosine of a zero vector is 0).
    """


def warn_degenerate(message: str) -> None:
    """Issue a DegenerateWarning attributed to the caller's line outside the fastsim package."""
    frame, level = sys._getframe(1), 2  # stacklevel 2 is the caller of this function
    while frame is not None and frame.f_globals.get("__name__", "").startswith("fastsim"):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, DegenerateWarning, stacklevel=level)


def check_choice(name: str, value: object, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(repr(c) for c in choices)}; got {value!r}")
    return value


def check_flag(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False; got {value!r}")
    return value


def check_int(name: str, value: Any, minimum: int | None = None) -> int:
    """An integer (Python or NumPy, not bool) at least `minimum`, as a Python int."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer; got {value!r}")
    if minimum is not None and int(value) < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}; got {value!r}")
    return int(value)


def check_positive_real(name: str, value: Any) -> float:
    """A finite real number > 0 (not bool), as a float."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (0 < float(value) < float("inf")):
        raise ValueError(f"{name} must be a positive finite number; got {value!r}")
    return float(value)
