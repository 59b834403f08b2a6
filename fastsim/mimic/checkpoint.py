"""Checkpoints of a distillation run, atomic as a set.

A checkpoint directory holds ``mimic.safetensors`` + ``mimic.json`` (weights, config),
``optimizer.safetensors`` (AdamW moments) and ``state.json`` (step, settings, loss history). The
weights and moments are written to ``next/`` first, each stamped with its step; writing
``state.json`` commits them, and they are then moved into place (a resume finishes that move if it
was interrupted), so an interruption at any point leaves a checkpoint whose files belong together.

A checkpoint is never replaced by accident: a run into a directory that holds one must either
resume it or be told to overwrite it (``Checkpoint.check_start``). A damaged checkpoint (a truncated
file, a ``state.json`` that is not one) raises ``CheckpointError`` naming the file.
"""

from __future__ import annotations

import json
import os
from typing import Any

import torch

from ..speech.files import write_json
from .network import MimickingNetwork


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: damaged, inconsistent, made with other settings, or one
    that a new run would overwrite without being asked to."""


#: the files of a checkpoint that ``state.json`` commits, in the order they are moved into place
#: (mimic.json, whose step says which save the set belongs to, last)
STAGED = ("optimizer.safetensors", "mimic.safetensors", "mimic.json")


def save_optimizer(opt: torch.optim.Optimizer, path: str, step: int) -> dict[str, Any]:
    """The optimizer's tensors to ``path`` (safetensors, stamped with ``step``); returns what
    ``load_optimizer`` needs besides them (param groups, which entries are scalars)."""
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


def load_optimizer(opt: torch.optim.Optimizer, path: str, meta: dict[str, Any], device: torch.device) -> None:
    from safetensors.torch import load_file

    flat = load_file(path, device="cpu")
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, v in flat.items():
        idx, name = key.split(".", 1)
        if key in meta["scalars"]:
            v = v.reshape(())
        state.setdefault(int(idx), {})[name] = v if name == "step" else v.to(device)
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def _damaged(path: str, e: BaseException) -> CheckpointError:
    return CheckpointError(f"the checkpoint file {path} is damaged or not a checkpoint file ({type(e).__name__}: {e}); "
                           f"restore it, or start afresh")


def read_json(path: str) -> dict[str, Any]:
    """A checkpoint's JSON file as a dict; CheckpointError naming the file when it is not one."""
    try:
        with open(path) as f:
            data = json.load(f)
    except (ValueError, UnicodeDecodeError) as e:  # (JSONDecodeError is a ValueError)
        raise _damaged(path, e) from None
    if not isinstance(data, dict):
        raise _damaged(path, TypeError(f"a JSON object was expected, not {type(data).__name__}"))
    return data


def step_of(path: str) -> int | None:
    """The step a checkpoint file was written at (None: absent, or a checkpoint without stamps);
    CheckpointError naming the file when it cannot be read."""
    if not os.path.exists(path):
        return None
    try:
        if path.endswith(".json"):
            step = read_json(path).get("step")
        else:
            from safetensors import safe_open

            with safe_open(path, framework="pt") as f:
                step = (f.metadata() or {}).get("step")
        return None if step is None else int(step)
    except CheckpointError:
        raise
    except Exception as e:  # safetensors raises its own SafetensorError, OSError, ...
        raise _damaged(path, e) from None


def promote(folder: str, step: int) -> None:
    """Move the files of the save committed at ``step`` from folder/next/ into folder/ (what is
    left of them, when an earlier move was interrupted); leftovers of an uncommitted save stay put."""
    nxt = os.path.join(folder, "next")
    if step_of(os.path.join(nxt, "mimic.json")) != step:
        return
    for name in STAGED:
        if os.path.exists(os.path.join(nxt, name)):
            os.replace(os.path.join(nxt, name), os.path.join(folder, name))


