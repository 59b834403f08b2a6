"""``fastsim prune``: the pruning sweep from the command line (table, plot, JSON)."""

from __future__ import annotations

import argparse
import os


from .plans import STRATEGIES
from .sweep import DEFAULT_STRATEGIES

#: the offline default: wav2vec2-base's layout (12 post-norm layers, group-norm CNN, 20 ms frames)
#: at a quarter of its width, with random weights. wav2vec2-base itself (95M parameters) takes
#: about 25 s per pruned model over the keyword task on this project's 2-core CPU machines.
DEFAULT_MODEL = "random:wav2vec2-small"

def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "prune",
        help="remove layers without retraining: linear-probe accuracy, parameters and speed against layers removed",
        description="For each strategy and number of removed layers, run the model with those layers skipped, fit a "
        "linear probe on the mean-pooled last kept layer and report its accuracy relative to the unpruned model, "
        "the parameters and the inference time per second of audio. Writes prune.json and prune.png. With no MODEL: "
        "a reduced wav2vec2-base architecture (12 layers x 256) with RANDOM weights, on keyword clips synthesized "
        "with espeak-ng (offline).",
    )
    p.add_argument("model", nargs="?", default=DEFAULT_MODEL,
                   help="local directory, hub name, random:FAMILY-SIZE (SIZE tiny, small, base, large; small = the base layout at width 256) (default: %(default)s)")
    p.add_argument("--strategies", default=",".join(DEFAULT_STRATEGIES),
                   help=f"comma list of {', '.join(STRATEGIES)} (default: %(default)s)")
    p.add_argument("--levels", default="0..N",
                   help="layers removed: A..B ranges and/or comma lists; N = layers - 1 (default: %(default)s)")
    p.add_argument("--task", default="keywords",
                   help="keywords, speakers (espeak-ng stand-ins), or a directory of label subfolders of audio (default: %(default)s)")
    p.add_argument("--out", default="fastsim-prune", help="output directory (default: %(default)s)")
    p.add_argument("--probe-seeds", type=int, default=3, help="train/test splits the accuracy is averaged over")
    p.add_argument("--threshold", type=float, default=None, help="block threshold for the 'block' strategy (default: Otsu)")
    p.add_argument("--batch-size", type=int, default=8, help="clips per forward pass")
    p.add_argument("--device", default=None, help="torch device (default: cuda when available)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's choice)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def parse_levels(text: str, num_layers: int) -> list[int]:
    """'0..N', '0..6', '0,2,4', '0..3,8' -> sorted layer counts; N is num_layers - 1."""
    top = num_layers - 1
    out: set[int] = set()
    for part in (t.strip() for t in text.split(",")):
        if not part:
            continue
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
            raise SystemExit(f"fastsim: error: --levels: cannot read {part!r}; use ranges like 0..N or 0..6 and comma lists") from None
    bad = sorted(n for n in out if not 0 <= n <= top)
    if bad or not out:
        raise SystemExit(f"fastsim: error: --levels: {bad[0] if bad else 'nothing'} is not a number of layers that can be "
                         f"removed from this {num_layers}-layer model (0..{top})")
    return sorted(out)


def run(args: argparse.Namespace) -> int:
    from ..cli import cpu_threads

    with cpu_threads(args.threads):
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    from ..models import ModelError
    from .hooks import LayerStackError, find_layer_stack
    from .sweep import sweep
    from .. import synth
    from ..cli import resolve_model

    strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
    unknown = [s for s in strategies if s not in STRATEGIES]
    if unknown or not strategies:
        raise SystemExit(f"fastsim: error: --strategies: unknown strategy {', '.join(unknown) or '(none given)'}; "
                         f"choose from {', '.join(STRATEGIES)}")
    if args.probe_seeds < 1:
        raise SystemExit(f"fastsim: error: --probe-seeds must be >= 1; got {args.probe_seeds}")
    model, name = resolve_model(args.model, args.device, args.seed)
    try:
        L = len(find_layer_stack(model).layers)
    except LayerStackError as e:
        raise SystemExit(f"fastsim: error: {e}") from None
    levels = parse_levels(args.levels, L)
    print(f"model: {name}: {L} layers x {model.config.hidden_size} on {next(model.parameters()).device}")
    if args.task in ("keywords", "speakers"):
        print(f"task: {args.task}, speech synthesized with espeak-ng (cached in {synth.cache_dir()})")
    try:
        result = sweep(model, strategies, levels, args.task, model_name=name, batch_size=args.batch_size,
                       probe_seeds=args.probe_seeds, seed=args.seed, threshold=args.threshold,
                       progress=not args.no_progress)
    except synth.SynthesisError as e:
        raise SystemExit(f"fastsim: error: the built-in task cannot make speech: {e}") from None
    except (ModelError, ValueError) as e:
        raise SystemExit(f"fastsim: error: {e}") from None
    written = result.save(args.out)
    print(result.summary())
    print(f"\nwrote {', '.join(os.path.basename(w) for w in written)} to {args.out}")
    return 0
