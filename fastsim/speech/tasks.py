"""Labelled audio for probes: the built-in tasks, label folders, and the one train/test split.

* ``task_clips(task)`` — the labelled clips of a task: ``"keywords"`` (espeak-ng keyword clips,
  1 s, a Speech Commands stand-in), ``"speakers"`` (espeak-ng voices), or a directory whose
  subfolders are the labels and hold the audio files.
* ``load_labelled(clips)`` — the clips read into memory once (``LoadedClips``).
* ``stratified_split(labels)`` — (train, test) indices: within each label, a seeded shuffle and
  ``test_fraction`` of its clips to the test set.
* ``probe_split(labels)`` — the labels as class indices and that split, as every probe trained
  here (``fastsim.speech.probes``, the mimic's no-distillation baseline) uses them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from . import synth
from .audio import AUDIO_SUFFIXES, SAMPLE_RATE, audio_files
from .runner import Failure, load_clips, no_usable_audio

TASKS = ("keywords", "speakers")


def task_clips(task: str, *, seed: int = 0) -> list[synth.Clip]:
    """Labelled clips of a built-in task ("keywords", "speakers") or of a directory of
    label subfolders holding audio files (searched recursively within each label)."""
    if task == "keywords":
        return synth.keyword_task(seed=seed)
    if task == "speakers":
        return synth.speaker_task(seed=seed)
    root = Path(os.fspath(task))
    if not root.is_dir():
        raise ValueError(f"task must be one of {', '.join(TASKS)} or a directory of label subfolders; "
                         f"{task!r} is neither")
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


@dataclass
class LoadedClips:
    """Clips read into memory once (16 kHz waves), their labels, and the ones that failed."""

    waves: list[tuple[str, np.ndarray]]
    labels: np.ndarray
    failures: list[Failure]

    @property
    def seconds(self) -> float:
        return sum(w.size for _, w in self.waves) / SAMPLE_RATE


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
    return LoadedClips([(paths[i], wave_of[paths[i]]) for i in kept], np.array([labels[i] for i in kept]), failures)


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
