"""Speech synthesized locally with espeak-ng: the offline stand-in for real recordings.

No weights or data can be downloaded on the machines fastsim is developed and tested on, so the
built-in analysis, pruning and distillation runs use speech that ``espeak-ng`` (Debian package
``espeak-ng``) speaks here: English sentences, keywords and voices at varied speed and pitch,
written as 16-bit wav files and cached (``$FASTSIM_CACHE`` or ``~/.cache/fastsim``), so a corpus is
generated once.

* ``sentences(n)`` — n utterances of read English (the default analysis corpus).
* ``keyword_task()`` — 1 s clips of ``KEYWORDS`` (a Speech Commands stand-in), labelled by word,
  with a fixed train/test split by speaker (``TEST_VARIANTS`` speak only test clips).
* ``speaker_task()`` — sentences by ``SPEAKERS`` voices, labelled by voice.

Each returns a list of ``Clip(path, label)``. Sentences are kept at espeak-ng's 22.05 kHz (the
normal loading path, ``fastsim.speech.audio.load_audio``, resamples them to 16 kHz); the 1 s
keyword clips are resampled once, when made, and stored at 16 kHz, so a task of thousands of
clips reads fast.
"""

from __future__ import annotations

import functools
import hashlib
import os
import random
import shutil
import subprocess
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

#: the 35 words of Speech Commands v0.02 (its 10 command words and digits first)
KEYWORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go", "zero", "one", "two", "three",
            "four", "five", "six", "seven", "eight", "nine", "bed", "bird", "cat", "dog", "happy", "house", "marvin",
            "sheila", "tree", "wow", "backward", "forward", "follow", "learn", "visual")
#: espeak-ng English accents the keyword task draws from
ACCENTS = ("en-us", "en-gb", "en-gb-scotland", "en-029", "en-us-nyc", "en-gb-x-rp", "en-gb-x-gbclan", "en-gb-x-gbcwmd")
#: espeak-ng voice variants: the keyword task's speakers (a clip's speaker is its variant)
VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "f1", "f2", "f3", "f4", "f5", "adam", "Alex", "Alicia",
            "Andrea", "Andy", "Annie", "aunty", "belinda", "benjamin", "caleb", "david", "ed", "edward", "john",
            "linda", "max", "Michael", "Mike", "paul", "quincy", "rob", "robert", "steph", "Storm", "zac", "grandpa",
            "grandma", "norbert", "shelby", "travis", "victor", "klatt")
#: the keyword task's held-out speakers: every fourth variant (11 of 45), never heard in the training split
TEST_VARIANTS = VARIANTS[3::4]
#: espeak-ng voices (language + variant) that sound distinct from each other.
SPEAKERS = ("en-us+m1", "en-us+f2", "en-gb+m3", "en-gb+f4", "en-gb-scotland+m5",
            "en-029+f1", "en-us-nyc+m7", "en-gb-x-rp+f5", "en-gb-x-gbclan+m2", "en-us+f3")
SENTENCES = (
    "The birch canoe slid on the smooth planks.",
    "Glue the sheet to the dark blue background.",
    "It is easy to tell the depth of a well.",
    "These days a chicken leg is a rare dish.",
    "Rice is often served in round bowls.",
    "The juice of lemons makes fine punch.",
    "The box was thrown beside the parked truck.",
    "The hogs were fed chopped corn and garbage.",
    "Four hours of steady work faced us.",
    "A large size in stockings is hard to sell.",
    "The boy was there when the sun rose.",
    "A rod is used to catch pink salmon.",
    "The source of the huge river is the clear spring.",
    "Kick the ball straight and follow through.",
    "Help the woman get back to her feet.",
    "A pot of tea helps to pass the evening.",
    "Smoky fires lack flame and heat.",
    "The soft cushion broke the man's fall.",
    "The salt breeze came across from the sea.",
    "The girl at the booth sold fifty bonds.",
)


