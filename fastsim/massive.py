"""Massive activations: the few frames (and feature dimensions) that carry a large share of a
layer's variance, found exactly over a stream of hidden states, and the similarity matrices
recomputed without those frames.

Trained transformers often have a handful of frames where one feature dimension is huge (|x| in
the hundreds where the rest are of order 1; the "attention sink" tokens of language models, and in
Whisper base one frame of one clip at |x| ≈ 300 in dimension 388 of layers 4-5). Such a frame carries a
large share of the layer's total variance, and linear CKA, which weighs frames by their squared
norm, then compares little more than those frames: a layer with them sits near 0 with every layer
without them. ``fastsim analyze`` reports them and can show the matrices without them.

Definitions, for one layer with frames x_1 .. x_n (d features), mean mu, and total variance
``S = sum_i |x_i - mu|^2`` (n times the trace of the covariance):

* the **share of a frame** is ``|x_i - mu|^2 / S``; a frame is *massive* when its share exceeds
  ``threshold`` (default 0.1, so at most 9 frames per layer can be);
* the **share of a dimension** is ``sum_i (x_id - mu_d)^2 / S``; a dimension is massive likewise;
* a massive frame's dimension is the one with the largest ``(x_id - mu_d)^2`` and its value is the
  raw ``x_id`` (what "|x| ≈ 320" means).

The detector (``MassiveActivations``) is exact and bounded in memory: per layer it keeps the exact
moments (count, mean and per-dimension sums of squared deviations, merged batch by batch with Chan
et al.'s update in float64; the per-dimension maximum |x|) and the ``candidates`` frames (default
32) farthest from a fixed centre (the mean of the first batch it saw) with their clip, frame index
and vector. At the end each candidate's share is computed exactly from the final mean. The list
of massive frames is *certified complete*: every frame that is not a candidate lies within
``sqrt(r)`` of the centre, where r is the largest score ever dropped, so its share is at most
``(sqrt(r) + |mu - centre|)^2 / S``; the report says when that bound exceeds the threshold (raise
``candidates`` then). By pigeonhole the (m+1)-th farthest frame has at most 1/(m+1) of the
variance about the centre, so with 32 candidates this essentially always holds. Accumulators merge
(disjoint data: candidates re-ranked, each side's bound kept), so ``all_reduce`` works across ranks.

Without the massive frames (``recompute``): the frames that are massive in any layer are dropped
from the mask of every layer (the metrics compare the same frames in every layer), and the
matrices are computed again from the batches: held in memory from the first pass while they fit
in ``CACHE_BYTES`` (512 MiB; the default corpus of ``fastsim analyze`` on Whisper base is ~45 MB),
else by running the model again. Every analysis with massive frames recomputes linear CKA alone
from the held batches (no model pass), to say which entries the frames dominate; all the
matrices without them (``without_massive``, ``--without-massive``) are recomputed and shown on
request, from the held batches or, when they did not fit, by running the model again. Dropping the frames rather than standardizing
the features: it is the direct test of whether the structure a matrix shows belongs to a handful
of frames (usually well under 0.1 % of them) or to the speech; standardizing every dimension
changes what every metric measures on every frame (linear CKA becomes a correlation-based
measure) and still leaves the frames' weight in the massive dimension. A linear CKA entry is
reported as *dominated* by the massive frames when dropping them moves it by at least
``DOMINATED_CHANGE`` (0.1).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from typing_extensions import Self

from .accumulators.base import Accumulator

#: a frame or dimension carrying more than this share of a layer's variance is massive
THRESHOLD = 0.1
#: frames kept per layer as candidates (the exactness certificate needs the (m+1)-th below the threshold)
CANDIDATES = 32
#: a linear CKA entry that moves by at least this much without the massive frames is dominated by them
DOMINATED_CHANGE = 0.1
#: the first pass's batches are held in memory for the recomputation up to this size (else the model runs again)
CACHE_BYTES = 512 << 20
#: frame rate of every model fastsim runs (20 ms frames), for the times in the report
FRAME_SECONDS = 0.02


class _Layer:
    """One layer's exact moments and candidate frames (float64, on the data's device)."""

    def __init__(self, d: int, device: torch.device):
        f64 = dict(dtype=torch.float64, device=device)
        self.n = 0
        self.mean = torch.zeros(d, **f64)
        self.m2 = torch.zeros(d, **f64)
        self.maxabs = torch.zeros(d, **f64)
        self.centre: torch.Tensor | None = None
        self.score = torch.zeros(0, **f64)  # |x - centre|^2 of the candidates, largest first
        self.vec = torch.zeros(0, d, **f64)
        self.clip = torch.zeros(0, dtype=torch.long, device=device)  # index into the accumulator's clip names
        self.frame = torch.zeros(0, dtype=torch.long, device=device)
        #: (centre, r): every frame that is not a candidate is within sqrt(r) of one of these centres
        self.balls: list[tuple[torch.Tensor, float]] = []

    def to(self, device: torch.device | str) -> _Layer:
        for k in ("mean", "m2", "maxabs", "centre", "score", "vec", "clip", "frame"):
            v = getattr(self, k)
            if v is not None:
                setattr(self, k, v.to(device))
        self.balls = [(c.to(device), r) for c, r in self.balls]
        return self

    def add_moments(self, n: int, mean: torch.Tensor, m2: torch.Tensor) -> None:
        """Chan et al.'s pairwise update: fold in a disjoint set of n frames with its own mean and m2."""
        if n == 0:
            return
        total = self.n + n
        delta = mean - self.mean
        self.m2 = self.m2 + m2 + delta.square() * (self.n * n / total)
        self.mean = self.mean + delta * (n / total)
        self.n = total

    def keep_top(self, score, vec, clip, frame, m: int, centre: torch.Tensor) -> None:
        """Keep the m largest scores (about ``centre``) among the current candidates and these;
        the largest dropped score widens the ball around ``centre``."""
        score = torch.cat([self.score, score])
        vec, clip, frame = torch.cat([self.vec, vec]), torch.cat([self.clip, clip]), torch.cat([self.frame, frame])
        if score.numel() > m:
            order = torch.argsort(score, descending=True, stable=True)
            self._widen(centre, float(score[order[m]]))
            order = order[:m]
            score, vec, clip, frame = score[order], vec[order], clip[order], frame[order]
        self.score, self.vec, self.clip, self.frame = score, vec, clip, frame

    def _widen(self, centre: torch.Tensor, r: float) -> None:
        for i, (c, old) in enumerate(self.balls):
            if c is centre or torch.equal(c, centre):
                self.balls[i] = (c, max(old, r))
                return
        self.balls.append((centre, r))


