"""Speech-model analysis throughput: fastsim.analyze against the model's forward alone.

The analysis cost on top of running the model is what fastsim adds; the forward pass is the
floor. Rows, in seconds of audio per second: forward only (all hidden states, nothing kept), then
analyze with cosine + linear CKA (exact, all frames) + mutual_knn (10 000-frame sample), then, while
time is left, each metric alone (which one costs what). Audio is synthetic (harmonic tones with
noise; no espeak-ng on the GPU machine), all clips of one length so that base (group-norm)
models batch them too. Every row is time-boxed and checks the step's deadline
(FASTSIM_BENCH_DEADLINE, see bench/benchlib.py).

    python bench/analyze_gpu.py                 # on CUDA: base and large, 64 clips x 10 s
    python bench/analyze_gpu.py --device cpu --small
"""

from __future__ import annotations

import argparse
import sys
import time

import benchlib
import numpy as np
import torch
from benchlib import RowTimeout, Table, free, outcome, section, skip_row, sync, time_limit


def clips(n: int, seconds: float, sample_rate: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    out = []
    for _ in range(n):
        f0 = rng.uniform(90, 250)
        wave = sum(np.sin(2 * np.pi * f0 * h * t * (1 + 0.05 * np.sin(2 * np.pi * 3 * t))) / h for h in range(1, 8))
        out.append((wave * (0.5 + 0.5 * np.sin(2 * np.pi * 2 * t + rng.uniform(0, 6))) + 0.05 * rng.normal(size=t.size)).astype(np.float32))
    return out


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--small", action="store_true", help="tiny models and 4 short clips (a CPU check of the script)")
    p.add_argument("--row-limit", type=float, default=40.0, help="seconds one row may take")
    args = p.parse_args()
    device = torch.device(args.device)
    import fastsim
    from fastsim.speech.audio import SAMPLE_RATE

    # internal names (they move while fastsim is restructured; first that exists wins)
    from fastsim.speech.models import random_model
    from fastsim.speech.runner import hidden_state_batches, load_clips
    sizes = ["tiny"] if args.small else ["base", "large"]
    n, seconds, batch = (4, 2.0, 2) if args.small else (64, 10.0, 16)
    audio = clips(n, seconds, SAMPLE_RATE)
    total = n * seconds
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    table = Table(f"analysis throughput: {n} clips x {seconds:g} s, batch {batch}, {name} (seconds of audio per second; "
                  f"overhead: analysis time over forward time - 1)",
                  [("model", "model", ""), ("what", "what", ""), ("seconds", "seconds", "s"), ("rate", "s audio / s", ""),
                   ("overhead", "overhead", ""), ("status", "note", "")])
    built: dict[str, tuple[torch.nn.Module, float]] = {}

    def timed(fn) -> float:
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        return time.perf_counter() - start

    def row(size: str, what: str, fn, need: float) -> float | None:
        label = f"wav2vec2-{size} (random)"
        reason = skip_row(need)
        if reason:
            table.row(model=label, what=what, status=reason)
            return None
        try:
            with time_limit(args.row_limit):
                t = timed(fn)
        except (Exception, RowTimeout) as exc:
            free(device)
            table.row(model=label, what=what, status=outcome(exc))
            return None
        fwd = built[size][1] if size in built else None
        table.row(model=label, what=what, seconds=t, rate=f"{total / t:.0f}",
                  overhead=f"{t / fwd - 1:+.0%}" if fwd and what != "forward only" else None)
        return t

    def analysis(model, metrics):
        return lambda: fastsim.analyze(model, audio, sample_rate=SAMPLE_RATE, batch_size=batch, metrics=metrics)

    for size in sizes:
        with section(f"wav2vec2-{size}", device, need=10) as ok:
            if not ok:
                continue
            model = random_model("wav2vec2", size).to(device)
            loaded, _ = load_clips(audio, sample_rate=SAMPLE_RATE)

            def forward():
                for _ in hidden_state_batches(model, loaded, batch_size=batch):
                    pass

            for _ in hidden_state_batches(model, loaded[:batch], batch_size=batch):  # warm-up
                pass
            t = row(size, "forward only", forward, need=5)
            if t is None:
                continue
            built[size] = (model, t)
            with time_limit(args.row_limit):
                try:  # warm-up (compiles, allocates) on one batch
                    fastsim.analyze(model, audio[:batch], sample_rate=SAMPLE_RATE, batch_size=batch)
                except (Exception, RowTimeout) as exc:
                    table.row(model=f"wav2vec2-{size} (random)", what="analyze warm-up", status=outcome(exc))
            row(size, "analyze cosine+cka+mutual_knn", analysis(model, ("cosine", "cka", "mutual_knn")), need=10)
    for size in reversed(sizes):  # which metric costs what, largest model first, while time is left
        if size not in built:
            continue
        with section(f"wav2vec2-{size} per metric", device, need=10) as ok:
            if ok:
                for metric in ("cka", "mutual_knn", "cosine"):
                    row(size, f"analyze {metric} only", analysis(built[size][0], (metric,)), need=8)
    return benchlib.finish()


if __name__ == "__main__":
    sys.exit(main())
