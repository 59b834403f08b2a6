"""Inference time of a full speech encoder against its mimicked version, on the same batch.

CUDA: CUDA events around each pass after ``warmup`` passes (the paper's method: 100 warm-up
passes, batch 128), the median of ``repeats`` passes. CPU: wall clock (perf_counter), the same
protocol with fewer passes. Both under torch.inference_mode. The batch is seeded noise,
normalized per clip (the time of these models does not depend on what the audio says).

Two comparisons: the whole model (CNN front end + stack, what a user pays) and the stack alone
(the teacher's ``encoder`` on the stack input against the mimic on the same input).
"""

from __future__ import annotations

import torch

from ..speech.audio import SAMPLE_RATE
from ..speech.inference import eval_mode, time_call
from ..speech.whisper import is_whisper
from .replace import stack_input
from .reports import TimeReport
from .whisper_stack import compare as compare_whisper


def compare(teacher: torch.nn.Module, mimicked: torch.nn.Module, *, batch: int, clip_seconds: float,
            warmup: int, repeats: int, seed: int = 0) -> TimeReport:
    if is_whisper(teacher):  # 30 s windows from log-mel features (fastsim.mimic.whisper_stack)
        return compare_whisper(teacher, mimicked, batch=batch, clip_seconds=clip_seconds, warmup=warmup,
                               repeats=repeats, seed=seed)
    if batch < 1 or clip_seconds < 0.025 or repeats < 1 or warmup < 0:
        raise ValueError("timing: batch >= 1, clip seconds >= 0.025, repeats >= 1 and warmup >= 0 are needed; "
                         f"got {batch}, {clip_seconds}, {repeats}, {warmup}")
    p = next(teacher.parameters())
    dev = p.device
    n = int(round(clip_seconds * SAMPLE_RATE))
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, n, generator=g)
    x = ((x - x.mean(1, keepdim=True)) / x.std(1, keepdim=True)).to(dev, p.dtype)
    with eval_mode(teacher, mimicked):
        with torch.inference_mode():
            h, _, _ = stack_input(teacher, x)
        full = time_call(lambda: teacher(x), dev, warmup=warmup, repeats=repeats)
        mim = time_call(lambda: mimicked(x), dev, warmup=warmup, repeats=repeats)
        stack = time_call(lambda: teacher.encoder(h), dev, warmup=warmup, repeats=repeats)
        mimic = time_call(lambda: mimicked.mimic(h), dev, warmup=warmup, repeats=repeats)
    method = ("CUDA events" if dev.type == "cuda" else "wall clock") + f", median of {repeats} after {warmup} warm-up passes"
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    return TimeReport(name, method, batch, n / SAMPLE_RATE, full, mim, stack, mimic)