@dataclass
class MassiveFrames:
    """Adjacent massive frames of one clip in one layer: frames ``first`` .. ``last`` (0-based,
    20 ms each), the dimension(s) that carry them, the largest |x| there (``value`` keeps its
    sign) and the frames' summed share of the layer's variance."""

    clip: str
    first: int
    last: int
    dims: list[int]
    value: float
    share: float
    shares: list[float]

    @property
    def magnitude(self) -> float:
        return abs(self.value)

    def to_json(self) -> dict[str, Any]:
        return {"clip": self.clip, "first_frame": self.first, "last_frame": self.last,
                "seconds": [self.first * FRAME_SECONDS, (self.last + 1) * FRAME_SECONDS], "dims": self.dims,
                "value": self.value, "magnitude": self.magnitude, "share": self.share, "frame_shares": self.shares}


@dataclass
class MassiveDim:
    """A feature dimension carrying more than the threshold of a layer's variance."""

    dim: int
    share: float
    max_abs: float

    def to_json(self) -> dict[str, Any]:
        return {"dim": self.dim, "share": self.share, "max_abs": self.max_abs}


@dataclass
class LayerReport:
    """One layer: its frame count and variance, its massive frame groups and dimensions, whether
    the frame list is certified complete and the bound behind it (the largest share a frame that
    is not listed could have), and the largest candidate share (listed or not)."""

    label: str
    frames: int
    variance: float  # mean squared deviation per frame (trace of the covariance)
    groups: list[MassiveFrames]
    dims: list[MassiveDim]
    complete: bool
    bound: float
    top_share: float

    @property
    def share(self) -> float:
        """Share of the variance the layer's massive frames carry together."""
        return sum(g.share for g in self.groups)

    def to_json(self) -> dict[str, Any]:
        return {"layer": self.label, "frames": self.frames, "variance": self.variance, "share": self.share,
                "groups": [g.to_json() for g in self.groups], "dims": [d.to_json() for d in self.dims],
                "complete": self.complete, "unlisted_share_bound": self.bound, "top_frame_share": self.top_share}


