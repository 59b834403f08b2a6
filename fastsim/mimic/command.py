"""``fastsim distill``: distill a speech encoder's transformer stack into a mimicking network.

Trains the mimic (fastsim.mimic.distill), saves it, and prints the three reductions: parameters
(whole model, CNN front end included), inference time (measured on the same batch, per second of
audio) and the probe accuracy of the mimicked model relative to the full one on the probe tasks,
beside the no-distillation baseline (the same small network trained on the labels). With no MODEL
and AUDIO it runs offline: a random-weight architecture on sentences synthesized with espeak-ng.
"""

from __future__ import annotations

import argparse
import json
import os
import time


DEFAULT_MODEL = "random:wav2vec2-base"


def _ints(text: str, name: str) -> tuple[int, ...]:
    try:
        out = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise SystemExit(f"fastsim: error: {name}: expected a comma list of integers; got {text!r}") from None
    if not out:
        raise SystemExit(f"fastsim: error: {name}: empty")
    return out


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "distill",
        help="distill a speech encoder's transformer stack into a small mimicking network",
        description="Train a mimicking network in place of a speech encoder's whole transformer stack (knowledge "
        "distillation from the frozen model), save it, and report the parameter, inference-time and probe-accuracy "
        "changes, with the no-distillation baseline. With no MODEL and AUDIO: a wav2vec2-base architecture with "
        "RANDOM weights on speech synthesized with espeak-ng (offline).",
    )
    p.add_argument("model", nargs="?", default=DEFAULT_MODEL,
                   help="local directory, hub name, or random:FAMILY-SIZE (default: %(default)s)")
    p.add_argument("audio", nargs="*", help="training audio files or directories (default: synthesized English sentences)")
    p.add_argument("--out", default="fastsim-distill", help="output directory (default: %(default)s)")
    p.add_argument("--widths", default="64", help="hidden width of each block, comma list; two entries = the 2-block mimicker (default: %(default)s)")
    p.add_argument("--targets", default=None,
                   help="teacher layer per block, comma list (last = the output); 'auto' (default with 2+ blocks): "
                   "the ends of the first similarity blocks (linear CKA on the training audio)")
    p.add_argument("--activation", default="relu", choices=("relu", "gelu", "silu", "tanh"))
    p.add_argument("--context", type=int, default=0, help="temporal context: odd kernel of a depthwise conv (0 = per frame)")
    p.add_argument("--residual", action="store_true", help="y = x + block(x)")
    p.add_argument("--loss", default="mse", choices=("mse", "cosine"))
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--steps", type=int, default=None, help="optimizer steps (default: 400)")
    p.add_argument("--batch-size", type=int, default=8, help="clips per step")
    p.add_argument("--crop-seconds", type=float, default=4.0, help="random window per clip and epoch (0 = whole clips)")
    p.add_argument("--cache-targets", default="auto", choices=("auto", "on", "off"),
                   help="run the teacher once and reuse its frames every epoch (auto: on for the CPU, off for CUDA)")
    p.add_argument("--checkpoint-every", type=int, default=100)
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint")
    p.add_argument("--tasks", default="keywords,speakers",
                   help="probe tasks: keywords, speakers, or directories of label subfolders; comma list ('' = none)")
    p.add_argument("--no-baseline", action="store_true", help="skip the no-distillation baseline")
    p.add_argument("--baseline-steps", type=int, default=300)
    p.add_argument("--time-batch", type=int, default=None, help="clips per timed pass (default: 128 on CUDA, 2 on the CPU)")
    p.add_argument("--time-seconds", type=float, default=None, help="clip length for timing (default: 1 s on CUDA, 2 s on the CPU)")
    p.add_argument("--warmup", type=int, default=None, help="warm-up passes before timing (default: 100 on CUDA, 1 on the CPU)")
    p.add_argument("--repeats", type=int, default=None, help="timed passes (default: 50 on CUDA, 3 on the CPU)")
    p.add_argument("--clips", type=int, default=24, help="synthesized sentences for the offline default")
    p.add_argument("--device", default=None, help="torch device (default: cuda when available)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: torch's choice; on a machine busy with other work, fewer "
                   "threads than cores can be several times faster)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--strict", action="store_true", help="stop at the first bad audio file instead of skipping it")
    p.add_argument("--no-progress", action="store_true")
    return p


