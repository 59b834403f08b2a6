"""Speech synthesized locally with espeak-ng: the offline stand-in for real recordings.

No weights or data can be downloaded on the machines fastsim is developed and tested on, so the
built-in analysis, pruning and distillation runs use speech that ``espeak-ng`` (Debian package
``espeak-ng``) speaks here: English sentences, keywords and voices at varied speed and pitch,
written as 16-bit wav files and cached (``$FASTSIM_CACHE`` or ``~/.cache/fastsim``), so a corpus is
generated once.

* ``sentences(n)`` — n utterances of read English (the default analysis corpus).
* ``keyword_task()`` — 1 s clips of ``KEYWORDS`` (a Speech Commands stand-in), labelled by word.
* ``speaker_task()`` — sentences by ``SPEAKERS`` voices, labelled by voice.

Each returns a list of ``Clip(path, label)``; the wav files are at espeak-ng's 22.05 kHz, so the
normal loading path (``fastsim.speech.audio.load_audio``) resamples them to 16 kHz.
"""

from __future__ import annotations

import functools
import hashlib
import os
import random
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np

KEYWORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go", "zero", "one")
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


class SynthesisError(RuntimeError):
    """espeak-ng is missing or failed."""


def espeak() -> str:
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise SynthesisError(
            "espeak-ng is not installed; the built-in offline audio needs it "
            "(Debian/Ubuntu: apt-get install espeak-ng), or pass your own audio files"
        )
    return exe


@functools.lru_cache(maxsize=None)
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
    """Cut or zero-pad a clip to exactly 1 s, the word centred (Speech Commands clips are 1 s)."""
    import soundfile

    x, rate = soundfile.read(path, dtype="float32")
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
    key = hashlib.sha1(repr((items, one_second)).encode()).hexdigest()[:12]
    folder = (root or cache_dir()) / f"{name}-{key}"
    folder.mkdir(parents=True, exist_ok=True)
    clips = []
    for i, (label, text, voice, speed, pitch) in enumerate(items):
        path = folder / f"{i:04d}-{label.replace(' ', '_').replace('+', '_')}.wav"
        if not path.exists():
            synthesize(text, path, voice=voice, speed=speed, pitch=pitch)
            if one_second:
                _fit_one_second(str(path))
        clips.append(Clip(str(path), label))
    return clips


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


def keyword_task(per_word: int = 12, *, words: int = len(KEYWORDS), seed: int = 0, root: Path | None = None) -> list[Clip]:
    """1 s keyword clips: `per_word` takes of each of the first `words` keywords, each by a voice
    from SPEAKERS at a random speed (120-220 wpm) and pitch (20-80). Labels are the words."""
    if not 2 <= words <= len(KEYWORDS) or per_word < 1:
        raise ValueError(f"words must be in [2, {len(KEYWORDS)}] and per_word >= 1; got {words}, {per_word}")
    rng = random.Random(seed)
    items = [(w, w, rng.choice(SPEAKERS), rng.randint(120, 220), rng.randint(20, 80))
             for _ in range(per_word) for w in KEYWORDS[:words]]
    return _corpus("keywords", items, True, root)


def speaker_task(per_speaker: int = 10, *, speakers: int = len(SPEAKERS), seed: int = 0, root: Path | None = None) -> list[Clip]:
    """Sentences by each of the first `speakers` voices (`per_speaker` each, different sentences,
    speed 140-190 wpm and pitch jittered by ±8 around the voice's own 50). Labels are the voices."""
    if not 2 <= speakers <= len(SPEAKERS) or per_speaker < 1:
        raise ValueError(f"speakers must be in [2, {len(SPEAKERS)}] and per_speaker >= 1; got {speakers}, {per_speaker}")
    rng = random.Random(seed)
    items = [(v, SENTENCES[(j * 7 + s) % len(SENTENCES)], v, rng.randint(140, 190), 50 + rng.randint(-8, 8))
             for j in range(per_speaker) for s, v in enumerate(SPEAKERS[:speakers])]
    return _corpus("speakers", items, False, root)
