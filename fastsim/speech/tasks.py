"""Labelled audio for probes: the built-in tasks, label folders, and the one train/test split.

* ``task_clips(task)`` — the labelled clips of a task: ``"keywords"`` (espeak-ng keyword clips,
  1 s, a Speech Commands stand-in), ``"speakers"`` (espeak-ng voices), or a directory whose
  subfolders are the labels and hold the audio files.
* ``load_labelled(clips)`` — the clips read into memory once (``LoadedClips``).
* ``StreamedClips(clips)`` — the same clips read from disk when they are needed (a task of any
  size, Speech Commands' 105 000 clips included; ``fastsim.speech.speech_commands``).
* ``stratified_split(labels)`` — (train, test) indices: within each label, a seeded shuffle and
  ``test_fraction`` of its clips to the test set.
* ``probe_split(labels)`` — the labels as class indices and that split, as every probe trained
  here (``fastsim.speech.probes``, the mimic's no-distillation baseline) uses them.
* ``fixed_split(labels, splits)`` — the task's own held-out split where its clips carry one
  (``Clip.split``: the keyword task's held-out speakers, Speech Commands' lists), else
  ``stratified_split`` with a fixed seed: the same test clips for every probe and every model.
* ``head_samples(labels, train, n)`` — n seeded, stratified subsamples of the training clips: the
  training sets of n probe heads, whose spread says how much the probe's own sample matters.

Both clip collections (``LoadedClips``, ``StreamedClips``) offer ``len``, ``labels``, ``splits``
(None when the task has no split of its own), ``name(i)`` and ``wave(i)``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import speech_commands, synth
from .audio import AUDIO_SUFFIXES, SAMPLE_RATE, audio_files
from .runner import Failure, load_clips, no_usable_audio

TASKS = ("keywords", "speakers")
#: takes of each word in the built-in keyword task (``synth.keyword_task``): 35 words x 40
KEYWORD_TAKES = 40
#: "speakers:DIR": the speaker task of a Speech Commands folder
SPEAKERS_PREFIX = "speakers:"


def task_clips(task: str, *, seed: int = 0) -> list[synth.Clip]:
    """Labelled clips of a task: a built-in one ("keywords", "speakers"), a Speech Commands v0.02
    folder (its keywords with the lists' split; "speakers:DIR" its speaker task:
    ``fastsim.speech.speech_commands``), or a directory of label subfolders holding audio files
    (searched recursively within each label)."""
    if task == "keywords":
        return synth.keyword_task(KEYWORD_TAKES, seed=seed)
    if task == "speakers":
        return synth.speaker_task(seed=seed)
    if task.startswith(SPEAKERS_PREFIX) and speech_commands.is_speech_commands(task[len(SPEAKERS_PREFIX):]):
        return speech_commands.speaker_clips(task[len(SPEAKERS_PREFIX):])
    if speech_commands.is_speech_commands(task):
        return speech_commands.keyword_clips(task)
    root = Path(os.fspath(task))
    if not root.is_dir():
        raise ValueError(f"task must be one of {', '.join(TASKS)}, a Speech Commands folder (speakers:DIR for its "
                         f"speaker task) or a directory of label subfolders; {task!r} is none of them")
    clips = []
    labels = 0
    for sub in sorted(p for p in root.iterdir() if p.is_dir()):
        files = audio_files(sub)
        labels += bool(files)
        clips += [synth.Clip(f, sub.name) for f in files]
    if labels < 2:
        raise ValueError(
            f"task directory {task!r} has {labels} label subfolder(s) with audio files ({', '.join(AUDIO_SUFFIXES)}); "
            f"a probe needs at least 2 (one subfolder per label, e.g. {task}/yes/*.wav, {task}/no/*.wav)"
        )
    return clips


SPLITS = ("train", "validation", "test")


def _splits(clips: Sequence[Any]) -> np.ndarray | None:
    """The clips' own splits (``Clip.split``), or None when not every clip has one."""
    splits = [getattr(c, "split", None) for c in clips]
    if not splits or any(v is None for v in splits):
        return None
    bad = sorted({v for v in splits if v not in SPLITS})
    if bad:
        raise ValueError(f"clips: split {bad[0]!r} is not one of {', '.join(SPLITS)}")
    return np.array(splits)


@dataclass
class LoadedClips:
    """Clips read into memory once (16 kHz waves), their labels, the ones that failed, and the
    clips' own splits (None: the task has none)."""

    waves: list[tuple[str, np.ndarray]]
    labels: np.ndarray
    failures: list[Failure]
    splits: np.ndarray | None = None

    @property
    def seconds(self) -> float:
        return sum(w.size for _, w in self.waves) / SAMPLE_RATE

    def __len__(self) -> int:
        return len(self.waves)

    def name(self, i: int) -> str:
        return self.waves[i][0]

    def wave(self, i: int) -> np.ndarray:
        return self.waves[i][1]


