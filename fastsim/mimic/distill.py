"""distill: train a MimickingNetwork to stand in for a speech encoder's transformer stack.

Knowledge distillation: the frozen model is the teacher. For each batch of clips it runs once;
its stack input (what ``model.encoder`` receives: the feature-projection output) is the student's
input, and its hidden states at the target layers (``last_hidden_state`` for the last block) are
the student's targets. The loss is per frame, padding masked: mean squared error (the paper's) or
cosine distance, averaged over the blocks. AdamW, lr 1e-3 by default (weight decay 0 = Adam).

Data. Clips (paths, arrays or fastsim.synth Clips) are loaded and resampled to 16 kHz. Each
epoch shuffles them; clips longer than ``crop_seconds`` are cut to a random window of that length
(new windows every epoch), each normalized as the feature extractors do. The teacher runs each
batch under the padding policy of ``fastsim.models`` (padding-unsafe models get equal-length
sub-batches). With ``cache_targets=True`` the teacher runs once over one window per clip and the
frames are kept in memory (on the model's device) for every epoch: far cheaper when the teacher
is big and the corpus small, at the cost of the window augmentation.

Everything is a function of (seed, step): batch order, windows and initialization, so a run
resumed from a checkpoint continues exactly as the uninterrupted run would have.

Checkpoints (every ``checkpoint_every`` steps and at the end, atomically, the latest only) go to
``checkpoint_dir``: ``mimic.safetensors`` + ``mimic.json`` (weights, config), ``optimizer.safetensors``
(AdamW moments) and ``state.json`` (step, settings, loss history). Atomic as a set: the weights and
moments are written to ``checkpoint_dir/next/`` first, each stamped with its step; writing
``state.json`` commits them, and they are then moved into place (a resume finishes that move if it
was interrupted), so an interruption at any point leaves a checkpoint whose files belong together. ``resume=True`` continues from
them (and starts afresh where there are none yet); settings that change the run (lr, seed, batch,
crop, loss, clips, mimic config, caching) must match; ``steps`` may grow.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch

from .. import models
from ..audio import SAMPLE_RATE
from .network import MimicConfig, MimickingNetwork, _write_json

LOSSES = ("mse", "cosine")


@dataclass
class DistillResult:
    """What distill did: the trained mimic, the teacher layer of each block, the loss (and, for
    mse, the fraction of the targets' variance left unexplained) at every step of this run."""

    mimic: MimickingNetwork
    targets: tuple[int, ...]
    losses: list[float] = field(default_factory=list)
    unexplained: list[float] = field(default_factory=list)
    steps: int = 0
    start_step: int = 0
    failures: list[models.Failure] = field(default_factory=list)
    seconds: float = 0.0
    audio_seconds: float = 0.0

    def final(self, values: list[float] | None = None, frac: float = 0.1) -> float:
        """Mean of the last 10 % of the steps' values (the losses by default)."""
        v = self.losses if values is None else values
        if not v:
            return float("nan")
        k = max(1, int(len(v) * frac))
        tail = np.asarray(v[-k:], dtype=float)
        tail = tail[np.isfinite(tail)]  # (steps without an unexplained fraction are nan)
        return float(tail.mean()) if tail.size else float("nan")


class Teacher:
    """The frozen model's stack input and target hidden states for a list of waves, clip by clip."""

    def __init__(self, model: torch.nn.Module, layers: Sequence[int]):
        self.model, self.layers = model, tuple(layers)
        self.num_layers = model.config.num_hidden_layers
        self.need_hidden = any(l != self.num_layers for l in self.layers)
        self.device = next(model.parameters()).device
        self.dtype = next(model.parameters()).dtype

    @torch.no_grad()
    def __call__(self, waves: list[np.ndarray]) -> list[tuple[torch.Tensor, tuple[torch.Tensor, ...]]]:
        model = self.model
        results: list[Any] = [None] * len(waves)
        plan = models.plan_batches([w.size for w in waves], len(waves), equal_length=not models.padding_safe(model))
        was_training = model.training
        model.eval()
        try:
            for group in plan:
                ws = [waves[i] for i in group]
                longest = max(w.size for w in ws)
                x = torch.zeros(len(ws), longest)
                sample_mask = torch.zeros(len(ws), longest, dtype=torch.long)
                for b, w in enumerate(ws):
                    x[b, : w.size] = torch.from_numpy(w)
                    sample_mask[b, : w.size] = 1
                padded = any(w.size != longest for w in ws)
                captured: dict[str, torch.Tensor] = {}

                def grab(_module, args, kwargs):
                    h = args[0] if args else kwargs["hidden_states"]
                    captured["x"] = h.clone()  # before the encoder zeroes padding frames in place

                hook = model.encoder.register_forward_pre_hook(grab, with_kwargs=True)
                try:
                    out = model(x.to(self.device, self.dtype), attention_mask=sample_mask.to(self.device) if padded else None,
                                output_hidden_states=self.need_hidden, return_dict=True)
                finally:
                    hook.remove()
                frames = models.frame_counts(model, [w.size for w in ws])
                for b, i in enumerate(group):
                    n = frames[b]
                    tg = tuple((out.last_hidden_state if l == self.num_layers else out.hidden_states[l])[b, :n] for l in self.layers)
                    results[i] = (captured["x"][b, :n], tg)
        finally:
            model.train(was_training)
        return results


def collate(items: list[tuple[torch.Tensor, tuple[torch.Tensor, ...]]]):
    """Per-clip frames -> (x (B, T, D), targets [(B, T, D)] per block, mask (B, T)), zero-padded."""
    T = max(x.shape[0] for x, _ in items)
    B, D = len(items), items[0][0].shape[1]
    dev, dt = items[0][0].device, items[0][0].dtype
    x = torch.zeros(B, T, D, device=dev, dtype=dt)
    tg = [torch.zeros(B, T, D, device=dev, dtype=dt) for _ in items[0][1]]
    mask = torch.zeros(B, T, dtype=torch.bool, device=dev)
    for b, (xi, ti) in enumerate(items):
        n = xi.shape[0]
        x[b, :n] = xi
        mask[b, :n] = True
        for k, t in enumerate(ti):
            tg[k][b, :n] = t
    return x, tg, mask


def frame_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, kind: str = "mse") -> torch.Tensor:
    """Mean over valid frames of the per-frame loss: squared error averaged over features (mse)
    or 1 - cosine similarity (cosine)."""
    if kind == "mse":
        per_frame = (pred.float() - target.float()).pow(2).mean(-1)
    else:
        per_frame = 1.0 - torch.nn.functional.cosine_similarity(pred.float(), target.float(), dim=-1, eps=1e-8)
    m = mask.to(per_frame.dtype)
    return (per_frame * m).sum() / m.sum().clamp_min(1.0)


