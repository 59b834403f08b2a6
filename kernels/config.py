"""A kernel's compile-time launch configuration, the one record that both the launcher and the
offline GPU checks (fastsim.kernels.targets) read.

Every kernel module exposes ``launch_config(...)`` (the launcher's inputs -> the LaunchConfig it
launches) and ``configs()`` (every LaunchConfig its dispatch can pick on a GPU). Launchers pass
``cfg.launch_args()`` and nothing else for the compile-time arguments.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class LaunchConfig:
    """kernel: the @triton.jit function; signature: the Triton type of each runtime argument
    ("*fp32", "i32", ...), as a GPU launch of this configuration specializes them (32-bit
    integers); constexprs: the compile-time arguments; aligned: whether the launch has its
    pointers, strides and feature counts divisible by 16 (Triton then specializes on it, and the
    dispatch may pick other tiles for the unaligned case); label: what the dispatch keyed on."""

    kernel: Any
    signature: tuple[tuple[str, str], ...]
    constexprs: tuple[tuple[str, Any], ...]
    num_warps: int
    num_stages: int
    aligned: bool = True
    label: str = ""

    def __getitem__(self, name: str) -> Any:
        return dict(self.constexprs)[name]

    def launch_args(self) -> dict:
        """Keyword arguments of the kernel launch: the constexprs, num_warps and num_stages."""
        return {**dict(self.constexprs), "num_warps": self.num_warps, "num_stages": self.num_stages}

    @property
    def name(self) -> str:
        fn = self.kernel
        return getattr(fn, "__name__", None) or getattr(getattr(fn, "fn", None), "__name__", "kernel")


def make_config(
    kernel, runtime: dict, constexprs: dict, *, num_warps: int, num_stages: int, aligned: bool = True, label: str = ""
) -> LaunchConfig:
    """A LaunchConfig from {argument: type} for the runtime arguments and the constexprs."""
    return LaunchConfig(
        kernel=kernel,
        signature=tuple(runtime.items()),
        constexprs=tuple(constexprs.items()),
        num_warps=num_warps,
        num_stages=num_stages,
        aligned=aligned,
        label=label,
    )


def unique(configs) -> list[LaunchConfig]:
    """configs without repeats (the same kernel, signature, constexprs, warps and stages)."""
    seen, out = set(), []
    for c in configs:
        key = (c.name, c.signature, tuple((k, str(v)) for k, v in c.constexprs), c.num_warps, c.num_stages, c.aligned)
        if key not in seen:
            seen.add(key)
            out.append(c)
    return out


def is_aligned(*values) -> bool:
    """Whether Triton specializes these launch arguments as divisible by 16: integers (strides,
    widths) that are multiples of 16 and tensors whose data pointer is 16-byte aligned."""
    for v in values:
        if hasattr(v, "data_ptr"):
            if v.data_ptr() % 16:
                return False
        elif int(v) % 16:
            return False
    return True
