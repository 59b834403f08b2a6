"""``fastsim distill``: distill a speech encoder's transformer stack into a mimicking network.

Runs ``fastsim.mimic.run_pipeline`` (distill, replace, timing, probes, baseline), saves the mimic and
``report.json``, and prints the three reductions. With no MODEL and AUDIO it runs offline: a
random-weight architecture on sentences synthesized with espeak-ng.
"""

from __future__ import annotations

import argparse
import os
import time

from ..mimic import MimicConfig, run_pipeline
from ..mimic.checkpoint import Checkpoint, CheckpointError
from ..mimic.distill import DEFAULT_STEPS
from ..mimic.network import ACTIVATIONS
from ..mimic.pipeline import TaskError, choose_targets
from ..speech.tasks import TASKS
from .common import (
    add_audio_argument,
    add_model_argument,
    add_run_arguments,
    check_run_arguments,
    comma_list,
    cpu_threads,
    expand_audio,
    fail,
    finite_float,
    int_list,
    offline_note,
    offline_sentences,
    resolve_model,
)

DEFAULT_MODEL = "random:wav2vec2-base"


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "distill",
        help="distill a speech encoder's transformer stack into a small mimicking network",
        description="Train a mimicking network in place of a speech encoder's whole transformer stack (knowledge "
        "distillation from the frozen model), save it, and report the parameter, inference-time and probe-accuracy "
        "changes, with the no-distillation baseline. With no MODEL and AUDIO: a wav2vec2-base architecture with "
        "RANDOM weights on speech synthesized with espeak-ng (offline).",
    )
    add_model_argument(p, DEFAULT_MODEL)
    add_audio_argument(p, "training audio")
    p.add_argument("--widths", default="64",
                   help="hidden width of each block, comma list; two entries = the 2-block mimicker (default: %(default)s)")
    p.add_argument("--targets", default=None,
                   help="teacher layer per block, comma list (last = the output); 'auto' (default with 2+ blocks): "
                   "the ends of the first similarity blocks (linear CKA on the training audio)")
    p.add_argument("--activation", default="relu", choices=ACTIVATIONS)
    p.add_argument("--context", type=int, default=0, help="temporal context: odd kernel of a depthwise conv (0 = per frame)")
    p.add_argument("--residual", action="store_true", help="y = x + block(x)")
    p.add_argument("--loss", default="mse", choices=("mse", "cosine"))
    p.add_argument("--lr", type=finite_float, default=1e-3)
    p.add_argument("--weight-decay", type=finite_float, default=0.0)
    p.add_argument("--steps", type=int, default=None, help=f"optimizer steps (default: {DEFAULT_STEPS})")
    p.add_argument("--crop-seconds", type=finite_float, default=4.0, help="random window per clip and epoch (0 = whole clips)")
    p.add_argument("--cache-targets", default="auto", choices=("auto", "on", "off"),
                   help="run the teacher once and reuse its frames every epoch (auto: on for the CPU, off for CUDA)")
    p.add_argument("--checkpoint-every", type=int, default=100)
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint")
    p.add_argument("--overwrite", action="store_true",
                   help="start afresh although OUT/checkpoint holds a checkpoint (it is replaced at the first save); "
                   "without --resume or --overwrite, such a checkpoint is never touched")
    p.add_argument("--tasks", default="keywords,speakers",
                   help="probe tasks: keywords, speakers, or directories of label subfolders; comma list ('' = none)")
    p.add_argument("--no-baseline", action="store_true", help="skip the no-distillation baseline")
    p.add_argument("--baseline-steps", type=int, default=300)
    p.add_argument("--time-batch", type=int, default=None,
                   help="clips per timed pass (default: 128 on CUDA, 2 on the CPU)")
    p.add_argument("--time-seconds", type=finite_float, default=None,
                   help="clip length for timing (default: 1 s on CUDA, 2 s on the CPU)")
    p.add_argument("--warmup", type=int, default=None,
                   help="warm-up passes before timing (default: 100 on CUDA, 1 on the CPU)")
    p.add_argument("--repeats", type=int, default=None, help="timed passes (default: 50 on CUDA, 3 on the CPU)")
    add_run_arguments(p, out="fastsim-distill", batch_help="clips per step", threads=True, strict=True, clips=True)
    return p


def _check(args: argparse.Namespace) -> None:
    """The numbers checked up front, by flag (not after minutes of training)."""
    for flag, v, lo in (("--steps", args.steps, 1), ("--batch-size", args.batch_size, 1),
                        ("--checkpoint-every", args.checkpoint_every, 1), ("--baseline-steps", args.baseline_steps, 1),
                        ("--time-batch", args.time_batch, 1), ("--repeats", args.repeats, 1),
                        ("--warmup", args.warmup, 0)):
        if v is not None and v < lo:
            raise fail(f"{flag} must be >= {lo}; got {v}")
    if args.context < 0 or (args.context and args.context % 2 == 0):
        raise fail(f"--context must be 0 or an odd kernel size; got {args.context}")
    if args.crop_seconds != 0 and not args.crop_seconds >= 0.025:
        raise fail(f"--crop-seconds must be 0 (whole clips) or at least 0.025 (one frame); got {args.crop_seconds}")
    if args.time_seconds is not None and not args.time_seconds >= 0.025:
        raise fail(f"--time-seconds must be at least 0.025 (one frame); got {args.time_seconds}")
    if not args.lr > 0:
        raise fail(f"--lr must be > 0; got {args.lr}")
    if not args.weight_decay >= 0:
        raise fail(f"--weight-decay must be >= 0; got {args.weight_decay}")


