"""fastsim.massive: the streaming detector against a brute-force float64 computation on synthetic
hidden states with planted massive frames and dimensions; merging; the completeness bound; the
matrices without the massive frames through analyze(); and Whisper base's real massive activation
(layers 4-5, one dimension at |x| ≈ 300 on one frame) when its weight packages are installed."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fastsim import reference
from fastsim.massive import MassiveActivations, MassiveReport, keep_mask

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def planted(seed=0, B=5, T=40, D=16, L=3):
    """Batches of (B, T, D) states for L layers with a ragged mask; layer 1 gets two adjacent
    massive frames (clip 'c2', frames 7-8, dim 5 at about -300), layer 2 a massive dimension (dim 3,
    large on every frame) and one massive frame elsewhere (clip 'c4', frame 30, dim 9)."""
    rng = np.random.default_rng(seed)
    batches = []
    for k in range(3):
        lengths = rng.integers(T // 2, T + 1, size=B)
        mask = torch.arange(T)[None, :] < torch.as_tensor(lengths)[:, None]
        states = [torch.as_tensor(rng.normal(size=(B, T, D)) + 2.0, dtype=torch.float32) for _ in range(L)]
        names = [f"c{k * B + b}" for b in range(B)]
        if k == 0:
            mask[2, :9] = True
            states[1][2, 7, 5], states[1][2, 8, 5] = -300.0, -280.0
            states[2][:, :, 3] *= 40.0
        if k == 0:
            mask[4, :31] = True
            states[2][4, 30, 9] = 900.0
        batches.append((states, mask, names))
    return batches


def brute_force(batches, threshold):
    """Per layer: {(clip, frame): share}, {dim: share}, by stacking every valid frame in float64."""
    L = len(batches[0][0])
    out = []
    for layer in range(L):
        rows, ids = [], []
        for states, mask, names in batches:
            for b, t in mask.nonzero().tolist():
                rows.append(states[layer][b, t].double().numpy())
                ids.append((names[b], t))
        X = np.stack(rows)
        U = X - X.mean(0)
        total = (U**2).sum()
        frame = {ids[i]: float((U[i] ** 2).sum() / total) for i in range(len(ids))}
        dims = {d: float((U[:, d] ** 2).sum() / total) for d in range(X.shape[1])}
        out.append(({k: v for k, v in frame.items() if v > threshold}, {d: v for d, v in dims.items() if v > threshold},
                    X, ids, U))
    return out


def test_detector_equals_brute_force_on_planted_frames_and_dims():
    batches = planted()
    det = MassiveActivations(threshold=0.1, candidates=8)
    for states, mask, names in batches:
        det.update(states, mask, names)
    report = det.compute(["input", "1", "2"])
    truth = brute_force(batches, 0.1)
    for lay, (frames, dims, X, _ids, U) in zip(report.layers, truth):
        assert lay.complete and lay.frames == X.shape[0]
        got = {(g.clip, g.first + i): s for g in lay.groups for i, s in enumerate(g.shares)}
        assert got.keys() == frames.keys()
        for key in frames:
            assert got[key] == pytest.approx(frames[key], rel=1e-9)
        assert {d.dim: d.share for d in lay.dims} == pytest.approx(dims, rel=1e-9)
        for d in lay.dims:
            assert d.max_abs == pytest.approx(np.abs(X[:, d.dim]).max(), rel=1e-12)
        assert lay.variance == pytest.approx((U**2).sum() / X.shape[0], rel=1e-9)
    assert report.layers[0].groups == [] and report.layers[0].dims == []
    (g,) = report.layers[1].groups  # two adjacent frames, one range
    assert (g.clip, g.first, g.last, g.dims, g.value) == ("c2", 7, 8, [5], -300.0)
    assert g.share == pytest.approx(sum(truth[1][0].values()), rel=1e-9) and g.share > 0.5
    assert sorted(d.dim for d in report.layers[2].dims) == [3, 9]  # (the 900 frame makes dim 9 massive too)
    assert [(g.clip, g.first, g.dims) for g in report.layers[2].groups] == [("c4", 30, [9])]
    assert report.drop() == {"c2": {7, 8}, "c4": {30}}
    js = report.to_json()
    assert js["layers"][1]["groups"][0]["seconds"] == [0.14, 0.18] and js["dropped_frames"] == {"c2": [7, 8], "c4": [30]}
    assert any("layer 1: dim 5 at |x| = 300.0" in line and "frames 7-8" in line for line in report.lines())


def test_merge_equals_one_pass_and_the_bound_says_when_candidates_are_too_few():
    batches = planted(seed=1)
    whole = MassiveActivations(candidates=8)
    parts = [MassiveActivations(candidates=8) for _ in range(2)]
    for i, (states, mask, names) in enumerate(batches):
        whole.update(states, mask, names)
        parts[i % 2].update(states, mask, names)
    merged = parts[0].merge(parts[1]).compute()
    one = whole.compute()
    for a, b in zip(merged.layers, one.layers):
        assert [(g.clip, g.first, g.last) for g in a.groups] == [(g.clip, g.first, g.last) for g in b.groups]
        assert [g.share for g in a.groups] == pytest.approx([g.share for g in b.groups], rel=1e-9)
        assert [d.share for d in a.dims] == pytest.approx([d.share for d in b.dims], rel=1e-9)
        assert a.complete
    # one candidate for two massive frames: the second cannot be certified absent
    few = MassiveActivations(threshold=0.1, candidates=1)
    for states, mask, names in batches:
        few.update(states, mask, names)
    lay = few.compute().layers[1]
    assert not lay.complete and lay.bound > 0.1
    assert any("may be incomplete" in line for line in few.compute().lines())


def test_keep_mask_and_errors():
    mask = torch.ones(2, 5, dtype=torch.bool)
    mask[1, 4] = False
    out = keep_mask(mask, ["a", "b"], {"b": {0, 3, 9}})
    assert out.tolist() == [[True] * 5, [False, True, True, False, False]] and mask[1, 0]
    with pytest.raises(ValueError, match="threshold"):
        MassiveActivations(threshold=1.5)
    with pytest.raises(ValueError, match="names"):
        MassiveActivations().update([torch.zeros(2, 3, 4)], None, ["a"])
    with pytest.raises(ValueError, match="saw no frames"):
        MassiveActivations().compute()
    assert isinstance(MassiveActivations().update([torch.randn(1, 4, 2)]).compute(), MassiveReport)


def test_analyze_reports_them_and_recomputes_the_matrices_without_them():
    pytest.importorskip("transformers")
    from fastsim.analysis import analyze
    from fastsim.speech import whisper
    from fastsim.speech.audio import SAMPLE_RATE

    model = whisper.random_whisper("tiny", d_model=32, encoder_layers=2, encoder_attention_heads=2, encoder_ffn_dim=64,
                                   decoder_layers=1, decoder_attention_heads=2, decoder_ffn_dim=64)
    with torch.no_grad():  # plant a massive activation: a huge value at one position of the stack input
        model.embed_positions.weight[5, 7] = 2000.0
    rng = np.random.default_rng(0)
    waves = [(0.1 * rng.normal(size=n)).astype(np.float32) for n in (4000, 6000, 9000)]
    res = analyze(model, waves, sample_rate=SAMPLE_RATE, metrics=("cosine", "cka"), without_massive=True)
    first = res.massive.report.layers[0]
    assert [(g.first, g.dims) for g in first.groups] == [(5, [7])] * 3  # frame 5 of every clip, dim 7
    w = res.massive
    assert w.frames == res.frames - 3 and w.reused
    # the recomputed matrices equal the reference on the stored states without those frames
    kept = [[], [], []]
    for wave in waves:
        enc = whisper.encode(model, [wave])
        for layer, h in enumerate(enc.hidden_states):
            rows = h[0].double().numpy()
            kept[layer].append(np.delete(rows, 5, axis=0))
    layers = [np.concatenate(k) for k in kept]
    np.testing.assert_allclose(w.matrices["cka"], reference.similarity_matrix(layers, "cka"), atol=2e-6)
    np.testing.assert_allclose(w.matrices["cosine"], reference.similarity_matrix(layers, "cosine"), atol=2e-6)
    # the residual stream carries it through layer 1; the final layer norm (layer 2's output) removes it,
    # so CKA of the last layer with the two others is what it dominates
    assert [g.first for g in res.massive.report.layers[1].groups] == [5] * 3 and not res.massive.report.layers[2].groups
    assert {(a, b) for a, b, _, _ in w.dominated()} == {("input", "2"), ("1", "2")}
    js = res.to_json()["massive_activations"]
    assert js["without_massive"]["frames"] == w.frames and js["layers"][0]["groups"]
    text = res.summary()
    assert "massive activations" in text and "without the 3 massive frame(s)" in text
    # by default only linear CKA is recomputed (from the held batches), to say what the frames dominate,
    # also when CKA is not among the metrics asked for
    plain = analyze(model, waves, sample_rate=SAMPLE_RATE, metrics=("cosine",))
    assert not plain.massive.shown and list(plain.massive.matrices) == ["cka"] and plain.massive.arrays() == {}
    np.testing.assert_allclose(plain.massive.matrices["cka"], w.matrices["cka"], atol=1e-12)
    got, want = plain.massive.dominated(), w.dominated()
    assert [(a, b) for a, b, _, _ in got] == [(a, b) for a, b, _, _ in want]
    np.testing.assert_allclose([v for *_, x, y in got for v in (x, y)], [v for *_, x, y in want for v in (x, y)], atol=1e-12)
    assert any("linear CKA without the 3 massive frame(s) (of 61): dominated by them" in line
               for line in plain.massive.lines())
    # the rerun path (the batches did not fit in memory) gives the same matrices
    from fastsim import massive

    old = massive.CACHE_BYTES
    try:
        massive.CACHE_BYTES = 1
        again = analyze(model, waves, sample_rate=SAMPLE_RATE, metrics=("cosine", "cka"), without_massive=True)
        unsaid = analyze(model, waves, sample_rate=SAMPLE_RATE, metrics=("cka",))
    finally:
        massive.CACHE_BYTES = old
    assert not again.massive.reused
    assert unsaid.massive.matrices is None and "may be dominated" in "\n".join(unsaid.massive.lines())
    np.testing.assert_allclose(again.massive.matrices["cka"], w.matrices["cka"], atol=1e-12)


@pytest.fixture(scope="module")
def whisper_base():
    pytest.importorskip("transformers")
    from fastsim.speech import whisper

    try:
        whisper.named_model_sources("whisper-base")
    except whisper.WhisperWeightsMissing as e:
        pytest.skip(str(e))
    return whisper.load_whisper("whisper-base")


def test_whisper_base_has_a_massive_activation_in_layers_4_and_5(whisper_base):
    """Real weights on espeak-ng sentences: one frame where dimension 388 reaches |x| ≈ 300 in
    layers 4 and 5 (the final layer norm removes it), carrying a large share of their variance;
    linear CKA of layer 4 with the first block rises by > 0.1 without it."""
    from fastsim.analysis import analyze
    from fastsim.speech import synth

    try:
        clips = synth.sentences(24, seed=0)
    except synth.SynthesisError as e:
        pytest.skip(str(e))
    chosen = [c.path for c in clips if c.path.endswith(("0015-s15.wav", "0003-s03.wav", "0001-s01.wav"))]
    res = analyze(whisper_base, chosen, metrics=("cka",), without_massive=True)
    by = {lay.label: lay for lay in res.massive.report.layers}
    for label in ("4", "5"):
        (g,) = by[label].groups
        assert g.clip.endswith("0015-s15.wav") and g.dims == [388] and g.magnitude > 150 and g.share > 0.3
    assert all(not by[label].groups for label in ("input", "1", "2", "3", "6"))
    w = res.massive
    i3, i4 = res.labels.index("3"), res.labels.index("4")
    assert w.matrices["cka"][i3, i4] - res.matrices["cka"][i3, i4] > 0.1
    assert ("3", "4") in {(a, b) for a, b, _, _ in w.dominated()}


def test_analyze_command_on_a_saved_whisper_writes_the_report_and_both_matrices(tmp_path, capsys):
    pytest.importorskip("transformers")
    sf = pytest.importorskip("soundfile")
    from fastsim import cli
    from fastsim.speech import whisper

    model = whisper.random_whisper("tiny", d_model=32, encoder_layers=2, encoder_attention_heads=2, encoder_ffn_dim=64,
                                   decoder_layers=1, decoder_attention_heads=2, decoder_ffn_dim=64)
    with torch.no_grad():
        model.embed_positions.weight[5, 7] = 2000.0
    model.save_pretrained(tmp_path / "model")
    rng = np.random.default_rng(1)
    (tmp_path / "audio").mkdir()
    for i, n in enumerate((4000, 6000, 9000)):
        sf.write(tmp_path / "audio" / f"c{i}.wav", (0.1 * rng.normal(size=n)).astype(np.float32), 16000)
    out = tmp_path / "out"
    assert cli.main(["analyze", str(tmp_path / "model"), str(tmp_path / "audio"), "--metrics", "cosine,cka",
                     "--without-massive", "--out", str(out), "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "massive activations" in text and "c0.wav frame 5" in text and "without massive frames" in text
    import json

    js = json.loads((out / "analysis.json").read_text())["massive_activations"]
    assert js["dropped_frames"] == {str(tmp_path / "audio" / f"c{i}.wav"): [5] for i in range(3)}
    assert js["without_massive"]["all_metrics"] and js["without_massive"]["cka_dominated"]
    assert set(np.load(out / "matrices.npz")) >= {"cka", "cka_without_massive", "cosine_without_massive"}
    assert (out / "heatmap_cka_without_massive.png").is_file()
    with pytest.raises(SystemExit, match="--massive-threshold"):
        cli.main(["analyze", str(tmp_path / "model"), str(tmp_path / "audio"), "--massive-threshold", "1.5"])
