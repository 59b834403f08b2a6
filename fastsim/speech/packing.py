"""How a probe task's clips become model inputs: one clip per input, or clips packed into Whisper windows.

A probe reads each clip's last hidden state averaged over the clip's own frames. Two layouts:

* ``"clip"`` — every clip is its own input (any family). Its segment is all of the input's frames.
* ``"packed"`` — Whisper only, and its default (``default_layout``): clips laid end to end, as
  continuous speech, in 30 s windows. A Whisper encoder always takes a 30 s window, so one 1 s
  keyword alone is one word in 29 s of silence — far from the 30 s windows full of speech Whisper
  was trained on — and costs a whole window. Packed, a window holds 30 one-second clips. Each clip
  starts on an encoder frame boundary (a multiple of 320 samples; the gap before it is zeros), so
  its segment is exactly its ⌈samples / 320⌉ frames, and its features are the mean over those
  frames. A clip longer than the room left starts the next window; a clip longer than a window is
  an input of its own (split into windows by the runner, its segment all its frames).

What packing changes: a clip's features depend a little on its neighbours (Whisper attends over
the whole window, the convolutions see ±1 frame across a boundary, and the log-mel is normalized
per window). ``pack`` takes the clips in the order given; a probe gives them in a seeded shuffle
(``fastsim.speech.probes.input_batches``), so neighbours are unrelated to the labels and the same
for every model the probe compares. Measured on Whisper base (bench/RESULTS.md): a keyword head
trained on packed features reads the words of other packings of the same clips as well (0.93-0.95
on 60 held-out clips); a speaker task suffers, as its label is what the neighbours (other
speakers) change — use "clip" there.

* ``pack(clips, layout)`` — (clip index, wave) pairs in, ``ProbeInput``s out, lazily (clips are
  read as the windows fill: a task need not be held in memory).
* ``segment_means(last_hidden_state, mask, inputs)`` — each segment's mean (clip index, row).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .whisper import FRAME_SAMPLES, WINDOW_FRAMES, WINDOW_SAMPLES, is_whisper

LAYOUTS = ("clip", "packed")


@dataclass(frozen=True)
class Segment:
    """A clip's frames in an input: ``frames`` frames from frame ``start``; ``frames`` None: all of
    the input's valid frames (a clip that is its own input)."""

    clip: int
    start: int = 0
    frames: int | None = None


@dataclass
class ProbeInput:
    """One model input (a 16 kHz wave) and the clips it holds."""

    wave: np.ndarray
    segments: list[Segment]


def default_layout(model: torch.nn.Module) -> str:
    """"packed" for Whisper, "clip" for every other family."""
    return "packed" if is_whisper(model) else "clip"


def resolve_layout(model: torch.nn.Module, layout: str | None) -> str:
    """The layout to use: None or "auto" -> ``default_layout``; "packed" needs a Whisper model."""
    if layout in (None, "auto"):
        return default_layout(model)
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {', '.join(LAYOUTS)} or 'auto'; got {layout!r}")
    if layout == "packed" and not is_whisper(model):
        raise ValueError(f"layout 'packed' lays clips out in Whisper's 30 s windows; {type(model).__name__} is not "
                         f"a Whisper model (use 'clip')")
    return layout


def _frames(samples: int) -> int:
    return -(-int(samples) // FRAME_SAMPLES)


def pack(clips: Iterable[tuple[int, np.ndarray]], layout: str) -> Iterator[ProbeInput]:
    """The inputs for (clip index, 16 kHz wave) pairs, in order (see the module docs)."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}; got {layout!r}")
    if layout == "clip":
        for i, wave in clips:
            yield ProbeInput(np.asarray(wave, dtype=np.float32), [Segment(int(i))])
        return
    parts: list[np.ndarray] = []
    segments: list[Segment] = []
    used = 0  # frames taken in the open window

    def close() -> ProbeInput:  # (every part is padded to whole frames: the window's frames are the segments')
        return ProbeInput(np.concatenate(parts), list(segments))

    for i, wave in clips:
        wave = np.asarray(wave, dtype=np.float32)
        n = _frames(wave.size)
        if wave.size > WINDOW_SAMPLES:
            yield ProbeInput(wave, [Segment(int(i))])
            continue
        if used + n > WINDOW_FRAMES:
            yield close()
            parts, segments, used = [], [], 0
        parts.append(wave)
        pad = n * FRAME_SAMPLES - wave.size
        segments.append(Segment(int(i), used, n))
        used += n
        if pad:
            parts.append(np.zeros(pad, dtype=np.float32))
    if segments:
        yield close()


def segment_means(last_hidden_state: torch.Tensor, mask: torch.Tensor,
                  inputs: Sequence[ProbeInput]) -> list[tuple[int, np.ndarray]]:
    """(clip index, float32 mean over the clip's frames) for every segment of a batch of inputs;
    row b of ``last_hidden_state`` (B, T, D) and ``mask`` (B, T) belong to ``inputs[b]``."""
    h = last_hidden_state.float()
    out = []
    for b, inp in enumerate(inputs):
        valid = int(mask[b].sum())
        for s in inp.segments:
            lo, hi = (0, valid) if s.frames is None else (s.start, s.start + s.frames)
            if hi > valid or lo >= hi:
                raise ValueError(f"segment of clip {s.clip} (frames {lo}..{hi}) lies outside the input's {valid} frames")
            out.append((s.clip, h[b, lo:hi].mean(0).cpu().numpy().astype(np.float32)))
    return out


__all__ = ["LAYOUTS", "Segment", "ProbeInput", "default_layout", "resolve_layout", "pack", "segment_means"]
