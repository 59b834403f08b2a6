"""A local copy of Speech Commands v0.02 (Warden 2018) as probe tasks, read from disk as needed.

The folder as the archive unpacks (``speech_commands_v0.02.tar.gz``): one folder per word
(``yes/``, ``no/``, ... 35 words) of 1 s, 16 kHz wav files named ``<speaker>_nohash_<n>.wav``,
``_background_noise_/`` (long noise recordings: not a class, never a clip), and the lists
``validation_list.txt`` and ``testing_list.txt`` (one ``word/file.wav`` per line) that fix the
split: a file in a list is in that split, every other file trains. The split is by speaker, so a
test speaker is never heard in training.

* ``keyword_clips(folder)`` — the keyword task: labels are the words, splits the lists'
  (``Clip.split``: "train", "validation", "test").
* ``speaker_clips(folder)`` — a speaker task from the speaker ids in the file names: the speakers
  with at least ``min_clips`` (50) clips; labels are the ids. The official split keeps each
  speaker on one side, so this task has its own: a file is a test clip when a hash of its name
  (word/file) falls in the lowest ``test_fraction`` (30 %) — fixed, whatever else the folder holds.

Only file names are listed here (about 105 000 for the full set); the audio is read when a probe
asks for a clip (``fastsim.speech.tasks.StreamedClips``). ``is_speech_commands(folder)`` says
whether a folder looks like one (it holds both lists); ``fastsim.speech.tasks.task_clips`` uses
it, so ``fastsim prune MODEL --task DIR`` takes such a folder (``--task speakers:DIR``: its
speaker task).
"""

from __future__ import annotations

import hashlib
import os
import re
from collections import Counter
from pathlib import Path

from .synth import Clip

LISTS = {"validation": "validation_list.txt", "test": "testing_list.txt"}
BACKGROUND = "_background_noise_"
#: speaker id and utterance number in a file name: ``0a7c2a8d_nohash_0.wav``
FILE_NAME = re.compile(r"^(?P<speaker>[0-9a-fA-F]+)_nohash_(?P<n>\d+)\.wav$")
MIN_SPEAKER_CLIPS = 50


class SpeechCommandsError(ValueError):
    """A folder that is not a usable Speech Commands copy (the message says what is missing)."""


def is_speech_commands(folder: str | os.PathLike) -> bool:
    root = Path(os.fspath(folder))
    return root.is_dir() and all((root / name).is_file() for name in LISTS.values())


def _read_list(root: Path, name: str) -> set[str]:
    with open(root / name, encoding="utf-8") as f:
        return {line.strip().replace("\\", "/") for line in f if line.strip()}


def _files(folder: str | os.PathLike) -> tuple[Path, list[tuple[str, str]]]:
    """(root, [(word, "word/file.wav")]) of every wav file in the word folders, sorted."""
    root = Path(os.fspath(folder))
    if not root.is_dir():
        raise SpeechCommandsError(f"{os.fspath(folder)!r} is not a directory")
    missing = [name for name in LISTS.values() if not (root / name).is_file()]
    if missing:
        raise SpeechCommandsError(f"{root}: not a Speech Commands folder: {', '.join(missing)} missing")
    out = []
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        if not entry.is_dir() or entry.name == BACKGROUND or entry.name.startswith("."):
            continue
        for f in sorted(os.scandir(entry.path), key=lambda e: e.name):
            if f.is_file() and f.name.lower().endswith(".wav"):
                out.append((entry.name, f"{entry.name}/{f.name}"))
    if not out:
        raise SpeechCommandsError(f"{root}: no word folder holds wav files")
    return root, out


def keyword_clips(folder: str | os.PathLike) -> list[Clip]:
    """Every clip of the word folders, labelled by word, with the lists' split."""
    root, files = _files(folder)
    listed = {split: _read_list(root, name) for split, name in LISTS.items()}
    clips = []
    for word, rel in files:
        split = "test" if rel in listed["test"] else "validation" if rel in listed["validation"] else "train"
        clips.append(Clip(str(root / rel), word, split))
    if len({c.label for c in clips}) < 2:
        raise SpeechCommandsError(f"{root}: {len({c.label for c in clips})} word folder(s) with clips; a probe needs 2")
    return clips


def _hashed_test(rel: str, test_fraction: float) -> bool:
    h = int(hashlib.sha1(rel.encode("utf-8")).hexdigest()[:8], 16)
    return h / 2**32 < test_fraction


def speaker_clips(folder: str | os.PathLike, *, min_clips: int = MIN_SPEAKER_CLIPS,
                  test_fraction: float = 0.3) -> list[Clip]:
    """The clips of speakers with at least ``min_clips`` clips (over all words), labelled by
    speaker id; split by a hash of each file's name (see the module docs). Files whose names
    carry no speaker id are left out."""
    if min_clips < 2:
        raise ValueError(f"min_clips must be >= 2; got {min_clips}")
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1); got {test_fraction}")
    root, files = _files(folder)
    named = []
    for _, rel in files:
        m = FILE_NAME.match(rel.rsplit("/", 1)[1])
        if m:
            named.append((m.group("speaker").lower(), rel))
    counts = Counter(s for s, _ in named)
    keep = {s for s, n in counts.items() if n >= min_clips}
    if len(keep) < 2:
        raise SpeechCommandsError(f"{root}: {len(keep)} speaker(s) with at least {min_clips} clips; a speaker task "
                                  f"needs 2")
    return [Clip(str(root / rel), s, "test" if _hashed_test(rel, test_fraction) else "train")
            for s, rel in named if s in keep]


__all__ = ["is_speech_commands", "keyword_clips", "speaker_clips", "SpeechCommandsError", "MIN_SPEAKER_CLIPS",
           "BACKGROUND", "LISTS"]
