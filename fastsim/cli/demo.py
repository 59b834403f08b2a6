"""``fastsim demo``: similarity matrices of a synthetic 12-layer stack, checked against the reference (``fastsim.demo``)."""

from __future__ import annotations

import argparse

from .. import demo


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("demo", help="similarity matrices of a synthetic 12-layer stack, checked against the reference")
    p.add_argument("--n", type=int, default=2000, help="samples (frames) per layer")
    p.add_argument("--dim", type=int, default=256, help="features per layer")
    p.add_argument("--k", type=int, default=10, help="neighbours for mutual kNN")
    p.add_argument("--seed", type=int, default=0)
    return p


def run(args: argparse.Namespace) -> int:
    demo.run(n=args.n, d=args.dim, k=args.k, seed=args.seed)
    return 0