@dataclass(frozen=True)
class Clip:
    """One synthesized utterance: its wav file and its label (word, voice or sentence number)."""

    path: str
    label: str
    #: the clip's fixed split ("train", "validation" or "test") where its task defines one, else None
    split: str | None = None


class SynthesisError(RuntimeError):
    """espeak-ng is missing or failed."""


def espeak_available() -> bool:
    """Whether espeak-ng is on PATH here."""
    return shutil.which("espeak-ng") is not None


def espeak() -> str:
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise SynthesisError(
            "espeak-ng is not installed; the built-in offline audio needs it "
            "(Debian/Ubuntu: apt-get install espeak-ng), or pass your own audio files"
        )
    return exe


@functools.cache
def _voice_names() -> tuple[frozenset, frozenset]:
    """(languages, variants) espeak-ng knows; it would silently fall back to its default voice."""
    def column(args: list[str], index: int) -> frozenset:
        out = subprocess.run([espeak(), *args], capture_output=True, text=True).stdout.splitlines()[1:]
        return frozenset(line.split()[index].split("/")[-1] for line in out if len(line.split()) > index)

    return column(["--voices"], 1), column(["--voices=variant"], 4)


def check_voice(voice: str) -> str:
    """Raise SynthesisError unless voice is LANGUAGE or LANGUAGE+VARIANT that espeak-ng has."""
    language, _, variant = voice.partition("+")
    languages, variants = _voice_names()
    if language not in languages or (variant and variant not in variants):
        raise SynthesisError(f"espeak-ng has no voice {voice!r} (see espeak-ng --voices and --voices=variant)")
    return voice


def cache_dir() -> Path:
    root = os.environ.get("FASTSIM_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "fastsim")
    return Path(root) / "speech"


def synthesize(text: str, path: str | os.PathLike, *, voice: str = "en-us", speed: int = 160, pitch: int = 50) -> str:
    """Speak text into a wav file (espeak-ng: speed in words per minute, pitch 0-99)."""
    check_voice(voice)
    path = os.fspath(path)
    tmp = f"{path}.{os.getpid()}.tmp.wav"
    cmd = [espeak(), "-v", voice, "-s", str(int(speed)), "-p", str(int(pitch)), "-w", tmp, text]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0 or not os.path.exists(tmp) or os.path.getsize(tmp) <= 44:
        raise SynthesisError(f"espeak-ng failed for voice {voice!r}: {done.stderr.strip() or 'no audio written'}")
    os.replace(tmp, path)  # atomic: a cached file is always complete
    return path


def _fit_one_second(path: str) -> None:
    """Cut or zero-pad a clip to exactly 1 s at 16 kHz, the word centred (Speech Commands clips are 1 s)."""
    import soundfile

    from .audio import SAMPLE_RATE, resample

    x, rate = soundfile.read(path, dtype="float32")
    x, rate = resample(x, rate, SAMPLE_RATE), SAMPLE_RATE
    voiced = np.flatnonzero(np.abs(x) > 1e-3)
    if voiced.size:
        x = x[voiced[0] : voiced[-1] + 1]
    out = np.zeros(rate, dtype=np.float32)
    take = min(x.size, rate)
    start = (rate - take) // 2
    out[start : start + take] = x[:take]
    soundfile.write(path, out, rate, subtype="PCM_16")


def _corpus(name: str, items: list[tuple[str, str, str, int, int]], one_second: bool, root: Path | None) -> list[Clip]:
    """items: (label, text, voice, speed, pitch). Cached under a key of the whole item list."""
    made = (items, one_second, 16_000) if one_second else (items, one_second)  # (1 s clips: stored at 16 kHz)
    key = hashlib.sha1(repr(made).encode()).hexdigest()[:12]
    folder = (root or cache_dir()) / f"{name}-{key}"
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{i:04d}-{label.replace(' ', '_').replace('+', '_')}.wav" for i, (label, *_) in enumerate(items)]

    def make(i: int) -> None:  # (a cached file is always complete: written under another name, then renamed)
        _, text, voice, speed, pitch = items[i]
        if not one_second:
            synthesize(text, paths[i], voice=voice, speed=speed, pitch=pitch)
            return
        raw = paths[i].with_name(paths[i].name + ".raw.wav")
        synthesize(text, raw, voice=voice, speed=speed, pitch=pitch)
        _fit_one_second(str(raw))
        os.replace(raw, paths[i])

    missing = [i for i, path in enumerate(paths) if not path.exists()]
    if missing:  # espeak-ng processes, two at a time (each one is a single-threaded program)
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=min(2, len(missing))) as pool:
            list(pool.map(make, missing))
    return [Clip(str(path), label) for path, (label, *_) in zip(paths, items)]