@dataclass
class MassiveReport:
    """The detector's result: per layer (in the order of the hidden states) its report."""

    threshold: float
    candidates: int
    layers: list[LayerReport]

    def drop(self) -> dict[str, set[int]]:
        """clip -> the frames that are massive in any layer (what ``recompute`` leaves out)."""
        out: dict[str, set[int]] = {}
        for lay in self.layers:
            for g in lay.groups:
                out.setdefault(g.clip, set()).update(range(g.first, g.last + 1))
        return out

    @property
    def dropped_frames(self) -> int:
        return sum(len(v) for v in self.drop().values())

    @property
    def found(self) -> bool:
        return any(lay.groups or lay.dims for lay in self.layers)

    def with_massive_frames(self) -> list[str]:
        return [lay.label for lay in self.layers if lay.groups]

    def lines(self) -> list[str]:
        """The report as printed by ``fastsim analyze``."""
        n = self.layers[0].frames if self.layers else 0
        out = [f"massive activations (a frame or feature dimension carrying > {100 * self.threshold:g} % of a layer's "
               f"variance; exact over {n} frames):"]
        quiet = []
        for lay in self.layers:
            if not lay.groups and not lay.dims:
                quiet.append(lay.label)
            for g in lay.groups:
                frames = f"frame {g.first}" if g.first == g.last else f"frames {g.first}-{g.last}"
                out.append(f"  layer {lay.label}: dim {', '.join(map(str, g.dims))} at |x| = {g.magnitude:.1f} on "
                           f"{os.path.basename(g.clip)} {frames} ({g.first * FRAME_SECONDS:.2f}-"
                           f"{(g.last + 1) * FRAME_SECONDS:.2f} s): {100 * g.share:.1f} % of the layer's variance "
                           f"(typical |x - mean| per frame {math.sqrt(lay.variance):.1f})")
            if lay.dims:
                out.append(f"  layer {lay.label}: massive dimension(s) " + ", ".join(
                    f"{d.dim} ({100 * d.share:.1f} % of the variance, max |x| {d.max_abs:.1f})" for d in lay.dims))
            if not lay.complete:
                out.append(f"  layer {lay.label}: the list may be incomplete: a frame outside the {self.candidates} "
                           f"candidates could carry up to {100 * lay.bound:.1f} % (raise candidates)")
        if quiet:
            out.append(f"  none in layer(s) {', '.join(quiet)}")
        return out

    def to_json(self) -> dict[str, Any]:
        return {"threshold": self.threshold, "candidates": self.candidates,
                "layers": [lay.to_json() for lay in self.layers],
                "dropped_frames": {clip: sorted(v) for clip, v in self.drop().items()}}


