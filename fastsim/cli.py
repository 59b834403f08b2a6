"""Command line: ``fastsim demo`` and ``fastsim info``."""

from __future__ import annotations

import argparse
import platform
import sys

import torch


def _info() -> int:
    from . import __version__, native
    from .backends import triton_cosine

    print(f"fastsim {__version__} | torch {torch.__version__} | python {platform.python_version()}")
    print(f"fastsim._C built: {native.available()} | CUDA kernels compiled: {native.cuda_compiled()}")
    print(f"CUDA device: {torch.cuda.get_device_name() if torch.cuda.is_available() else 'none'}")
    ok, why = triton_cosine.usable(torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    print(f"Triton kernels runnable here: {ok}{'' if ok else ' (' + why + ')'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fastsim", description="Fast, exact layer-similarity metrics.")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="similarity matrices of a synthetic 12-layer stack, checked against the reference")
    demo.add_argument("--n", type=int, default=2000, help="samples (frames) per layer")
    demo.add_argument("--dim", type=int, default=256, help="features per layer")
    demo.add_argument("--k", type=int, default=10, help="neighbours for mutual kNN")
    demo.add_argument("--seed", type=int, default=0)
    sub.add_parser("info", help="versions and which backends can run here")
    args = parser.parse_args(argv)
    if args.command == "info":
        return _info()
    from . import demo as demo_module

    demo_module.run(n=args.n, d=args.dim, k=args.k, seed=args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