def _check_checkpoint(args: argparse.Namespace, folder: str) -> None:
    """A checkpoint in OUT is continued (--resume) or replaced (--overwrite), never lost silently;
    one to resume must be readable."""
    if args.resume and args.overwrite:
        raise fail("--resume and --overwrite exclude each other: continue the checkpoint, or replace it")
    if args.overwrite:
        return
    try:
        step = Checkpoint(folder, {}).committed_step()
    except CheckpointError as e:
        raise fail(f"{'--resume: ' if args.resume else ''}{e}"
                   f"{'' if args.resume else ' (--overwrite starts afresh and replaces it)'}") from None
    if step is not None and not args.resume:
        raise fail(f"--out {args.out!r} holds a distillation checkpoint at step {step} ({folder}); pass --resume to "
                   f"continue it or --overwrite to start afresh and replace it")


def run(args: argparse.Namespace) -> int:
    check_run_arguments(args)
    with cpu_threads(args.threads):
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    t_start = time.perf_counter()
    widths = int_list(args.widths, "--widths")
    _check(args)
    checkpoint = os.path.join(args.out, "checkpoint")
    _check_checkpoint(args, checkpoint)
    progress = not args.no_progress
    tasks = comma_list(args.tasks)
    bad = [t for t in tasks if t not in TASKS and not os.path.isdir(t)]
    if bad:
        raise fail(f"--tasks: {', '.join(map(repr, bad))}: neither keywords, speakers nor a directory")

    if args.audio:
        audio = expand_audio(args.audio)
        audio_note = f"{len(audio)} files"
    else:
        audio = offline_sentences(args.clips, args.seed)
        audio_note = offline_note(len(audio))
    model, name = resolve_model(args.model, args.device, args.seed)
    L, D = model.config.num_hidden_layers, model.config.hidden_size
    print(f"model: {name}: {L} layers x {D} on {next(model.parameters()).device}")
    print(f"training audio: {audio_note}")

    given = None if args.targets in (None, "auto") else int_list(args.targets, "--targets")
    targets, why = choose_targets(model, audio, len(widths), given, progress=progress)
    try:
        config = MimicConfig(dim=D, widths=widths, activation=args.activation, context=args.context,
                             residual=args.residual, targets=targets)
        config.resolved_targets(L)
    except ValueError as e:
        raise fail(f"--widths/--targets/--context: {e}") from None
    print(f"mimic: {len(widths)} block(s) of width {', '.join(map(str, widths))}, {args.activation}"
          f"{', context ' + str(args.context) if args.context else ''}{', residual' if args.residual else ''}; "
          f"targets: layer(s) {', '.join(map(str, targets))} ({why})")

    try:
        report = run_pipeline(
            model, audio, config, model_name=name, loss=args.loss, lr=args.lr, weight_decay=args.weight_decay,
            steps=args.steps or DEFAULT_STEPS, batch_size=args.batch_size, crop_seconds=args.crop_seconds or None,
            cache_targets={"on": True, "off": False, "auto": None}[args.cache_targets], checkpoint_dir=checkpoint,
            checkpoint_every=args.checkpoint_every, resume=args.resume, overwrite=args.overwrite, tasks=tasks,
            baseline_steps=None if args.no_baseline else args.baseline_steps, time_batch=args.time_batch,
            time_seconds=args.time_seconds, warmup=args.warmup, repeats=args.repeats, seed=args.seed,
            strict=args.strict, progress=progress, log=print, started=t_start,
        )
    except TaskError as e:
        raise fail(f"--tasks: {e}") from None
    except CheckpointError as e:
        raise fail(f"--resume: {e}" if args.resume else str(e)) from None
    except FloatingPointError as e:  # the loss diverged
        raise fail(f"--lr: {e}") from None
    except ValueError as e:  # (ModelError and AudioError are ValueErrors)
        raise fail(str(e)) from None
    try:
        saved, report_path = report.save(args.out)
    except OSError as e:
        raise fail(f"--out: cannot write the mimic and report into {args.out!r}: {e} (the checkpoint in "
                   f"{checkpoint} holds the trained mimic)") from None
    print("\n" + report.summary())
    stages = report.stage_seconds
    print(f"\nwrote {saved}, its .json, {report_path} and {checkpoint}/ "
          f"in {time.perf_counter() - t_start:.0f} s ({', '.join(f'{k} {v:.0f} s' for k, v in stages.items())})")
    return 0