class MassiveActivations(Accumulator):
    """Streaming detector of massive frames and dimensions (see the module docs).

    >>> det = MassiveActivations()
    >>> for batch in batches:        # hidden states (one (B, T, d) tensor per layer), (B, T) mask, B clip names
    ...     det.update(batch.hidden_states, batch.mask, batch.names)
    >>> report = det.compute(labels)
    """

    def __init__(self, threshold: float = THRESHOLD, candidates: int = CANDIDATES) -> None:
        if not 0 < threshold < 1:
            raise ValueError(f"threshold must be in (0, 1); got {threshold!r}")
        if not isinstance(candidates, int) or isinstance(candidates, bool) or candidates < 1:
            raise ValueError(f"candidates must be a positive int; got {candidates!r}")
        self.threshold, self.candidates = float(threshold), candidates
        self.reset()

    def settings(self) -> tuple:
        return (self.threshold, self.candidates)

    def reset(self) -> None:
        self.layers: list[_Layer] | None = None
        self.clips: list[str] = []
        self._clip_index: dict[str, int] = {}

    def _clip_ids(self, names: Sequence[str]) -> list[int]:
        ids = []
        for name in names:
            if name not in self._clip_index:
                self._clip_index[name] = len(self.clips)
                self.clips.append(name)
            ids.append(self._clip_index[name])
        return ids

    def update(self, hidden_states: Sequence[torch.Tensor], mask: torch.Tensor | None = None,
               names: Sequence[str] | None = None) -> Self:
        """Add one batch: one (B, T, d_l) tensor per layer, the (B, T) mask of valid frames and the
        B clips' names (frames are numbered within each clip)."""
        states = list(hidden_states)
        if not states or any(h.dim() != 3 for h in states):
            raise ValueError("hidden_states must be a non-empty sequence of (batch, frames, features) tensors")
        B, T = states[0].shape[:2]
        if any(tuple(h.shape[:2]) != (B, T) for h in states):
            raise ValueError("hidden_states must share their (batch, frames) shape")
        valid = torch.ones(B, T, dtype=torch.bool) if mask is None else mask.bool()
        if tuple(valid.shape) != (B, T):
            raise ValueError(f"mask must be (batch, frames) = {(B, T)}; got {tuple(valid.shape)}")
        names = [f"clip #{len(self.clips) + b}" for b in range(B)] if names is None else list(names)
        if len(names) != B:
            raise ValueError(f"names: {len(names)} given for a batch of {B} clips")
        dev = states[0].device
        valid = valid.to(dev)
        if self.layers is None:
            self.layers = [_Layer(h.shape[2], dev) for h in states]
        if len(states) != len(self.layers) or any(h.shape[2] != lay.mean.shape[0] for h, lay in zip(states, self.layers)):
            raise ValueError("hidden_states must keep their number of layers and widths across batches")
        where = valid.nonzero()  # (N, 2): rows in the order h[valid] takes them
        if where.shape[0] == 0:
            return self
        ids = torch.as_tensor(self._clip_ids(names), dtype=torch.long, device=dev)
        clip, frame = ids[where[:, 0]], where[:, 1]
        m = self.candidates
        for lay, h in zip(self.layers, states):
            x = h.detach()[valid].to(dev, torch.float64)
            mb = x.mean(0)
            lay.add_moments(x.shape[0], mb, (x - mb).square().sum(0))
            lay.maxabs = torch.maximum(lay.maxabs, x.abs().amax(0))
            if lay.centre is None:
                lay.centre = mb.clone()
            score = (x - lay.centre).square().sum(1)
            k = min(m, score.numel())
            top = torch.topk(score, k, sorted=True)
            if score.numel() > k:  # the (m+1)-th of this batch bounds every frame not kept from it
                lay._widen(lay.centre, float(torch.topk(score, k + 1, sorted=True).values[-1]))
            i = top.indices
            lay.keep_top(top.values, x[i], clip[i], frame[i], m, lay.centre)
        return self

    def merge(self, other: Self) -> Self:
        """Fold in a detector that saw disjoint clips (same settings)."""
        self.check_mergeable(other)
        if other.layers is None:
            return self
        if self.layers is None:
            self.layers, self.clips, self._clip_index = other.layers, list(other.clips), dict(other._clip_index)
            return self
        if len(other.layers) != len(self.layers):
            raise ValueError("cannot merge detectors of different numbers of layers")
        remap = torch.as_tensor(self._clip_ids(other.clips), dtype=torch.long)
        for mine, theirs in zip(self.layers, other.layers):
            theirs = theirs.to(mine.mean.device)
            mine.add_moments(theirs.n, theirs.mean, theirs.m2)
            mine.maxabs = torch.maximum(mine.maxabs, theirs.maxabs)
            for c, r in theirs.balls:
                mine.balls.append((c, r))
            if mine.centre is None:
                mine.centre = theirs.centre
            if theirs.score.numel():
                score = (theirs.vec - mine.centre).square().sum(1)
                mine.keep_top(score, theirs.vec, remap.to(theirs.clip.device)[theirs.clip], theirs.frame,
                              self.candidates, mine.centre)
        return self

    def portable(self) -> Self:
        if self.layers is not None:
            self.layers = [lay.to("cpu") for lay in self.layers]
        return self

    def compute(self, labels: Sequence[str] | None = None) -> MassiveReport:
        """The report (labels: one name per hidden state; default "0", "1", ...)."""
        if self.layers is None:
            raise ValueError("MassiveActivations saw no frames")
        labels = [str(i) for i in range(len(self.layers))] if labels is None else list(labels)
        if len(labels) != len(self.layers):
            raise ValueError(f"labels: {len(labels)} given for {len(self.layers)} layers")
        return MassiveReport(self.threshold, self.candidates,
                             [self._layer_report(lab, lay) for lab, lay in zip(labels, self.layers)])

    def _layer_report(self, label: str, lay: _Layer) -> LayerReport:
        total = float(lay.m2.sum())
        if not total > 0:
            return LayerReport(label, lay.n, 0.0, [], [], True, 0.0, 0.0)
        u = lay.vec - lay.mean
        shares = (u.square().sum(1) / total).cpu().numpy()
        top_dim = u.square().argmax(1).cpu().numpy()
        values = lay.vec.gather(1, torch.as_tensor(top_dim, device=lay.vec.device)[:, None])[:, 0].cpu().numpy()
        clips, frames = lay.clip.cpu().numpy(), lay.frame.cpu().numpy()
        hits = sorted((self.clips[clips[i]], int(frames[i]), float(shares[i]), int(top_dim[i]), float(values[i]))
                      for i in range(len(shares)) if shares[i] > self.threshold)
        groups: list[MassiveFrames] = []
        for clip, frame, share, dim, value in hits:
            g = groups[-1] if groups else None
            if g is not None and g.clip == clip and frame == g.last + 1:
                g.last, g.share = frame, g.share + share
                g.shares.append(share)
                if dim not in g.dims:
                    g.dims.append(dim)
                if abs(value) > abs(g.value):
                    g.value = value
            else:
                groups.append(MassiveFrames(clip, frame, frame, [dim], value, share, [share]))
        dim_share = (lay.m2 / total).cpu().numpy()
        maxabs = lay.maxabs.cpu().numpy()
        dims = [MassiveDim(int(d), float(dim_share[d]), float(maxabs[d]))
                for d in np.argsort(-dim_share, kind="stable") if dim_share[d] > self.threshold]
        bound = max(((math.sqrt(max(r, 0.0)) + float((lay.mean - c).norm())) ** 2 / total for c, r in lay.balls),
                    default=0.0)
        return LayerReport(label, lay.n, total / lay.n, groups, dims, bound <= self.threshold, min(bound, 1.0),
                           float(shares.max()) if shares.size else 0.0)


