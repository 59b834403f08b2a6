"""Audio in: files (wav, flac, ogg through soundfile) or arrays, as mono float32 at 16 kHz.

``load_audio`` reads one clip; ``resample`` changes its rate with a band-limited (Kaiser-windowed
sinc) polyphase filter; ``audio_files`` finds the audio files in a directory. Problems are raised as ``AudioError`` with the file's name in the
message, so a long run can report and skip one bad file.
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np
import torch

#: The rate every speech encoder here expects.
SAMPLE_RATE = 16_000
#: File endings taken as audio when a directory is searched.
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif")
#: Sample rates outside this range are rejected as a likely mistake (e.g. kHz given as Hz).
MIN_RATE, MAX_RATE = 1_000, 384_000
#: Clips whose peak magnitude exceeds this are rejected as not audio. Float audio is nominally
#: within +-1; even integer PCM stored unscaled as float (32-bit: +-2.1e9) stays below it, while a
#: corrupt float file can hold values near the float32 maximum (3.4e38), where resampling and the
#: per-clip normalization overflow to Inf and NaN. Below 1e10 a clip of any length is safe: its
#: float32 sum of squares stays far under the float32 maximum.
MAX_AMPLITUDE = 1e10


def audio_files(folder: str | os.PathLike) -> list[str]:
    """The audio files (by ``AUDIO_SUFFIXES``) under a directory, recursively, as sorted paths."""
    return sorted(
        os.path.join(root, f) for root, _, files in os.walk(os.fspath(folder)) for f in files
        if f.lower().endswith(AUDIO_SUFFIXES)
    )


class AudioError(ValueError):
    """A clip that cannot be used: unreadable, empty, silent-length, or with a wrong sample rate."""


def _check_rate(name: str, rate: Any) -> int:
    if isinstance(rate, bool) or not isinstance(rate, (int, np.integer)) or not MIN_RATE <= int(rate) <= MAX_RATE:
        raise AudioError(f"{name} must be an integer sample rate in Hz between {MIN_RATE} and {MAX_RATE}; got {rate!r}")
    return int(rate)


def _kaiser_sinc_bank(up: int, down: int, zero_crossings: int = 16, beta: float = 8.6) -> tuple[np.ndarray, int]:
    """Filter bank (up, down + 2 width) for resampling by up/down (coprime), and width.

    Output sample n = m*up + i sits at input time t = m*down + i*down/up; it is
    sum_r x[m*down + r] h(r - i*down/up) over r in [-width, down + width), with h a low-pass
    windowed sinc whose cutoff is the lower of the two Nyquist rates (times 0.97 roll-off)."""
    cutoff = min(1.0, up / down) * 0.97  # fraction of the input Nyquist rate
    width = int(math.ceil(zero_crossings / cutoff))
    r = np.arange(-width, down + width, dtype=np.float64)
    u = r[None, :] - (np.arange(up, dtype=np.float64) * down / up)[:, None]
    window = np.where(np.abs(u) <= width, np.i0(beta * np.sqrt(np.clip(1 - (u / width) ** 2, 0, 1))) / np.i0(beta), 0.0)
    return cutoff * np.sinc(cutoff * u) * window, width


def resample(x: Any, orig_rate: int, new_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Resample a 1-D signal from orig_rate to new_rate (band-limited; float32 out).

    The output has ceil(len * new_rate / orig_rate) samples; sample n is the band-limited signal
    at time n / new_rate."""
    orig_rate, new_rate = _check_rate("orig_rate", orig_rate), _check_rate("new_rate", new_rate)
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 1:
        raise AudioError(f"resample takes a 1-D signal; got shape {x.shape}")
    if orig_rate == new_rate or x.size == 0:
        return x.copy()
    g = math.gcd(orig_rate, new_rate)
    up, down = new_rate // g, orig_rate // g
    bank, width = _kaiser_sinc_bank(up, down)
    n_out = -(-x.size * up // down)
    blocks = -(-n_out // up)  # output blocks of `up` samples; block m starts at input m*down
    need = (blocks - 1) * down + down + 2 * width
    padded = np.zeros(need, dtype=np.float32)
    padded[width : width + x.size] = x
    with torch.no_grad():
        y = torch.nn.functional.conv1d(
            torch.from_numpy(padded)[None, None],
            torch.from_numpy(bank.astype(np.float32))[:, None, :],
            stride=down,
        )  # (1, up, blocks)
    return y[0, :, :blocks].T.reshape(-1)[:n_out].numpy().copy()


def load_audio(source: Any, sample_rate: int | None = None, *, name: str | None = None) -> np.ndarray:
    """One clip as mono float32 at 16 kHz.

    source: a path (any format soundfile reads: wav, flac, ogg, ...) or a 1-D array / tensor
    (then ``sample_rate`` is required). Multi-channel audio is averaged to mono.
    Raises AudioError naming the file for unreadable, empty or non-finite audio, sample values
    beyond ``MAX_AMPLITUDE`` and bad rates."""
    if isinstance(source, (str, os.PathLike)):
        import soundfile

        label = name or os.fspath(source)
        if sample_rate is not None:
            raise AudioError(f"{label}: sample_rate is read from the file; pass it only with arrays")
        try:
            data, rate = soundfile.read(os.fspath(source), dtype="float32", always_2d=True)
        except Exception as e:  # soundfile raises LibsndfileError, RuntimeError, OSError...
            raise AudioError(f"{label}: cannot read audio ({type(e).__name__}: {e})") from None
        data = data.mean(1)
    else:
        label = name or "audio array"
        if sample_rate is None:
            raise AudioError(f"{label}: sample_rate is required with an array (fastsim resamples to {SAMPLE_RATE} Hz)")
        if isinstance(source, torch.Tensor):
            source = source.detach().cpu().numpy()
        data = np.asarray(source)
        if data.dtype.kind not in "fiu":
            raise AudioError(f"{label}: audio must be numeric; got dtype {data.dtype}")
        if data.dtype.kind in "iu":  # PCM integers to [-1, 1)
            data = data / float(np.iinfo(data.dtype).max + 1)
        if data.ndim == 2:  # (samples, channels)
            data = data.mean(1)
        if data.ndim != 1:
            raise AudioError(f"{label}: audio must be 1-D (samples) or 2-D (samples, channels); got shape {data.shape}")
        rate = sample_rate
    rate = _check_rate(f"{label}: sample rate", rate)
    if data.size == 0:
        raise AudioError(f"{label}: the audio is empty (0 samples)")
    if not np.isfinite(data).all():
        raise AudioError(f"{label}: the audio contains NaN or Inf")
    peak = float(np.abs(data).max())
    if peak > MAX_AMPLITUDE:
        raise AudioError(f"{label}: sample values up to {peak:.3g} are not audio (float audio lies within +-1; "
                         f"fastsim takes peaks up to {MAX_AMPLITUDE:.0e}): a corrupt or mis-scaled file?")
    return resample(data.astype(np.float32), rate, SAMPLE_RATE)