def _variance(target: torch.Tensor, mask: torch.Tensor) -> float:
    v = target[mask].float()
    return float(v.var(0, unbiased=False).mean()) if v.shape[0] else float("nan")


def _unexplained(parts: list[torch.Tensor], targets: list[torch.Tensor], mask: torch.Tensor) -> float:
    """Mean over blocks of mse / the targets' variance; blocks whose targets do not vary in this
    batch (one valid frame: a batch of one 25 ms window) have no such fraction (nan if none has)."""
    fr = [float(p.detach()) / v for p, t in zip(parts, targets) if (v := _variance(t, mask)) > 0]
    return float(np.mean(fr)) if fr else float("nan")


def _as_source(a: Any) -> Any:
    return a.path if hasattr(a, "path") and hasattr(a, "label") else a


def _epoch_plan(seed: int, epoch: int, sizes: list[int], crop: int | None):
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(sizes))
    starts = [int(rng.integers(0, s - crop + 1)) if crop and s > crop else 0 for s in sizes]
    return order, starts


def _window(wave: np.ndarray, start: int, crop: int | None) -> np.ndarray:
    w = wave[start : start + crop] if crop else wave
    return models.normalize(w)


def _save_optimizer(opt: torch.optim.Optimizer, path: str, step: int) -> dict[str, Any]:
    from safetensors.torch import save_file

    sd = opt.state_dict()
    tensors = {}
    for idx, st in sd["state"].items():
        for name, v in st.items():
            t = v if torch.is_tensor(v) else torch.tensor(v)
            tensors[f"{idx}.{name}"] = t.detach().reshape(-1).clone().cpu() if t.dim() == 0 else t.detach().contiguous().cpu()
    tmp = f"{path}.tmp"
    save_file(tensors, tmp, metadata={"step": str(step)})
    os.replace(tmp, path)
    return {"param_groups": sd["param_groups"], "scalars": [k for k, v in tensors.items() if v.dim() == 1 and v.numel() == 1
                                                            and not k.endswith(("exp_avg", "exp_avg_sq"))]}


def _load_optimizer(opt: torch.optim.Optimizer, path: str, meta: dict[str, Any], device: torch.device) -> None:
    from safetensors.torch import load_file

    flat = load_file(path, device="cpu")
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, v in flat.items():
        idx, name = key.split(".", 1)
        if key in meta["scalars"]:
            v = v.reshape(())
        state.setdefault(int(idx), {})[name] = v if name == "step" else v.to(device)
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


