"""Command line: ``fastsim analyze``, ``fastsim demo`` and ``fastsim info``."""

from __future__ import annotations

import argparse
import contextlib
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


DEFAULT_MODEL = "random:wav2vec2-base"


def _expand_audio(paths: list[str]) -> list[str]:
    """Files as given (bad ones are reported later); directories: their audio files, recursively, sorted."""
    import os

    from .audio import AUDIO_SUFFIXES

    out: list[str] = []
    for p in paths:
        if os.path.isdir(p):
            found = sorted(
                os.path.join(root, f) for root, _, files in os.walk(p) for f in files if f.lower().endswith(AUDIO_SUFFIXES)
            )
            if not found:
                raise SystemExit(f"fastsim: error: audio directory {p!r} holds no audio files ({', '.join(AUDIO_SUFFIXES)})")
            out += found
        else:
            out.append(p)
    return out


@contextlib.contextmanager
def cpu_threads(threads: int | None):
    """torch's CPU thread count set to ``threads`` (None: leave torch's choice) for the length of a
    command, then restored."""
    if threads is not None and threads < 1:
        raise SystemExit(f"fastsim: error: --threads must be >= 1; got {threads}")
    before = torch.get_num_threads()
    try:
        if threads is not None:
            torch.set_num_threads(threads)
        yield
    finally:
        torch.set_num_threads(before)


def resolve_model(spec: str, device: str | None, seed: int = 0):
    """(model, display name) for a model argument: a local directory, a hub name, or
    random:FAMILY-SIZE (an architecture with random weights, e.g. random:wav2vec2-base)."""
    from . import models

    if spec.startswith("random:"):
        family, _, size = spec[len("random:") :].rpartition("-")
        if family not in models.FAMILIES or size not in models.SIZES:
            raise SystemExit(
                f"fastsim: error: model {spec!r}: random models are random:FAMILY-SIZE with FAMILY in "
                f"{', '.join(models.FAMILIES)} and SIZE in {', '.join(models.SIZES)}"
            )
        model = models.random_model(family, size, seed=seed)
        cfg = model.config
        name = f"{family}-{size} architecture ({cfg.num_hidden_layers} x {cfg.hidden_size}), RANDOM weights (seed {seed})"
    else:
        try:
            model = models.load_model(spec, device=device)
        except models.ModelError as e:
            raise SystemExit(f"fastsim: error: {e}") from None
        return model, spec
    dev = device or ("cuda" if torch.cuda.is_available() else "cpu")
    return model.to(dev), name


def _analyze(args: argparse.Namespace) -> int:
    import os

    from . import synth
    from .analysis import analyze
    from .layer_similarity import METRICS
    from .models import ModelError

    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()]
    unknown = [m for m in metrics if m not in METRICS]
    if unknown or not metrics:
        raise SystemExit(f"fastsim: error: --metrics: unknown metric(s) {', '.join(unknown) or '(none given)'}; "
                         f"choose from {', '.join(METRICS)}")
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if distributed:
        import torch.distributed as dist

        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend)
    rank = int(os.environ.get("RANK", "0"))
    try:
        if args.audio:
            audio = _expand_audio(args.audio)
        else:
            try:
                clips = synth.sentences(args.clips, seed=args.seed)
            except synth.SynthesisError as e:
                raise SystemExit(f"fastsim: error: no AUDIO given and the offline default cannot make speech: {e}") from None
            audio = [c.path for c in clips]
            if rank == 0:
                print(f"audio: {len(audio)} English sentences synthesized with espeak-ng (cached in {synth.cache_dir()})")
        model, name = resolve_model(args.model, args.device, args.seed)
        if rank == 0:
            print(f"running {model.config.num_hidden_layers} layers x {model.config.hidden_size} "
                  f"on {next(model.parameters()).device}")
        try:
            result = analyze(
                model, audio, metrics=metrics, model_name=name, batch_size=args.batch_size, strict=args.strict,
                progress=not args.no_progress, distributed=distributed, block_threshold=args.threshold,
                k=args.k, debiased=args.debiased, representation=args.representation, frames=args.frames,
                include_input=not args.no_input, protocol=args.protocol, max_samples=args.max_samples,
                per_batch_size=args.per_batch_size, seed=args.seed, precision=args.precision,
            )
        except (ModelError, ValueError) as e:
            raise SystemExit(f"fastsim: error: {e}") from None
        if rank == 0:
            written = result.save(args.out)
            print(result.summary())
            print(f"\nwrote {len(written)} files to {args.out}: {', '.join(os.path.basename(w) for w in written)}")
    finally:
        if distributed:
            import torch.distributed as dist

            dist.destroy_process_group()
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
    from .prune import command as prune_command

    prune_command.add_parser(sub)
    an = sub.add_parser(
        "analyze",
        help="layer-by-layer similarity of a speech encoder: matrices, heatmaps, blocks",
        description="Run a speech encoder over audio and write its layer-similarity matrices (npz, csv, json), "
        "one heatmap per metric and the detected blocks. With no MODEL and AUDIO: a wav2vec2-base architecture "
        "with RANDOM weights on speech synthesized with espeak-ng (offline). Under torchrun the clips are "
        "shared across ranks and the results all-reduced.",
    )
    an.add_argument("model", nargs="?", default=DEFAULT_MODEL,
                    help="local directory, hub name, or random:FAMILY-SIZE (default: %(default)s)")
    an.add_argument("audio", nargs="*", help="audio files or directories (default: synthesized English sentences)")
    an.add_argument("--metrics", default="cosine,cka,mutual_knn", help="comma list of cosine, cka, rbf_cka, mutual_knn, cknna (default: %(default)s)")
    an.add_argument("--out", default="fastsim-analysis", help="output directory (default: %(default)s)")
    an.add_argument("--representation", default="frames", choices=("frames", "mean", "flatten"))
    an.add_argument("--protocol", default="exact", choices=("exact", "per_batch"),
                    help="exact: stream over all samples; per_batch: the seed paper's average over batches")
    an.add_argument("--per-batch-size", type=int, default=128, help="samples per batch for --protocol per_batch")
    an.add_argument("--frames", type=int, default=49, help="frames per utterance for --representation flatten (49 = 1 s)")
    an.add_argument("--k", type=int, default=10, help="neighbours for mutual_knn")
    an.add_argument("--debiased", action="store_true", help="debiased HSIC for CKA")
    an.add_argument("--no-input", action="store_true", help="leave out the stack input (embedding) row")
    an.add_argument("--max-samples", type=int, default=10_000, help="reservoir size for mutual_knn and rbf_cka")
    an.add_argument("--batch-size", type=int, default=8, help="clips per forward pass")
    an.add_argument("--precision", default="highest", choices=("highest", "high", "medium"))
    an.add_argument("--threshold", type=float, default=None, help="block threshold (default: Otsu)")
    an.add_argument("--clips", type=int, default=24, help="synthesized sentences for the offline default")
    an.add_argument("--device", default=None, help="torch device (default: cuda when available)")
    an.add_argument("--seed", type=int, default=0)
    an.add_argument("--strict", action="store_true", help="stop at the first bad audio file instead of skipping it")
    an.add_argument("--no-progress", action="store_true", help="no progress bar")
    from .mimic import command as distill_command

    distill_command.add_parser(sub)
    args = parser.parse_args(argv)
    if args.command == "distill":
        return distill_command.run(args)
    if args.command == "prune":
        return prune_command.run(args)
    if args.command == "info":
        return _info()
    if args.command == "analyze":
        return _analyze(args)
    from . import demo as demo_module

    demo_module.run(n=args.n, d=args.dim, k=args.k, seed=args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
