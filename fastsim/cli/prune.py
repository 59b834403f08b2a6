"""``fastsim prune``: the pruning sweep from the command line (table, plot, JSON; ``fastsim.prune.sweep``)."""

from __future__ import annotations

import argparse
import os

from ..blocks import MIN_CONTRAST
from ..prune import STRATEGIES, sweep
from ..prune.surgery import LayerStackError, find_layer_stack
from ..prune.sweep import DEFAULT_STRATEGIES, HEADS
from ..speech import synth
from ..speech.packing import LAYOUTS
from .common import (
    add_model_argument,
    add_run_arguments,
    check_run_arguments,
    comma_list,
    cpu_threads,
    fail,
    finite_float,
    named,
    resolve_model,
)

#: the offline default: wav2vec2-base's layout (12 post-norm layers, group-norm CNN, 20 ms frames)
#: at a quarter of its width, with random weights: its sweep over the 1400-clip keyword task (53
#: pruned models) takes about 5 minutes on this project's 2-core CPU machines.
DEFAULT_MODEL = "random:wav2vec2-small"
#: library argument names -> this command's flags (errors name their argument first)
FLAGS = {"layout": "--layout", "probe_task": "--task", "levels": "--levels", "strategies": "--strategies",
         "head": "--head", "probe_seeds": "--probe-seeds", "batch_size": "--batch-size"}


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "prune",
        help="remove layers without retraining: linear-probe accuracy, parameters and speed against layers removed",
        description="For each strategy and number of removed layers, run the model with those layers skipped and "
        "score it with a linear probe on the mean-pooled last hidden state: by default the seed paper's protocol, a "
        "probe head trained once on the unpruned model and kept fixed (nothing retrained), on the task's fixed "
        "held-out test clips. Reports accuracy relative to the unpruned model (spread over probe heads; bootstrap "
        "interval over test clips), the largest level per strategy keeping >= 95 %%, parameters and inference time "
        "per second of audio. Writes prune.json and prune.png. With no MODEL: a reduced wav2vec2-base architecture "
        "(12 layers x 256) with RANDOM weights. Default task: keyword clips synthesized with espeak-ng (offline), "
        "test clips by held-out voices.",
    )
    add_model_argument(p, DEFAULT_MODEL)
    p.add_argument("--strategies", default=",".join(DEFAULT_STRATEGIES),
                   help=f"comma list of {', '.join(STRATEGIES)} (default: %(default)s)")
    p.add_argument("--levels", default="0..N",
                   help="layers removed: A..B ranges and/or comma lists; N = layers - 1 (default: %(default)s)")
    p.add_argument("--task", default="keywords",
                   help="keywords, speakers (espeak-ng stand-ins), a directory of label subfolders of audio, a "
                   "Speech Commands v0.02 folder (its word task), or speakers:DIR (its speaker task) (default: %(default)s)")
    p.add_argument("--head", default="fixed", choices=HEADS,
                   help="fixed: the probe head is trained once on the unpruned model and kept while layers are removed "
                   "(the seed paper's protocol); refit: a new head for every pruned model (default: %(default)s)")
    p.add_argument("--probe-seeds", type=int, default=3,
                   help="probe heads, each trained on its own seeded subsample of the training clips; the accuracy is "
                   "their mean, their spread is reported (default: %(default)s)")
    p.add_argument("--layout", default="auto", choices=("auto", *LAYOUTS),
                   help="how clips become inputs: clip (one per input) or packed (Whisper: 30 one-second clips to a "
                   "30 s window); auto: packed for Whisper, else clip (default: %(default)s)")
    p.add_argument("--threshold", type=finite_float, default=None,
                   help="block threshold for the 'block' strategy (default: Otsu)")
    p.add_argument("--min-contrast", type=finite_float, default=MIN_CONTRAST,
                   help="least block contrast for the 'block' strategy; below it the matrix has no block structure "
                   "and 'block' removes nothing (default: %(default)s)")
    add_run_arguments(p, out="fastsim-prune", threads=True)
    return p


def parse_levels(text: str, num_layers: int) -> list[int]:
    """'0..N', '0..6', '0,2,4', '0..3,8' -> sorted layer counts; N is num_layers - 1."""
    top = num_layers - 1
    out: set[int] = set()
    for part in comma_list(text):
        try:
            if ".." in part:
                a, b = part.split("..", 1)
                lo = top if a.strip().upper() == "N" else int(a)
                hi = top if b.strip().upper() == "N" else int(b)
                if lo > hi:
                    raise ValueError
                out.update(range(lo, hi + 1))
            else:
                out.add(top if part.upper() == "N" else int(part))
        except ValueError:
            raise fail(f"--levels: cannot read {part!r}; use ranges like 0..N or 0..6 and comma lists") from None
    bad = sorted(n for n in out if not 0 <= n <= top)
    if bad or not out:
        raise fail(f"--levels: {bad[0] if bad else 'nothing'} is not a number of layers that can be "
                   f"removed from this {num_layers}-layer model (0..{top})")
    return sorted(out)


def run(args: argparse.Namespace) -> int:
    check_run_arguments(args)
    if args.min_contrast < 0:
        raise fail(f"--min-contrast must be >= 0 (0: keep any cut); got {args.min_contrast}")
    with cpu_threads(args.threads):
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    strategies = comma_list(args.strategies)
    unknown = [s for s in strategies if s not in STRATEGIES]
    if unknown or not strategies:
        raise fail(f"--strategies: unknown strategy {', '.join(unknown) or '(none given)'}; "
                   f"choose from {', '.join(STRATEGIES)}")
    if args.probe_seeds < 1:
        raise fail(f"--probe-seeds must be >= 1; got {args.probe_seeds}")
    model, name = resolve_model(args.model, args.device, args.seed)
    try:
        L = len(find_layer_stack(model).layers)
    except LayerStackError as e:
        raise fail(str(e)) from None
    levels = parse_levels(args.levels, L)
    print(f"model: {name}: {L} layers x {model.config.hidden_size} on {next(model.parameters()).device}")
    if args.task in ("keywords", "speakers"):
        print(f"task: {args.task}, speech synthesized with espeak-ng (cached in {synth.cache_dir()})")
    try:
        result = sweep(model, strategies, levels, args.task, model_name=name, batch_size=args.batch_size,
                       probe_seeds=args.probe_seeds, head=args.head, layout=args.layout, seed=args.seed,
                       threshold=args.threshold, min_contrast=args.min_contrast, progress=not args.no_progress)
    except synth.SynthesisError as e:
        raise fail(f"the built-in task cannot make speech: {e}") from None
    except ValueError as e:  # (ModelError is one)
        raise named(e, FLAGS) from None
    try:
        written = result.save(args.out)
    except OSError as e:
        raise fail(f"--out: cannot write the results into {args.out!r}: {e}") from None
    print(result.summary())
    print(f"\nwrote {', '.join(os.path.basename(w) for w in written)} to {args.out}")
    return 0