def similarity_targets(model, audio, depth: int, *, progress: bool) -> tuple[tuple[int, ...], str]:
    """Teacher layers for a depth-block mimic: the last layers of the first depth-1 similarity
    blocks (linear CKA over frames, Otsu threshold), then the output; evenly spaced if the model
    has fewer blocks than that."""
    from ..analysis import analyze

    L = model.config.num_hidden_layers
    res = analyze(model, audio, metrics=["cka"], include_input=False, progress=progress)
    ends = [b + 1 for _, b in res.blocks["cka"]][: depth - 1]
    names = ", ".join(res.block_names("cka"))
    if len(ends) == depth - 1 and all(e < L for e in ends):
        return (*ends, L), f"similarity blocks (linear CKA): {names}"
    even = tuple(round(L * (b + 1) / depth) for b in range(depth))
    return even, f"similarity blocks (linear CKA): {names or 'none'}; too few for {depth} blocks, evenly spaced instead"


def run(args: argparse.Namespace) -> int:
    from ..cli import cpu_threads

    with cpu_threads(args.threads):
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    from .. import synth
    from ..cli import _expand_audio, resolve_model
    from ..models import ModelError
    from .distill import distill
    from .network import MimicConfig, parameter_report
    from .replace import replace_stack
    from .timing import compare

    t_start = time.perf_counter()
    widths = _ints(args.widths, "--widths")
    for name, v, lo in (("--steps", args.steps, 1), ("--batch-size", args.batch_size, 1), ("--checkpoint-every", args.checkpoint_every, 1),
                        ("--baseline-steps", args.baseline_steps, 1), ("--time-batch", args.time_batch, 1),
                        ("--repeats", args.repeats, 1), ("--warmup", args.warmup, 0), ("--clips", args.clips, 1)):
        if v is not None and v < lo:
            raise SystemExit(f"fastsim: error: {name} must be >= {lo}; got {v}")
    if args.context < 0 or (args.context and args.context % 2 == 0):
        raise SystemExit(f"fastsim: error: --context must be 0 or an odd kernel size; got {args.context}")
    if args.crop_seconds != 0 and not args.crop_seconds >= 0.025:
        raise SystemExit(f"fastsim: error: --crop-seconds must be 0 (whole clips) or at least 0.025 (one frame); got {args.crop_seconds}")
    if args.time_seconds is not None and not args.time_seconds >= 0.025:  # before training, not after
        raise SystemExit(f"fastsim: error: --time-seconds must be at least 0.025 (one frame); got {args.time_seconds}")
    if not args.lr > 0:
        raise SystemExit(f"fastsim: error: --lr must be > 0; got {args.lr}")
    if not args.weight_decay >= 0:
        raise SystemExit(f"fastsim: error: --weight-decay must be >= 0; got {args.weight_decay}")
    progress = not args.no_progress
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    bad = [t for t in tasks if t not in ("keywords", "speakers") and not os.path.isdir(t)]
    if bad:  # before minutes of training, not after
        raise SystemExit(f"fastsim: error: --tasks: {', '.join(map(repr, bad))}: neither keywords, speakers nor a directory")

    if args.audio:
        audio = _expand_audio(args.audio)
        audio_note = f"{len(audio)} files"
    else:
        try:
            audio = [c.path for c in synth.sentences(args.clips, seed=args.seed)]
        except synth.SynthesisError as e:
            raise SystemExit(f"fastsim: error: no AUDIO given and the offline default cannot make speech: {e}") from None
        audio_note = f"{len(audio)} English sentences synthesized with espeak-ng (cached in {synth.cache_dir()})"
    model, name = resolve_model(args.model, args.device, args.seed)
    dev = next(model.parameters()).device
    L, D = model.config.num_hidden_layers, model.config.hidden_size
    print(f"model: {name}: {L} layers x {D} on {dev}")
    print(f"training audio: {audio_note}")

    if args.targets is None or args.targets == "auto":
        if len(widths) == 1:
            targets, why = (L,), "the stack's output"
        else:
            targets, why = similarity_targets(model, audio, len(widths), progress=progress)
    else:
        targets = tuple(L if t in (-1, L) else t for t in _ints(args.targets, "--targets"))
        why = "given"
    try:
        config = MimicConfig(dim=D, widths=widths, activation=args.activation, context=args.context,
                             residual=args.residual, targets=targets)
        config.resolved_targets(L)
    except ValueError as e:
        raise SystemExit(f"fastsim: error: --widths/--targets/--context: {e}") from None
    print(f"mimic: {len(widths)} block(s) of width {', '.join(map(str, widths))}, {args.activation}"
          f"{', context ' + str(args.context) if args.context else ''}{', residual' if args.residual else ''}; "
          f"targets: layer(s) {', '.join(map(str, targets))} ({why})")

    cache = {"on": True, "off": False, "auto": dev.type != "cuda"}[args.cache_targets]
    steps = args.steps or 400
    os.makedirs(args.out, exist_ok=True)
    try:
        res = distill(model, audio, mimic=config, loss=args.loss, lr=args.lr, weight_decay=args.weight_decay, steps=steps,
                      batch_size=args.batch_size, crop_seconds=args.crop_seconds or None, cache_targets=cache,
                      checkpoint_dir=os.path.join(args.out, "checkpoint"), checkpoint_every=args.checkpoint_every,
                      resume=args.resume, seed=args.seed, strict=args.strict, progress=progress)
    except (ModelError, ValueError) as e:
        raise SystemExit(f"fastsim: error: {e}") from None
    for f in res.failures:
        print(f"skipped {f.source}: {f.reason}")
    mimic = res.mimic
    fvu = res.final(res.unexplained)
    print(f"distilled: {len(res.losses)} steps in {res.seconds:.1f} s ({'teacher frames cached' if cache else 'targets on the fly'}); "
          f"{args.loss} loss {res.losses[0] if res.losses else float('nan'):.4g} -> {res.final():.4g}"
          + (f" ({100 * fvu:.1f} % of the targets' variance unexplained)" if args.loss == "mse" else ""))

    stages = {"distill": time.perf_counter() - t_start}
    mimicked = replace_stack(model, mimic)
    params = parameter_report(model, mimicked)
    report: dict = {"model": name, "mimic": config.to_json(), "targets": list(res.targets), "loss": args.loss,
                    "steps": steps, "first_loss": res.losses[0] if res.losses else None, "final_loss": res.final(),
                    "unexplained_variance": fvu, "parameters": vars(params) | {"reduction": params.reduction}}
    saved = mimic.save(os.path.join(args.out, "mimic.safetensors"), {"targets": list(res.targets), "teacher": name})

    cuda = dev.type == "cuda"
    times = compare(model, mimicked, batch=args.time_batch or (128 if cuda else 2),
                    clip_seconds=args.time_seconds if args.time_seconds is not None else (1.0 if cuda else 2.0),
                    warmup=args.warmup if args.warmup is not None else (100 if cuda else 1),
                    repeats=args.repeats or (50 if cuda else 3), seed=args.seed)
    report["time"] = times.to_json()
    stages["timing"] = time.perf_counter() - t_start - sum(stages.values())

    probe_lines = []
    report["probes"] = {}
    if tasks:
        from ..prune.probes import load_labelled, pooled_features, probe_accuracy, task_clips
        from .baseline import label_baseline

        for task in tasks:
            try:
                loaded = load_labelled(task_clips(task, seed=args.seed))
            except (ValueError, synth.SynthesisError) as e:
                raise SystemExit(f"fastsim: error: --tasks: {e}") from None
            t = time.perf_counter()
            full = probe_accuracy(*pooled_features(model, loaded, progress=progress), seed=args.seed)
            stages[f"{task}: full model"] = time.perf_counter() - t
            t = time.perf_counter()
            mim = probe_accuracy(*pooled_features(mimicked, loaded, progress=progress), seed=args.seed)
            stages[f"{task}: mimicked"] = time.perf_counter() - t
            t = time.perf_counter()
            base = None if args.no_baseline else label_baseline(model, loaded, config, seed=args.seed,
                                                                steps=args.baseline_steps, progress=progress)
            stages[f"{task}: baseline"] = time.perf_counter() - t
            report["probes"][task] = {"clips": len(loaded.waves), "full": full, "mimicked": mim, "baseline": base}
            rel = mim / full if full > 0 else float("nan")
            probe_lines.append(f"  {task} ({len(loaded.waves)} clips): full {100 * full:.1f} %, mimicked {100 * mim:.1f} % "
                               f"({100 * rel:.0f} % of full)" + ("" if base is None else f"; no-distillation baseline {100 * base:.1f} %"))

    report["stage_seconds"] = stages
    with open(os.path.join(args.out, "report.json"), "w") as f:
        json.dump(report, f, indent=2, default=float)
    random_note = " (RANDOM weights: these numbers show the machinery, not a trained model's behaviour)" if "RANDOM" in name else ""
    print(f"\n== reductions{random_note}")
    print(params.summary())
    print(times.summary())
    if probe_lines:
        print("probe accuracy (linear probe on mean-pooled last hidden states):")
        print("\n".join(probe_lines))
    else:
        print("probe accuracy: no tasks (--tasks '')")
    print(f"\nwrote {saved}, its .json, {os.path.join(args.out, 'report.json')} and {os.path.join(args.out, 'checkpoint')}/ "
          f"in {time.perf_counter() - t_start:.0f} s ({', '.join(f'{k} {v:.0f} s' for k, v in stages.items())})")
    return 0
