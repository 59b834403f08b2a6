"""The no-distillation baseline: the same small network trained directly on a task's labels.

Stack-input frames (the frozen CNN front end and feature projection of the model) ->
MimickingNetwork (fresh, the mimic's config) -> mean over the clip's frames -> linear classifier,
trained with cross-entropy (AdamW) on the probe's training split (the same split as
``fastsim.speech.probes.probe_accuracy``: ``fastsim.speech.tasks.probe_split``) and scored on its test split.
"""

from __future__ import annotations

import numpy as np
import torch

from ..speech.inference import eval_mode
from ..speech.runner import normalize, pad
from ..speech.tasks import LoadedClips, probe_split
from ..speech.whisper import is_whisper
from .network import MimicConfig, MimickingNetwork
from .replace import stack_input


@torch.no_grad()
def stack_inputs(model: torch.nn.Module, loaded: LoadedClips, *, progress: bool = False) -> list[torch.Tensor]:
    """Each clip's stack input (T_i, D), one clip per pass (no padding, so exact for every family)."""
    if is_whisper(model):  # conv + positions over each clip's own frames (fastsim.mimic.whisper_stack)
        from .whisper_stack import clip_stack_inputs

        return clip_stack_inputs(model, [w for _, w in loaded.waves])
    p = next(model.parameters())
    out = []
    it = loaded.waves
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(it, desc="baseline features", unit="clip")
    with eval_mode(model):
        for _, w in it:
            h, _, _ = stack_input(model, torch.from_numpy(normalize(w))[None].to(p.device, p.dtype))
            out.append(h[0].float())
    return out


def label_baseline(model: torch.nn.Module, loaded: LoadedClips, config: MimicConfig, *, seed: int = 0,
                   test_fraction: float = 0.3, steps: int = 300, lr: float = 1e-3, batch_size: int = 16,
                   frames: list[torch.Tensor] | None = None, progress: bool = False) -> float:
    """Test accuracy of the network trained on the labels (see the module docs)."""
    split = probe_split(loaded.labels, seed=seed, test_fraction=test_fraction)
    classes, y, train, test = split.classes, torch.from_numpy(split.y), split.train, split.test
    if frames is None:
        frames = stack_inputs(model, loaded, progress=progress)
    dev = frames[0].device
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = MimickingNetwork(MimicConfig(**{**config.to_json(), "targets": None})).to(dev)
        head = torch.nn.Linear(config.dim, len(classes)).to(dev)
    opt = torch.optim.AdamW([*net.parameters(), *head.parameters()], lr=lr, weight_decay=0.0)
    rng = np.random.default_rng(seed)

    def logits(idx):
        x, mask = pad([frames[i] for i in idx])
        h = net(x, mask, fused=False)
        m = mask[..., None].float()
        return head((h * m).sum(1) / m.sum(1))

    order, pos = rng.permutation(train), 0
    net.train()
    for _ in range(steps):
        if pos >= order.size:
            order, pos = rng.permutation(train), 0
        idx = order[pos : pos + batch_size].tolist()
        pos += batch_size
        loss = torch.nn.functional.cross_entropy(logits(idx), y[idx].to(dev))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    net.eval()
    with torch.no_grad():
        pred = torch.cat([logits(test[s : s + 64].tolist()).argmax(1).cpu() for s in range(0, test.size, 64)])
    return float((pred == y[test]).float().mean())