#: the files of a checkpoint that ``state.json`` commits, in the order they are moved into place
#: (mimic.json, whose step says which save the set belongs to, last)
_STAGED = ("optimizer.safetensors", "mimic.safetensors", "mimic.json")


def _step_of(path: str) -> int | None:
    """The step a checkpoint file was written at (None: absent, or a checkpoint without stamps)."""
    if not os.path.exists(path):
        return None
    if path.endswith(".json"):
        with open(path) as f:
            return json.load(f).get("step")
    from safetensors import safe_open

    with safe_open(path, framework="pt") as f:
        step = (f.metadata() or {}).get("step")
    return None if step is None else int(step)


def _promote(ck: str, step: int) -> None:
    """Move the files of the save committed at ``step`` from ck/next/ into ck/ (what is left of
    them, when an earlier move was interrupted); leftovers of an uncommitted save stay put."""
    nxt = os.path.join(ck, "next")
    if _step_of(os.path.join(nxt, "mimic.json")) != step:
        return
    for name in _STAGED:
        if os.path.exists(os.path.join(nxt, name)):
            os.replace(os.path.join(nxt, name), os.path.join(ck, name))


def _settings(**kw: Any) -> dict[str, Any]:
    return json.loads(json.dumps(kw))  # as a checkpoint stores them (tuples become lists)


