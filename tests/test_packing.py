"""fastsim.speech.packing: clips as probe inputs, one per input or packed 30 to a Whisper window, and the
features of a packed clip = the mean of the window's last hidden state over the clip's own frames."""

import numpy as np
import pytest
import torch

from fastsim.speech import whisper
from fastsim.speech.audio import AudioError
from fastsim.speech.models import random_model
from fastsim.speech.packing import Segment, pack, resolve_layout, segment_means
from fastsim.speech.probes import batch_features, input_batches, pooled_features
from fastsim.speech.runner import Failure
from fastsim.speech.synth import Clip
from fastsim.speech.tasks import load_labelled

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny_whisper():
    return whisper.random_whisper("tiny", d_model=32, encoder_layers=2, encoder_attention_heads=2, encoder_ffn_dim=64,
                                  decoder_layers=1, decoder_attention_heads=2, decoder_ffn_dim=64)


def waves(lengths, seed=0):
    rng = np.random.default_rng(seed)
    return [(i, (0.1 * rng.normal(size=n)).astype(np.float32)) for i, n in enumerate(lengths)]


def test_packed_windows_hold_thirty_one_second_clips_on_frame_boundaries():
    inputs = list(pack(waves([16000] * 65), "packed"))
    assert [len(x.segments) for x in inputs] == [30, 30, 5]
    assert [s.start for s in inputs[0].segments] == list(range(0, 1500, 50))
    assert inputs[0].wave.size == whisper.WINDOW_SAMPLES and inputs[2].wave.size == 5 * 16000
    assert [s.clip for x in inputs for s in x.segments] == list(range(65))  # in the order given
    # a clip that is not a whole number of frames is padded to one; the next one starts on a frame boundary
    odd = list(pack(waves([1000, 16000, 470_000, 600_000, 3000]), "packed"))
    assert [(s.clip, s.start, s.frames) for s in odd[0].segments] == [(0, 0, 4), (1, 4, 50)]
    np.testing.assert_array_equal(odd[0].wave[1000:1280], 0)
    assert odd[1].segments == [Segment(3)] and odd[1].wave.size == 600_000  # longer than a window: alone, at once
    # clip 2 (1469 frames) has no room left in window 0: it opens the next, and clip 4 (10 frames) joins it
    assert [(s.clip, s.start, s.frames) for s in odd[2].segments] == [(2, 0, 1469), (4, 1469, 10)]
    assert len(odd) == 3
    single = list(pack(waves([16000, 8000]), "clip"))
    assert [x.segments for x in single] == [[Segment(0)], [Segment(1)]]
    with pytest.raises(ValueError, match="layout must be one of"):
        list(pack(waves([16000]), "stacked"))


def test_a_packed_clip_is_the_mean_of_its_own_frames_of_the_window():
    model = tiny_whisper()
    clips = waves([16000, 11000, 16000])
    (inp,) = list(pack(clips, "packed"))
    rows = dict(batch_features(model, [inp]))
    enc = whisper.encode(model, [inp.wave])
    h = enc.last_hidden_state[0]
    for s in inp.segments:
        np.testing.assert_allclose(rows[s.clip], h[s.start : s.start + s.frames].mean(0).numpy(), rtol=1e-5, atol=1e-6)
    alone = dict(batch_features(model, list(pack(clips, "clip"))))  # each clip in its own 30 s window
    for i, w in clips:
        ref = whisper.encode(model, [w]).last_hidden_state[0, : -(-w.size // 320)].mean(0).numpy()
        np.testing.assert_allclose(alone[i], ref, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="outside"):
        segment_means(h[None, :10], torch.ones(1, 10, dtype=torch.bool), [inp])


def test_layouts_resolve_by_family():
    w2v = random_model("wav2vec2", "tiny")
    assert resolve_layout(tiny_whisper(), "auto") == "packed" and resolve_layout(tiny_whisper(), "clip") == "clip"
    assert resolve_layout(w2v, None) == "clip"
    with pytest.raises(ValueError, match="not a Whisper model"):
        resolve_layout(w2v, "packed")
    with pytest.raises(ValueError, match="layout must be one of"):
        resolve_layout(w2v, "windows")


def test_pooled_features_pack_whisper_clips_in_a_seeded_order(tmp_path):
    import soundfile

    model = tiny_whisper()
    clips = []
    for i, (_, w) in enumerate(waves([16000] * 40)):
        soundfile.write(tmp_path / f"{i}.wav", w, 16000, subtype="FLOAT")
        clips.append(Clip(str(tmp_path / f"{i}.wav"), "ab"[i % 2]))
    X, y = pooled_features(model, clips, batch_size=2)
    assert X.shape == (40, 32) and y.tolist() == [c.label for c in clips]
    loaded = load_labelled(clips)
    order = np.random.default_rng(0).permutation(40)
    (batch,) = list(input_batches(loaded, layout="packed", batch_size=2))  # two windows: 30 + 10 clips
    assert [s.clip for x in batch for s in x.segments] == order.tolist()
    again = dict(batch_features(model, batch))
    np.testing.assert_array_equal(np.stack([again[i] for i in range(40)]), X)
    Xc, _ = pooled_features(model, clips, layout="clip", batch_size=8)
    assert not np.allclose(Xc, X)  # neighbours and the full window change the features a little


class CountingClips:
    """A clip source that counts reads and fails on one clip."""

    def __init__(self, n, bad):
        self.labels = np.array(["a", "b"] * (n // 2))
        self.splits = None
        self.reads, self.bad, self.n = 0, bad, n

    def __len__(self):
        return self.n

    def name(self, i):
        return f"clip{i}"

    def wave(self, i):
        self.reads += 1
        if i == self.bad:
            raise AudioError(f"clip{i}: unreadable")
        return np.zeros(16000, np.float32)


def test_input_batches_read_clips_as_the_inputs_fill_and_skip_unreadable_ones():
    source = CountingClips(70, bad=5)
    failures: list[Failure] = []
    it = input_batches(source, layout="packed", batch_size=1, failures=failures)
    first = next(it)
    assert len(first[0].segments) == 30 and source.reads == 31 + (5 in [s.clip for s in first[0].segments])  # streamed
    rest = list(it)
    assert sum(len(x.segments) for b in [first, *rest] for x in b) == 69
    assert [f.source for f in failures] == ["clip5"] and source.reads == 70
    with pytest.raises(ValueError, match="batch_size"):
        next(input_batches(source, batch_size=0))