class Checkpoint:
    """The checkpoint directory of one run: ``settings`` (the run's settings that must match on
    resume) are stored as JSON stores them (tuples become lists)."""

    def __init__(self, folder: str | os.PathLike, settings: dict[str, Any]):
        self.folder = os.fspath(folder)
        self.settings = json.loads(json.dumps(settings))

    def exists(self) -> bool:
        return os.path.exists(os.path.join(self.folder, "state.json"))

    def committed_step(self) -> int | None:
        """The step of the committed save (None: no checkpoint here); CheckpointError when its
        state.json cannot be read."""
        if not self.exists():
            return None
        path = os.path.join(self.folder, "state.json")
        step = read_json(path).get("step")
        if isinstance(step, bool) or not isinstance(step, int):
            raise _damaged(path, ValueError(f"its step is {step!r}, not a step number"))
        return step

    def check_start(self, resume: bool, overwrite: bool) -> None:
        """Refuse to start a run that would silently replace this checkpoint: when one exists,
        ``resume`` (continue it) or ``overwrite`` (start afresh; it is replaced at the first save)
        must be given."""
        if resume and overwrite:
            raise CheckpointError("resume and overwrite exclude each other: continue the checkpoint, or replace it")
        if overwrite:
            return
        step = self.committed_step()  # (a damaged state.json is reported now, before any work)
        if step is not None and not resume:
            raise CheckpointError(f"{self.folder} holds a checkpoint (step {step}); resume it, or overwrite it to "
                                  f"start afresh (it is then replaced at the new run's first save)")

    def resume(self, mimic: MimickingNetwork, opt: torch.optim.Optimizer, device: torch.device,
               steps: int) -> tuple[int, dict[str, list[float]]]:
        """Load the committed save into ``mimic`` and ``opt``; returns (its step, the loss history).
        Raises ValueError when it was made with other settings, is inconsistent, or is past ``steps``."""
        ck = self.folder
        state_path = os.path.join(ck, "state.json")
        start = self.committed_step()
        state = read_json(state_path)
        if not (isinstance(state.get("settings"), dict) and isinstance(state.get("optimizer"), dict)
                and isinstance(state.get("history"), dict)):
            raise _damaged(state_path, KeyError("settings, optimizer and history are not all there"))
        differ = sorted(k for k in self.settings if state["settings"].get(k) != self.settings[k])
        if differ:
            raise CheckpointError(f"resume: the checkpoint in {ck} was made with other settings ({', '.join(differ)}); "
                                  f"use the same ones or another checkpoint_dir")
        if start > steps:
            raise CheckpointError(f"resume: the checkpoint is at step {start}, past steps={steps}")
        promote(ck, start)
        stamps = {n: step_of(os.path.join(ck, n)) for n in ("mimic.json", "optimizer.safetensors")}
        if any(v is not None and v != start for v in stamps.values()):
            raise CheckpointError(f"resume: the checkpoint in {ck} is inconsistent: state.json is at step {start}, "
                                  f"but {', '.join(f'{n} at step {v}' for n, v in stamps.items())}")
        weights = os.path.join(ck, "mimic.safetensors")
        try:
            loaded = MimickingNetwork.load(weights)
            mimic.load_state_dict(loaded.state_dict())
        except FileNotFoundError as e:
            raise CheckpointError(f"resume: {e}") from None
        except Exception as e:  # truncated or foreign weights: SafetensorError, RuntimeError (shapes), ...
            raise _damaged(weights, e) from None
        moments = os.path.join(ck, "optimizer.safetensors")
        try:
            load_optimizer(opt, moments, state["optimizer"], device)
        except Exception as e:
            raise _damaged(moments, e) from None
        return start, state["history"]

    def save(self, step: int, mimic: MimickingNetwork, opt: torch.optim.Optimizer, targets: tuple[int, ...],
             history: dict[str, list[float]]) -> None:
        """Stage the weights and moments in next/, commit them with state.json, move them in."""
        ck = self.folder
        nxt = os.path.join(ck, "next")
        os.makedirs(nxt, exist_ok=True)
        opt_meta = save_optimizer(opt, os.path.join(nxt, "optimizer.safetensors"), step)
        mimic.save(os.path.join(nxt, "mimic.safetensors"), {"targets": list(targets), "step": step})
        # the commit: from here on a resume continues from this step (and finishes the move)
        write_json(os.path.join(ck, "state.json"), {"step": step, "settings": self.settings, "optimizer": opt_meta,
                                                    "history": history})
        promote(ck, step)