class StreamedClips:
    """Labelled clips (``Clip(path, label[, split])``s) read from disk one at a time, when asked
    (``wave(i)``, which raises ``AudioError`` for a file that cannot be used): nothing is held."""

    def __init__(self, clips: Sequence[Any]):
        clips = list(clips)
        if not clips:
            raise ValueError("clips: no clips given")
        self.paths = [os.fspath(c.path) for c in clips]
        self.labels = np.array([str(c.label) for c in clips])
        self.splits = _splits(clips)

    def __len__(self) -> int:
        return len(self.paths)

    def name(self, i: int) -> str:
        return self.paths[i]

    def wave(self, i: int) -> np.ndarray:
        read, failures = load_clips([self.paths[i]], strict=True)
        return read[0][1]


def load_labelled(clips: Sequence[Any]) -> LoadedClips:
    """Read labelled clips (``Clip(path, label)``s) once; unreadable ones are skipped and listed.
    Every listing is kept, in order: a file listed twice (under two labels, say) is read once and
    appears twice, with each listing's label."""
    if isinstance(clips, LoadedClips):
        return clips
    paths = [os.fspath(c.path) for c in clips]
    labels = [str(c.label) for c in clips]
    distinct = list(dict.fromkeys(paths))
    read, failures = load_clips(distinct)
    wave_of = dict(read)
    kept = [i for i, p in enumerate(paths) if p in wave_of]
    if not kept:
        raise no_usable_audio(len(paths), failures)
    splits = _splits(clips)
    return LoadedClips([(paths[i], wave_of[paths[i]]) for i in kept], np.array([labels[i] for i in kept]), failures,
                       None if splits is None else splits[kept])


def stratified_split(labels: np.ndarray, *, seed: int = 0, test_fraction: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) indices: within each label, a seeded shuffle and round(test_fraction * n)
    clips to the test set (at least one when the label has two or more clips, none when it has one)."""
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1); got {test_fraction}")
    rng = np.random.default_rng(seed)
    train, test = [], []
    for lab in sorted(set(labels.tolist())):
        idx = np.flatnonzero(labels == lab)
        idx = idx[rng.permutation(idx.size)]
        k = 0 if idx.size < 2 else min(idx.size - 1, max(1, int(round(test_fraction * idx.size))))
        test += idx[:k].tolist()
        train += idx[k:].tolist()
    return np.sort(np.array(train, dtype=np.int64)), np.sort(np.array(test, dtype=np.int64))


@dataclass
class ProbeSplit:
    """Labels as class indices (``classes`` sorted; ``y[i]`` is clip i's) and the train/test split."""

    classes: list[str]
    y: np.ndarray
    train: np.ndarray
    test: np.ndarray


def probe_split(labels: Any, *, seed: int = 0, test_fraction: float = 0.3) -> ProbeSplit:
    """The classes, the class index of every clip and ``stratified_split``'s (train, test); raises
    ValueError for fewer than 2 classes or when no clip is left for the test set."""
    y_str = np.asarray(labels).astype(str)
    classes = sorted(set(y_str.tolist()))
    if len(classes) < 2:
        raise ValueError(f"labels: a probe needs at least 2 classes; got {len(classes)}")
    y = np.array([classes.index(v) for v in y_str])
    train, test = stratified_split(y_str, seed=seed, test_fraction=test_fraction)
    if test.size == 0:
        raise ValueError("no clip left for the test set: every label has a single clip")
    return ProbeSplit(classes, y, train, test)


def fixed_split(labels: Any, splits: Any = None, *, test_fraction: float = 0.3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) indices of a task's held-out split: its own where ``splits`` is given (clips
    marked "train" train, "test" test; "validation" clips are in neither), else
    ``stratified_split(labels, seed=seed, test_fraction=test_fraction)``. Raises ValueError when
    either side is empty."""
    labels = np.asarray(labels).astype(str)
    if splits is not None:
        splits = np.asarray(splits).astype(str)
        if splits.shape != labels.shape:
            raise ValueError(f"splits: one per clip; got {splits.shape[0]} for {labels.shape[0]} clips")
        train, test = np.flatnonzero(splits == "train"), np.flatnonzero(splits == "test")
        where = "the task's own split"
    else:
        train, test = stratified_split(labels, seed=seed, test_fraction=test_fraction)
        where = f"a stratified split (test fraction {test_fraction})"
    if train.size == 0 or test.size == 0:
        raise ValueError(f"{where} leaves {train.size} training and {test.size} test clip(s); a probe needs both")
    if len(set(labels[train].tolist())) < 2:
        raise ValueError(f"{where}: the training clips have {len(set(labels[train].tolist()))} label(s); a probe needs at least 2")
    return train, test


def head_samples(labels: Any, train: Any, n: int, *, fraction: float = 0.8, seed: int = 0) -> list[np.ndarray]:
    """The training indices of n probe heads: head k takes, within each label, a shuffle seeded
    with seed + k and round(fraction * count) of its training clips (at least one), sorted."""
    if n < 1:
        raise ValueError(f"n (probe heads) must be >= 1; got {n}")
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1]; got {fraction}")
    labels = np.asarray(labels).astype(str)
    train = np.asarray(train, dtype=np.int64)
    out = []
    for k in range(n):
        rng = np.random.default_rng(seed + k)
        take = []
        for lab in sorted(set(labels[train].tolist())):
            idx = train[labels[train] == lab]
            idx = idx[rng.permutation(idx.size)]
            take += idx[: max(1, int(round(fraction * idx.size)))].tolist()
        out.append(np.sort(np.array(take, dtype=np.int64)))
    return out