# ------------------------------------------------------------------------------------------------
# the matrices without the massive frames


def keep_mask(mask: torch.Tensor, names: Sequence[str], drop: dict[str, set[int]]) -> torch.Tensor:
    """The batch's (B, T) mask with the dropped frames of its clips set False."""
    out = mask.clone().bool()
    for b, name in enumerate(names):
        frames = drop.get(name)
        if frames:
            idx = torch.as_tensor(sorted(f for f in frames if f < out.shape[1]), dtype=torch.long, device=out.device)
            out[b, idx] = False
    return out


class BatchCache:
    """The first pass's batches, held while they fit in ``limit`` bytes (then dropped: ``complete`` False)."""

    def __init__(self, limit: int | None = None):
        limit = CACHE_BYTES if limit is None else limit
        self.limit, self.bytes, self.batches, self.complete = limit, 0, [], True

    def add(self, batch: Any) -> None:
        if not self.complete:
            return
        size = sum(h.numel() * h.element_size() for h in batch.hidden_states)
        if self.bytes + size > self.limit:
            self.batches, self.complete = [], False
            return
        self.bytes += size
        self.batches.append(batch)


@dataclass
class WithoutMassive:
    """The report, and the matrices recomputed without the massive frames (None when there was
    nothing to drop, or no way to recompute without running the model again and that was not
    asked for), with their blocks, the frames used, whether the first pass's batches were reused
    (else the model ran again), the matrices with them (``before``), and whether every matrix is
    shown (``shown``: asked for with ``without_massive``) or only linear CKA was recomputed, to
    say which entries the massive frames dominate."""

    report: MassiveReport
    labels: list[str]
    matrices: dict[str, np.ndarray] | None = None
    blocks: dict[str, list[tuple[int, int]]] = field(default_factory=dict)
    frames: int = 0
    reused: bool = True
    before: dict[str, np.ndarray] = field(default_factory=dict)
    shown: bool = True

    def dominated(self, change: float = DOMINATED_CHANGE) -> list[tuple[str, str, float, float]]:
        """Linear CKA entries (a < b) that move by at least ``change`` without the massive frames:
        (layer a, layer b, with, without)."""
        if not self.matrices or "cka" not in self.matrices or "cka" not in self.before:
            return []
        a, b = self.before["cka"], self.matrices["cka"]
        L = len(self.labels)
        return [(self.labels[i], self.labels[j], float(a[i, j]), float(b[i, j]))
                for i in range(L) for j in range(i + 1, L) if abs(a[i, j] - b[i, j]) >= change]

    def lines(self) -> list[str]:
        out = ["", *self.report.lines()]
        with_frames = self.report.with_massive_frames()
        if not with_frames:
            return out
        n = self.report.dropped_frames
        if self.matrices is None:
            out.append(f"  linear CKA with layer(s) {', '.join(with_frames)} may be dominated by these frames; "
                       f"--without-massive recomputes the matrices without them")
            return out
        from .metrics import title as metric_title

        total = self.frames + n
        if not self.shown:
            dom = self.dominated()
            out.append(f"  linear CKA without the {n} massive frame(s) (of {total}): " + (
                f"dominated by them (moves by >= {DOMINATED_CHANGE:g}) at "
                + ", ".join(f"{a}-{b} {x:.2f} -> {y:.2f}" for a, b, x, y in dom) if dom else
                f"not dominated by them (no entry moves by {DOMINATED_CHANGE:g} or more)")
                + "; --without-massive shows every matrix without them")
            return out
        out.append(f"\nwithout the {n} massive frame(s) (of {total}; "
                   f"{'the first pass reused' if self.reused else 'the model ran again'}):")
        for metric, m in self.matrices.items():
            out.append(f"\n{metric_title(metric)} ({metric}), without massive frames:")
            out.append("       " + "".join(f"{lab:>6}" for lab in self.labels))
            for i, lab in enumerate(self.labels):
                out.append(f"{lab:>6} " + "".join(f"{v:6.2f}" for v in m[i]))
            names = [f"{self.labels[a]}-{self.labels[b]}" for a, b in self.blocks.get(metric, [])]
            out.append(f"  blocks of mutually similar consecutive layers: {', '.join(names) or 'none'}")
        dom = self.dominated()
        if dom:
            out.append(f"linear CKA dominated by the massive frames (moves by >= {DOMINATED_CHANGE:g} without them): "
                       + ", ".join(f"{a}-{b} {x:.2f} -> {y:.2f}" for a, b, x, y in dom))
        elif "cka" in self.matrices:
            out.append(f"linear CKA is not dominated by them (no entry moves by {DOMINATED_CHANGE:g} or more)")
        return out

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = self.report.to_json()
        if self.matrices is not None:
            out["without_massive"] = {
                "all_metrics": self.shown,
                "frames": self.frames, "reused_first_pass": self.reused,
                "metrics": {m: {"matrix": v.tolist(), "blocks": [list(b) for b in self.blocks.get(m, [])]}
                            for m, v in self.matrices.items()},
                "cka_dominated": [{"layers": [a, b], "with": x, "without": y} for a, b, x, y in self.dominated()],
            }
        return out

    def arrays(self) -> dict[str, np.ndarray]:
        """``<metric>_without_massive`` -> matrix, for matrices.npz."""
        return {f"{m}_without_massive": v for m, v in (self.matrices or {}).items()} if self.shown else {}

    def save_heatmaps(self, out: str | os.PathLike, model_name: str) -> list[str]:
        if not self.matrices or not self.shown:
            return []
        from .heatmap import save_heatmap
        from .metrics import title as metric_title

        written = []
        for metric, m in self.matrices.items():
            title = f"{model_name}\n{metric_title(metric)} without {self.report.dropped_frames} massive frame(s)"
            written.append(save_heatmap(m, self.labels, os.path.join(out, f"heatmap_{metric}_without_massive.png"),
                                        title=title, colorbar_label=metric_title(metric),
                                        blocks=self.blocks.get(metric, [])))
        return written