def sentences(n: int = 24, *, seed: int = 0, root: Path | None = None) -> list[Clip]:
    """n read sentences, cycling through the sentence list and the voices, at varied speed and pitch."""
    if n < 1:
        raise ValueError(f"n must be >= 1; got {n}")
    rng = random.Random(seed)
    items = [
        (f"s{i % len(SENTENCES):02d}", SENTENCES[i % len(SENTENCES)], SPEAKERS[i % len(SPEAKERS)],
         rng.randint(130, 200), rng.randint(30, 70))
        for i in range(n)
    ]
    return _corpus("sentences", items, False, root)


def keyword_task(per_word: int = 12, *, words: int = len(KEYWORDS), seed: int = 0, root: Path | None = None,
                 test_fraction: float = 0.3) -> list[Clip]:
    """1 s keyword clips: `per_word` takes of each of the first `words` keywords (labels: the words).

    Each take is spoken in a random accent (``ACCENTS``) and voice variant (``VARIANTS``) at a random
    speed (110-240 wpm) and pitch (10-90). The split is fixed, by speaker as in Speech Commands: the
    first round(test_fraction * per_word) takes of every word (at least one, never all) are test
    clips spoken by ``TEST_VARIANTS`` only, the rest training clips by the other variants (``Clip.split``)."""
    if not 2 <= words <= len(KEYWORDS) or per_word < 2:
        raise ValueError(f"words must be in [2, {len(KEYWORDS)}] and per_word >= 2; got {words}, {per_word}")
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1); got {test_fraction}")
    rng = random.Random(seed)
    n_test = min(per_word - 1, max(1, round(test_fraction * per_word)))
    train_variants = [v for v in VARIANTS if v not in TEST_VARIANTS]
    items, splits = [], []
    for take in range(per_word):
        split = "test" if take < n_test else "train"
        for w in KEYWORDS[:words]:
            variant = rng.choice(TEST_VARIANTS if split == "test" else train_variants)
            items.append((w, w, f"{rng.choice(ACCENTS)}+{variant}", rng.randint(110, 240), rng.randint(10, 90)))
            splits.append(split)
    return [replace(c, split=s) for c, s in zip(_corpus("keywords", items, True, root), splits)]


def speaker_task(per_speaker: int = 10, *, speakers: int = len(SPEAKERS), seed: int = 0, root: Path | None = None) -> list[Clip]:
    """Sentences by each of the first `speakers` voices (`per_speaker` each, different sentences,
    speed 140-190 wpm and pitch jittered by ±8 around the voice's own 50). Labels are the voices."""
    if not 2 <= speakers <= len(SPEAKERS) or per_speaker < 1:
        raise ValueError(f"speakers must be in [2, {len(SPEAKERS)}] and per_speaker >= 1; got {speakers}, {per_speaker}")
    rng = random.Random(seed)
    items = [(v, SENTENCES[(j * 7 + s) % len(SENTENCES)], v, rng.randint(140, 190), 50 + rng.randint(-8, 8))
             for j in range(per_speaker) for s, v in enumerate(SPEAKERS[:speakers])]
    return _corpus("speakers", items, False, root)
