"""fastsim.speech.synth: espeak-ng corpora (sentences, keywords, speakers), generated once and cached."""

import os

import numpy as np
import pytest

from fastsim.speech import synth
from fastsim.speech.audio import SAMPLE_RATE, load_audio


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("speech")


def test_keyword_clips_are_one_second_words(root):
    clips = synth.keyword_task(per_word=2, root=root)
    words = {c.label for c in clips}
    assert len(words) >= 10 and len(clips) == 2 * len(words)
    for c in clips[:12]:
        x = load_audio(c.path)
        assert x.size == SAMPLE_RATE  # 1 s at 16 kHz after resampling 22.05 kHz
        assert np.abs(x).max() > 0.05  # speech, not silence


def test_speaker_task_has_at_least_eight_distinct_voices(root):
    clips = synth.speaker_task(per_speaker=1, root=root)
    assert len({c.label for c in clips}) >= 8
    # the same sentence in two voices differs
    a = synth.synthesize("the same words", root / "a.wav", voice=synth.SPEAKERS[0])
    b = synth.synthesize("the same words", root / "b.wav", voice=synth.SPEAKERS[1])
    xa, xb = load_audio(a), load_audio(b)
    n = min(xa.size, xb.size)
    assert xa.size != xb.size or not np.allclose(xa[:n], xb[:n])


def test_corpora_are_cached(root):
    first = synth.sentences(3, root=root)
    stamps = [os.stat(c.path).st_mtime_ns for c in first]
    again = synth.sentences(3, root=root)
    assert [c.path for c in again] == [c.path for c in first]
    assert [os.stat(c.path).st_mtime_ns for c in again] == stamps


def test_bad_requests_raise():
    with pytest.raises(ValueError, match="words"):
        synth.keyword_task(words=1)
    with pytest.raises(ValueError, match="speakers"):
        synth.speaker_task(speakers=99)
    if not synth.espeak_available():
        pytest.skip("espeak-ng is not installed (the voice check asks it for its voices)")
    with pytest.raises(synth.SynthesisError, match="voice"):
        synth.synthesize("hello", "/tmp/fastsim-bad-voice.wav", voice="no-such-voice-xx")
