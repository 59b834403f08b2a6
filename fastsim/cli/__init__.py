"""Command line: ``fastsim analyze``, ``prune``, ``distill``, ``demo`` and ``info``.

One module per subcommand, each with ``add_parser(subparsers)`` and ``run(args)``; the arguments
they share and the helpers that read them are ``common``. No library logic here: the commands call
``fastsim.analysis``, ``fastsim.prune`` and ``fastsim.mimic``.
"""

from __future__ import annotations

import argparse

from . import analyze, demo, distill, info, prune

#: the subcommands, in the order ``fastsim --help`` lists them
COMMANDS = (demo, info, prune, analyze, distill)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fastsim", description="Fast, exact layer-similarity metrics.")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_parser(sub).set_defaults(run=command.run)
    args = parser.parse_args(argv)
    return args.run(args)
