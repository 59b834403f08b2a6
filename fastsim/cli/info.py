"""``fastsim info``: versions, and which backends can run here."""

from __future__ import annotations

import argparse
import platform

import torch

from .. import __version__, native
from ..core.triton_support import usable


def add_parser(sub) -> argparse.ArgumentParser:
    return sub.add_parser("info", help="versions and which backends can run here")


def run(args: argparse.Namespace) -> int:
    print(f"fastsim {__version__} | torch {torch.__version__} | python {platform.python_version()}")
    print(f"fastsim._C built: {native.available()} | CUDA kernels compiled: {native.cuda_compiled()}")
    print(f"CUDA device: {torch.cuda.get_device_name() if torch.cuda.is_available() else 'none'}")
    ok, why = usable(torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    print(f"Triton kernels runnable here: {ok}{'' if ok else ' (' + why + ')'}")
    return 0
