"""GPU check for fastsim.prune: skip_layers adds no memory, and inference time against layers removed.

For each architecture (random weights: the cost does not depend on the values):

1. memory: ``torch.cuda.memory_allocated()`` before and inside ``skip_layers`` (must be equal),
   every parameter's storage pointer unchanged, and the peak memory of one forward pass, full
   and pruned;
2. agreement: the output inside ``skip_layers`` against ``remove_layers`` on a copy (max abs diff);
3. time: the forward pass over a batch of audio with 0, 2, 4, ... layers skipped (CUDA events,
   best of --repeat after a warm-up), as ms per second of audio and relative to the full model.

Rows print as they are measured; architectures and skip levels that no longer fit before the
step's deadline (FASTSIM_BENCH_DEADLINE) are skipped with a line saying so.

Run:  python bench/prune_gpu.py                      # on a CUDA machine (bench/device.sh runs it)
      python bench/prune_gpu.py --device cpu --small # code-path check on a CPU, tiny sizes
"""

from __future__ import annotations

import argparse
import copy
import sys

import benchlib
import torch
from benchlib import RowTimeout, Table, free, measure, outcome, section, skip_row, time_limit

from fastsim.prune import remove_layers, skip_layers


def storage_pointers(model: torch.nn.Module) -> dict[str, int]:
    return {name: p.untyped_storage().data_ptr() for name, p in model.named_parameters()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--small", action="store_true", help="tiny models and inputs (a code-path check)")
    ap.add_argument("--batch", type=int, default=8, help="clips per forward pass")
    ap.add_argument("--seconds", type=float, default=10.0, help="seconds of audio per clip")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--dtype", default="float16", choices=("float32", "float16", "bfloat16"))
    ap.add_argument("--row-limit", type=float, default=30.0, help="seconds one row may take")
    args = ap.parse_args()
    dev = torch.device(args.device)
    from fastsim.speech.models import random_model
    dtype = getattr(torch, args.dtype) if dev.type == "cuda" else torch.float32
    archs = [("wav2vec2", "tiny"), ("wavlm", "tiny")] if args.small else \
        [("wav2vec2", "base"), ("wavlm", "base"), ("hubert", "large"), ("data2vec-audio", "base")]
    seconds = 1.0 if args.small else args.seconds
    where = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    for family, size in archs:
        label = f"{family}-{size}"
        with section(label, dev, need=10) as ok:
            if not ok:
                continue
            model = random_model(family, size).to(dev, dtype)
            L = model.config.num_hidden_layers
            x = torch.randn(args.batch, int(16_000 * seconds), device=dev, dtype=dtype)
            audio_s = args.batch * seconds

            @torch.no_grad()
            def forward():
                return model(x).last_hidden_state

            # 1. memory and storage
            removed_half = list(range(0, L, 2))  # layer 0 among them: WavLM's position bias moves
            benchlib.sync(dev)
            before = torch.cuda.memory_allocated(dev) if dev.type == "cuda" else 0
            pointers = storage_pointers(model)
            with skip_layers(model, removed_half):
                inside = torch.cuda.memory_allocated(dev) if dev.type == "cuda" else 0
                same_storage = set(storage_pointers(model).values()) <= set(pointers.values())
            same_storage = same_storage and storage_pointers(model) == pointers

            def peak(layers):
                if dev.type != "cuda":
                    return float("nan")
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats(dev)
                base = torch.cuda.memory_allocated(dev)
                with skip_layers(model, layers):
                    forward()
                torch.cuda.synchronize()
                return (torch.cuda.max_memory_allocated(dev) - base) / 2**20

            with time_limit(args.row_limit):
                peak_full, peak_half = peak([]), peak(removed_half)
                # 2. agreement with a physically pruned copy
                with skip_layers(model, removed_half):
                    hooked = forward()
                pruned = remove_layers(copy.deepcopy(model), removed_half)
                with torch.no_grad():
                    diff = (pruned(x).last_hidden_state - hooked).abs().max().item()
                del pruned
            good = inside == before and same_storage
            benchlib.note(f"{label}: skip_layers({len(removed_half)} of {L}) allocated {inside - before} bytes, storage "
                          f"{'unchanged' if same_storage else 'CHANGED'}; forward peak {peak_full:.0f} MiB full, "
                          f"{peak_half:.0f} MiB pruned; |skip - remove_layers| max {diff:.2e}{'' if good else '; FAILED'}")
            benchlib.record({"model": label, "allocated": inside - before, "same_storage": same_storage,
                             "peak_full_mib": peak_full, "peak_pruned_mib": peak_half, "max_diff": diff})
            # 3. time against layers removed
            times = Table(f"skip_layers, {label}: forward time against layers removed ({where}; "
                          f"{str(dtype).replace('torch.', '')}; batch {args.batch} x {seconds:g} s of audio; best of {args.repeat})",
                          [("model", "model", ""), ("layers", "layers", ""), ("removed", "removed", ""),
                           ("ms", "ms / s audio", ""), ("rel", "vs full", ""), ("status", "note", "")])
            with time_limit(args.row_limit):
                full_t = measure(forward, dev, args.repeat)
            for n in sorted(set(list(range(0, L, 2)) + [L - 1])):
                reason = skip_row(3)
                if reason:
                    times.row(model=label, layers=L, removed=n, status=reason)
                    break
                try:
                    with time_limit(args.row_limit), skip_layers(model, list(range(L - n, L))):
                        t = measure(forward, dev, args.repeat)
                except (Exception, RowTimeout) as exc:
                    free(dev)
                    times.row(model=label, layers=L, removed=n, status=outcome(exc))
                    break
                times.row(model=label, layers=L, removed=n, ms=f"{1e3 * t / audio_s:.3f}", rel=f"{t / full_t:.3f}", seconds=t)
            model = x = None  # (not del: forward() closes over them)
    return benchlib.finish()


if __name__ == "__main__":
    sys.exit(main())