def recompute(report: MassiveReport, labels: Sequence[str], make_accumulator: Callable[[], Any],
              batches: Iterable[Any], *, before: dict[str, np.ndarray], reused: bool,
              block_threshold: float | None = None, all_reduce: bool = False, with_too: bool = False,
              shown: bool = True) -> WithoutMassive:
    """The matrices of a fresh accumulator (``make_accumulator()``, a ``LayerSimilarity``) fed the
    batches with the massive frames dropped from their masks; ``labels`` are the matrices' rows.
    with_too: also feed another one the whole batches (the matrices with the frames, for metrics
    the first pass did not compute)."""
    from .blocks import find_blocks

    drop = report.drop()
    acc = make_accumulator()
    with_acc = make_accumulator() if with_too else None
    frames = 0
    for batch in batches:
        mask = keep_mask(batch.mask, batch.names, drop)
        acc.update(batch.hidden_states, mask)
        if with_acc is not None:
            with_acc.update(batch.hidden_states, batch.mask)
        frames += int(mask.sum())
    if with_acc is not None:
        if all_reduce:
            with_acc.all_reduce()
        before = {**{m: v.numpy() for m, v in with_acc.compute().items()}, **before}
    if all_reduce:
        from .accumulators.base import all_reduce_sum

        acc.all_reduce()
        frames = int(all_reduce_sum(torch.tensor([float(frames)], dtype=torch.float64)).item())
    matrices = {m: v.numpy() for m, v in acc.compute().items()}
    blocks = {m: find_blocks(v, block_threshold) if np.isfinite(v).all() else [] for m, v in matrices.items()}
    return WithoutMassive(report, list(labels), matrices, blocks, frames, reused, dict(before), shown)