def distill(
    model: torch.nn.Module,
    audio: Sequence[Any],
    *,
    mimic: MimickingNetwork | MimicConfig | None = None,
    loss: str = "mse",
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    steps: int = 300,
    batch_size: int = 8,
    crop_seconds: float | None = 4.0,
    cache_targets: bool = False,
    checkpoint_dir: str | os.PathLike | None = None,
    checkpoint_every: int = 100,
    resume: bool = False,
    seed: int = 0,
    sample_rate: int | None = None,
    strict: bool = False,
    progress: bool = True,
) -> DistillResult:
    """Train ``mimic`` (default: the paper's 1-block h = 64 mimicker of the model's width) to map
    the model's stack input to its stack output (and each earlier block to its target layer) on
    ``audio``; see the module docs. Returns a DistillResult; the mimic is in eval mode."""
    models.check_model(model)
    if getattr(model.config, "add_adapter", False):
        raise ValueError("model: it has an adapter after the stack (config.add_adapter), which changes the frame rate; "
                         "distill mimics the stack frame by frame, so it needs a model without one")
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}; got {loss!r}")
    for name, v in (("steps", steps), ("batch_size", batch_size), ("checkpoint_every", checkpoint_every)):
        if not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive int; got {v!r}")
    if not lr > 0:
        raise ValueError(f"lr must be > 0; got {lr!r}")
    if crop_seconds is not None and not crop_seconds >= 0.025:
        raise ValueError(f"crop_seconds must be at least 0.025 (one frame) or None; got {crop_seconds!r}")
    if resume and checkpoint_dir is None:
        raise ValueError("resume=True needs checkpoint_dir")
    D, L = model.config.hidden_size, model.config.num_hidden_layers
    if mimic is None:
        mimic = MimicConfig(dim=D)
    if isinstance(mimic, MimicConfig):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            mimic = MimickingNetwork(mimic)
    if not isinstance(mimic, MimickingNetwork):
        raise TypeError(f"mimic must be a MimickingNetwork, a MimicConfig or None; got {type(mimic).__name__}")
    if mimic.config.dim != D:
        raise ValueError(f"mimic: its width {mimic.config.dim} differs from the model's hidden size {D}")
    layers = mimic.config.resolved_targets(L)
    dev = next(model.parameters()).device
    mimic.to(dev)

    sources = [_as_source(a) for a in audio]
    clips, failures = models.load_clips(sources, sample_rate=sample_rate, strict=strict)
    if not clips:
        raise models.no_usable_audio(len(sources), failures)
    waves = [w for _, w in clips]
    sizes = [w.size for w in waves]
    crop = None if crop_seconds is None else int(round(crop_seconds * SAMPLE_RATE))
    teacher = Teacher(model, layers)
    per_epoch = -(-len(waves) // batch_size)

    settings = _settings(
        lr=lr, weight_decay=weight_decay, batch_size=batch_size, crop_seconds=crop_seconds, loss=loss, seed=seed,
        cache_targets=cache_targets, targets=list(layers), mimic=mimic.config.to_json(),
        clips=hashlib.sha1(json.dumps([[n, s] for (n, _), s in zip(clips, sizes)]).encode()).hexdigest()[:16],
    )
    opt = torch.optim.AdamW(mimic.parameters(), lr=lr, weight_decay=weight_decay)
    result = DistillResult(mimic=mimic, targets=layers, failures=failures, steps=steps)
    start = 0
    ck = os.fspath(checkpoint_dir) if checkpoint_dir is not None else None
    history: dict[str, list[float]] = {"loss": [], "unexplained": []}
    if ck is not None and resume and os.path.exists(os.path.join(ck, "state.json")):
        with open(os.path.join(ck, "state.json")) as f:
            state = json.load(f)
        differ = sorted(k for k in settings if state["settings"].get(k) != settings[k])
        if differ:
            raise ValueError(f"resume: the checkpoint in {ck} was made with other settings ({', '.join(differ)}); "
                             f"use the same ones or another checkpoint_dir")
        start = int(state["step"])
        _promote(ck, start)
        stamps = {n: _step_of(os.path.join(ck, n)) for n in ("mimic.json", "optimizer.safetensors")}
        if any(v is not None and v != start for v in stamps.values()):
            raise ValueError(f"resume: the checkpoint in {ck} is inconsistent: state.json is at step {start}, "
                             f"but {', '.join(f'{n} at step {v}' for n, v in stamps.items())}")
        loaded = MimickingNetwork.load(os.path.join(ck, "mimic.safetensors"))
        mimic.load_state_dict(loaded.state_dict())
        _load_optimizer(opt, os.path.join(ck, "optimizer.safetensors"), state["optimizer"], dev)
        history = state["history"]
        if start > steps:
            raise ValueError(f"resume: the checkpoint is at step {start}, past steps={steps}")
    result.start_step = start

    def save(step: int) -> None:
        nxt = os.path.join(ck, "next")
        os.makedirs(nxt, exist_ok=True)
        opt_meta = _save_optimizer(opt, os.path.join(nxt, "optimizer.safetensors"), step)
        mimic.save(os.path.join(nxt, "mimic.safetensors"), {"targets": list(layers), "step": step})
        # the commit: from here on a resume continues from this step (and finishes the move)
        _write_json(os.path.join(ck, "state.json"), {"step": step, "settings": settings, "optimizer": opt_meta,
                                                     "history": history})
        _promote(ck, step)

    bar = None
    if progress:
        from tqdm.auto import tqdm

    cache = None
    t0 = time.perf_counter()
    if cache_targets and start < steps:
        _, starts0 = _epoch_plan(seed, 0, sizes, crop)
        cache = []
        chunks = range(0, len(waves), batch_size)
        it = tqdm(chunks, desc="teacher pass", unit="batch") if progress else chunks
        for s in it:
            cache += teacher([_window(waves[i], starts0[i], crop) for i in range(s, min(s + batch_size, len(waves)))])
    if progress:
        bar = tqdm(total=steps, initial=start, desc="distilling", unit="step")
    mimic.train()
    try:
        plan_epoch, plan = -1, None
        for step in range(start, steps):
            epoch, b = divmod(step, per_epoch)
            if epoch != plan_epoch:
                plan, plan_epoch = _epoch_plan(seed, epoch, sizes, crop), epoch
            order, starts = plan
            idx = [int(i) for i in order[b * batch_size : (b + 1) * batch_size]]
            if cache is not None:
                items = [cache[i] for i in idx]
            else:
                items = teacher([_window(waves[i], starts[i], crop) for i in idx])
            x, targets, mask = collate(items)
            x = x.to(next(mimic.parameters()).dtype)
            outs = mimic(x, mask, fused=False, return_all=True)
            parts = [frame_loss(o, t, mask, loss) for o, t in zip(outs, targets)]
            total = torch.stack(parts).mean()
            opt.zero_grad(set_to_none=True)
            total.backward()
            opt.step()
            value = float(total.detach())
            if not np.isfinite(value):
                raise FloatingPointError(f"distill: the loss became {value} at step {step}; lower lr (now {lr})")
            fvu = _unexplained(parts, targets, mask) if loss == "mse" else float("nan")
            history["loss"].append(value)
            history["unexplained"].append(fvu)
            result.audio_seconds += sum(min(sizes[i], crop or sizes[i]) for i in idx) / SAMPLE_RATE
            if bar is not None:
                bar.set_postfix(loss=f"{value:.4g}")
                bar.update(1)
            if ck is not None and ((step + 1) % checkpoint_every == 0 or step + 1 == steps):
                save(step + 1)
    finally:
        if bar is not None:
            bar.close()
        mimic.eval()
    result.losses = history["loss"][start:]
    result.unexplained = history["unexplained"][start:]
    result.seconds = time.perf_counter() - t0
    return result
