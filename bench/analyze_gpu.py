"""Speech-model analysis throughput: fastsim.analysis.analyze against the model's forward alone.

The analysis cost on top of running the model is what fastsim adds; the forward pass is the
floor. Prints seconds of audio per second for: forward only (output_hidden_states, nothing
kept), and analyze with cosine + linear CKA (exact, all frames) and mutual_knn (10 000-frame sample).
Audio is synthetic (harmonic tones with noise; no espeak-ng on the GPU machine), all clips of
one length so that base (group-norm) models batch them too.

    python bench/analyze_gpu.py                 # on CUDA: base and large, 64 clips x 10 s
    python bench/analyze_gpu.py --device cpu --small
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from fastsim import models
from fastsim.analysis import analyze
from fastsim.audio import SAMPLE_RATE


def clips(n: int, seconds: float, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    out = []
    for _ in range(n):
        f0 = rng.uniform(90, 250)
        wave = sum(np.sin(2 * np.pi * f0 * h * t * (1 + 0.05 * np.sin(2 * np.pi * 3 * t))) / h for h in range(1, 8))
        out.append((wave * (0.5 + 0.5 * np.sin(2 * np.pi * 2 * t + rng.uniform(0, 6))) + 0.05 * rng.normal(size=t.size)).astype(np.float32))
    return out


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--small", action="store_true", help="tiny models and 4 short clips (a CPU check of the script)")
    args = p.parse_args()
    device = torch.device(args.device)
    sizes = ["tiny"] if args.small else ["base", "large"]
    n, seconds, batch = (4, 2.0, 2) if args.small else (64, 10.0, 16)
    audio = clips(n, seconds)
    total = n * seconds
    print(f"analysis throughput, {n} clips x {seconds:.0f} s, batch {batch}, on {device}"
          f" ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'})")
    print("| model | forward only (s audio / s) | analyze cosine+cka+mutual_knn (s audio / s) | overhead |")
    print("|---|---|---|---|")
    for size in sizes:
        model = models.random_model("wav2vec2", size).to(device)
        loaded, _ = models.load_clips(audio, sample_rate=SAMPLE_RATE)
        for _ in models.hidden_state_batches(model, loaded[:batch], batch_size=batch):  # warm-up
            pass
        sync(device)
        start = time.perf_counter()
        for _ in models.hidden_state_batches(model, loaded, batch_size=batch):
            pass
        sync(device)
        forward = time.perf_counter() - start
        analyze(model, audio[:batch], sample_rate=SAMPLE_RATE, batch_size=batch)  # warm-up
        sync(device)
        start = time.perf_counter()
        analyze(model, audio, sample_rate=SAMPLE_RATE, batch_size=batch, metrics=("cosine", "cka", "mutual_knn"))
        sync(device)
        full = time.perf_counter() - start
        print(f"| wav2vec2-{size} (random) | {total / forward:.0f} | {total / full:.0f} | {full / forward - 1:+.0%} |")


if __name__ == "__main__":
    main()