class MassivePass:
    """What ``fastsim.analysis.analyze`` runs beside its accumulator: the detector fed every batch
    it adds (``add``), the batches held for the recomputation while they fit (with
    ``without=True``), and at the end (``finish``) the report and, when asked and there are
    massive frames, the matrices without them."""

    def __init__(self, *, threshold: float = THRESHOLD, candidates: int = CANDIDATES, without: bool = False,
                 cache_bytes: int | None = None):
        self.detector = MassiveActivations(threshold, candidates)
        self.without = bool(without)
        self.cache = BatchCache(CACHE_BYTES if cache_bytes is None else cache_bytes)
        self.used: set[str] = set()

    def add(self, batch: Any, names: Sequence[str]) -> None:
        """A batch the accumulator took (hidden states, mask, its ``names`` keys) and its clips' names."""
        if not batch.names:
            return
        self.detector.update(batch.hidden_states, batch.mask, names)
        self.used.update(batch.names)
        if self.cache is not None:
            self.cache.add(batch)

    def finish(self, labels: Sequence[str], matrix_labels: Sequence[str], before: dict[str, np.ndarray],
               make_accumulator: Callable[[], Any], rerun: Callable[[], Iterable[Any]],
               names_of: Callable[[Any], list[str]], *, make_cka: Callable[[], Any] | None = None,
               block_threshold: float | None = None, distributed: bool = False) -> WithoutMassive:
        """The report (rows ``labels``: every hidden state) and, with ``without``, the matrices
        (rows ``matrix_labels``) recomputed without the massive frames: from the held batches, or
        from ``rerun()`` (the runner again; clips the first pass left out are left out again).
        Without ``without``, when there are massive frames and the batches were held, linear CKA
        alone (``make_cka()``: an accumulator of it with the same settings) is recomputed from
        them, to say which entries the frames dominate; no model runs again for that."""
        if make_cka is None:
            make_cka = make_accumulator
        if distributed:
            self.detector.all_reduce()
        report = self.detector.compute(list(labels))
        reused = self.cache.complete
        if distributed:  # every rank must take the same way (the accumulators all-reduce)
            from .accumulators.base import all_reduce_sum

            reused = bool(all_reduce_sum(torch.tensor([0.0 if reused else 1.0])).item() == 0)
        if not report.dropped_frames or not (self.without or reused):
            return WithoutMassive(report, list(matrix_labels))
        batches = self.cache.batches if reused else self._again(rerun)
        if not self.without:  # only linear CKA, from the held batches: which entries the frames dominate
            make_accumulator, with_too = make_cka, "cka" not in before
        else:
            with_too = False

        class _Named:  # the batch with its clips' names as keys (what the report's frames name)
            def __init__(self, b):
                self.hidden_states, self.mask, self.names = b.hidden_states, b.mask, names_of(b)

        out = recompute(report, matrix_labels, make_accumulator, (_Named(b) for b in batches), before=before,
                        reused=reused, block_threshold=block_threshold, all_reduce=distributed, with_too=with_too,
                        shown=self.without)
        self.cache = BatchCache(0)  # (the batches are not needed any more)
        return out

    def _again(self, rerun: Callable[[], Iterable[Any]]) -> Iterable[Any]:
        for b in rerun():
            keep = [i for i, n in enumerate(b.names) if n in self.used]
            if len(keep) == len(b.names):
                yield b
            elif keep:
                yield type(b)(tuple(h[keep] for h in b.hidden_states), b.mask[keep], [b.names[i] for i in keep])


__all__ = ["MassivePass", "MassiveActivations", "MassiveReport", "LayerReport", "MassiveFrames", "MassiveDim", "WithoutMassive",
           "BatchCache", "keep_mask", "recompute", "THRESHOLD", "CANDIDATES", "DOMINATED_CHANGE"]
