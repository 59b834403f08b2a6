"""fastsim.speech.audio: band-limited resampling and clip loading, with the errors a long run reports."""

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from fastsim.speech.audio import SAMPLE_RATE, AudioError, load_audio, resample

soundfile = pytest.importorskip("soundfile")  # optional: not on every machine (none on the GPU box)


def tones(rate: int, seconds: float, freqs=(440.0, 3000.0)) -> tuple[np.ndarray, callable]:
    def at(t):
        return sum(np.sin(2 * np.pi * f * t + i) / (i + 1) for i, f in enumerate(freqs))

    return at(np.arange(int(rate * seconds)) / rate), at


@pytest.mark.parametrize("rate", [8000, 11025, 22050, 44100, 48000, 16000])
def test_resampled_tones_match_the_signal_at_the_new_times(rate):
    x, at = tones(rate, 1.0)
    y = resample(x, rate, SAMPLE_RATE)
    assert y.dtype == np.float32
    assert y.size == -(-x.size * SAMPLE_RATE // rate)
    inner = slice(400, -400)  # away from the zero padding at both ends
    expected = at(np.arange(y.size) / SAMPLE_RATE)
    assert np.abs(y[inner] - expected[inner]).max() < 1e-4


def test_tones_above_the_new_nyquist_rate_are_removed():
    x, _ = tones(44100, 1.0, freqs=(11000.0,))  # above 8 kHz: must not alias into the 16 kHz signal
    y = resample(x, 44100, SAMPLE_RATE)
    assert np.sqrt(np.mean(y[400:-400] ** 2)) < 1e-3 * np.sqrt(np.mean(x**2))


@given(st.integers(1, 3000), st.sampled_from([8000, 22050, 32000, 48000]))
def test_resampled_length_and_finiteness(n, rate):
    y = resample(np.random.default_rng(n).normal(size=n), rate, SAMPLE_RATE)
    assert y.size == -(-n * SAMPLE_RATE // rate) and np.isfinite(y).all()


def test_load_audio_reads_files_to_mono_16k(tmp_path):
    x, _ = tones(22050, 0.5)
    stereo = np.stack([x, 0.5 * x], 1) * 0.4
    path = tmp_path / "clip.flac"
    soundfile.write(path, stereo, 22050, subtype="PCM_24")
    got = load_audio(path)
    mono = soundfile.read(path, dtype="float32")[0].mean(1)
    np.testing.assert_allclose(got, resample(mono, 22050), atol=1e-6)
    assert got.dtype == np.float32 and got.ndim == 1


def test_load_audio_takes_arrays_tensors_and_pcm_integers():
    x, _ = tones(16000, 0.25)
    np.testing.assert_allclose(load_audio(torch.from_numpy(x), 16000), x.astype(np.float32))
    pcm = (x / 2 * 32767).astype(np.int16)
    np.testing.assert_allclose(load_audio(pcm, 16000), pcm / 32768.0, atol=1e-7)


def test_bad_audio_is_reported_with_its_name(tmp_path):
    garbage = tmp_path / "garbage.wav"
    garbage.write_bytes(b"this is not audio at all")
    empty = tmp_path / "empty.wav"
    soundfile.write(empty, np.zeros(0), 16000)
    with pytest.raises(AudioError, match="garbage.wav: cannot read"):
        load_audio(garbage)
    with pytest.raises(AudioError, match="missing.wav: cannot read"):
        load_audio(tmp_path / "missing.wav")
    with pytest.raises(AudioError, match="empty.wav: the audio is empty"):
        load_audio(empty)
    with pytest.raises(AudioError, match="sample_rate is required"):
        load_audio(np.zeros(100))
    with pytest.raises(AudioError, match="sample rate"):
        load_audio(np.zeros(100), 16)  # kHz given as Hz
    with pytest.raises(AudioError, match="NaN or Inf"):
        load_audio(np.array([0.0, np.nan, 1.0]), 16000)
    with pytest.raises(AudioError, match="1-D .* or 2-D"):
        load_audio(np.zeros((2, 2, 2)), 16000)
    with pytest.raises(AudioError, match="read from the file"):
        load_audio(garbage, 16000)
