"""fastsim.prune: layer-removal hooks against physically smaller models, plans on planted
matrices, probes, and the sweep and command end to end on tiny models with espeak-ng speech."""

import copy
import json
import os
import re
import shutil

import numpy as np
import pytest
import torch

from fastsim.prune import STRATEGIES, kept_layers, plan, remove_layers, skip_layers, sweep
from fastsim.prune.plans import removal_order
from fastsim.prune.replay import recording, replayed_prefix
from fastsim.prune.surgery import find_layer_stack, storage_pointers
from fastsim.speech import synth, whisper
from fastsim.speech.inference import count_parameters
from fastsim.speech.models import load_model, padding_safe, random_model
from fastsim.speech.packing import pack
from fastsim.speech.probes import batch_features, fit_head, pooled_features, probe_accuracy
from fastsim.speech.tasks import StreamedClips, fixed_split, head_samples, stratified_split, task_clips

transformers = pytest.importorskip("transformers")  # optional: not on every machine (none on the GPU box)

FAMILIES = ("wav2vec2", "hubert", "wavlm", "data2vec-audio")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny(family, stable=False, seed=0):
    if family == "whisper":  # a 4-layer x 32 encoder with Whisper's framing (30 s windows, 1500 positions)
        return whisper.random_whisper("tiny", seed=seed, d_model=32, encoder_layers=4, encoder_attention_heads=2,
                                      encoder_ffn_dim=64, decoder_layers=1, decoder_attention_heads=2,
                                      decoder_ffn_dim=64)
    kw = dict(feat_extract_norm="layer", do_stable_layer_norm=True, conv_bias=True) if stable else {}
    return random_model(family, "tiny", seed=seed, **kw)


def bert(seed=0):
    cfg = transformers.BertConfig(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64,
                                  vocab_size=100, max_position_embeddings=64)
    torch.manual_seed(seed)
    return transformers.BertModel(cfg).eval()


def physically_smaller(model, removed):
    """An independent reference: a fresh model of the same class built with fewer layers, its
    weights loaded from the original's state dict with the layer numbers remapped (and WavLM's
    layer-0 position-bias table given to the new first layer, which is where a smaller WavLM keeps it)."""
    stack = find_layer_stack(model)
    keep = [i for i in range(len(stack.layers)) if i not in removed]
    cfg = copy.deepcopy(model.config)
    cfg.num_hidden_layers = len(keep)
    small = type(model)(cfg).eval()
    prefix = stack.path + "."
    new_index = {old: new for new, old in enumerate(keep)}
    state = {}
    for key, value in model.state_dict().items():
        if not key.startswith(prefix):
            state[key] = value
            continue
        old, rest = key[len(prefix):].split(".", 1)
        if int(old) in new_index:
            state[f"{prefix}{new_index[int(old)]}.{rest}"] = value
        elif int(old) == 0 and "rel_attn_embed" in rest:
            state[f"{prefix}0.{rest}"] = value
    missing, unexpected = small.load_state_dict(state, strict=True)
    assert not missing and not unexpected
    return small


def speech_input(model, seed=0):
    if whisper.is_whisper(model):  # log-mel features of two clips, each in its own 30 s window
        rng = np.random.default_rng(seed)
        return dict(input_features=whisper.log_mel([(0.1 * rng.normal(size=n)).astype(np.float32) for n in (6400, 4800)]))
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 6400, generator=g)
    if padding_safe(model):  # padding-safe: exercise the attention-mask path too
        mask = torch.ones(2, 6400, dtype=torch.long)
        mask[1, 4800:] = 0
        x[1, 4800:] = 0
        return dict(input_values=x, attention_mask=mask)
    return dict(input_values=x)


def run(model, inputs):
    with torch.no_grad():
        return model(**inputs, output_hidden_states=True)


CASES = [(f, False, r) for f in FAMILIES for r in ([0], [1, 3])] + \
        [("wav2vec2", True, [0]), ("hubert", True, [1, 3]), ("wavlm", True, [0]), ("wavlm", False, [0, 1, 2]),
         ("whisper", False, [0]), ("whisper", False, [1, 3])]


@pytest.mark.parametrize("family,stable,removed", CASES)
def test_skip_layers_equals_a_physically_smaller_model(family, stable, removed):
    model = tiny(family, stable)
    inputs = speech_input(model)
    ref = run(physically_smaller(model, removed), inputs)
    with skip_layers(model, removed) as kept:
        out = run(model, inputs)
        assert kept_layers(model) == kept == [i for i in range(4) if i not in removed]
        assert model.config.num_hidden_layers == len(kept)
    assert len(out.hidden_states) == len(ref.hidden_states) == 4 - len(removed) + 1
    torch.testing.assert_close(out.last_hidden_state, ref.last_hidden_state, rtol=1e-5, atol=1e-6)
    for a, b in zip(out.hidden_states, ref.hidden_states):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    full = run(model, inputs)
    assert not torch.allclose(full.last_hidden_state, out.last_hidden_state, atol=1e-4)  # the layers did matter


def test_bert_skip_and_remove_equal_a_physically_smaller_encoder(tmp_path):
    model = bert()
    ids = dict(input_ids=torch.tensor([[1, 5, 9, 17, 33, 2], [1, 7, 3, 2, 0, 0]]),
               attention_mask=torch.tensor([[1] * 6, [1, 1, 1, 1, 0, 0]]))
    removed = [0, 2]
    ref = run(physically_smaller(model, removed), ids)
    with skip_layers(model, removed):
        out = run(model, ids)
        assert [l.attention.self.layer_idx for l in model.encoder.layer] == [0, 1]
    assert [l.attention.self.layer_idx for l in model.encoder.layer] == [0, 1, 2, 3]
    torch.testing.assert_close(out.last_hidden_state, ref.last_hidden_state, rtol=1e-5, atol=1e-6)
    assert len(out.hidden_states) == 3
    pruned = remove_layers(copy.deepcopy(model), removed)
    torch.testing.assert_close(run(pruned, ids).last_hidden_state, ref.last_hidden_state, rtol=1e-5, atol=1e-6)
    pruned.save_pretrained(tmp_path)
    back = transformers.AutoModel.from_pretrained(tmp_path).eval()
    assert back.config.num_hidden_layers == 2 and kept_layers(back) == [1, 3]
    torch.testing.assert_close(run(back, ids).last_hidden_state, ref.last_hidden_state, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("family,stable,removed", [("wavlm", False, [0]), ("wavlm", True, [0, 3]), ("wav2vec2", False, [1, 2]),
                                                   ("hubert", True, [2]), ("data2vec-audio", False, [0, 3]),
                                                   ("whisper", False, [0, 2])])
def test_remove_layers_agrees_with_skip_and_round_trips(tmp_path, family, stable, removed):
    model = tiny(family, stable)
    inputs = speech_input(model)
    with skip_layers(model, removed):
        hooked = run(model, inputs)
    pruned = remove_layers(copy.deepcopy(model), removed)
    kept = [i for i in range(4) if i not in removed]
    assert pruned.config.num_hidden_layers == len(kept) and kept_layers(pruned) == kept
    torch.testing.assert_close(run(pruned, inputs).last_hidden_state, hooked.last_hidden_state, rtol=1e-5, atol=1e-6)
    pruned.save_pretrained(tmp_path)
    back = load_model(tmp_path, device="cpu")  # (a saved WhisperEncoder is not an AutoModel class)
    assert type(back) is type(model) and back.config.num_hidden_layers == len(kept) and kept_layers(back) == kept
    if family == "whisper":
        assert back.config.encoder_layers == len(kept) and len(back.layers) == len(kept)
    again = run(back, inputs)
    torch.testing.assert_close(again.last_hidden_state, hooked.last_hidden_state, rtol=1e-5, atol=1e-6)
    assert len(again.hidden_states) == len(kept) + 1
    # pruning a pruned model composes the bookkeeping: positions now, original indices reported
    remove_layers(back, [0])
    assert kept_layers(back) == kept[1:]


@pytest.mark.parametrize("family", FAMILIES + ("whisper",))
def test_exit_restores_bit_identical_outputs_and_nothing_is_copied(family):
    model = tiny(family)
    inputs = speech_input(model)
    before = run(model, inputs)
    pointers = storage_pointers(model)
    modules_before = list(model.modules())
    n_params = count_parameters(model)
    layer_params = count_parameters(find_layer_stack(model).layers[1])
    with skip_layers(model, [1, 2]):
        inside = {v for v in storage_pointers(model).values()}
        assert inside <= set(pointers.values())  # every tensor the pruned model uses is an original one
        assert count_parameters(model) == n_params - 2 * layer_params
        run(model, inputs)
    after = run(model, inputs)
    assert storage_pointers(model) == pointers
    assert list(model.modules()) == modules_before
    assert torch.equal(after.last_hidden_state, before.last_hidden_state)
    assert all(torch.equal(a, b) for a, b in zip(after.hidden_states, before.hidden_states))
    assert len(after.hidden_states) == 5 and model.config.num_hidden_layers == 4
    assert not hasattr(model.config, "fastsim_kept_layers") and kept_layers(model) == [0, 1, 2, 3]


def test_restored_when_the_body_raises_and_hidden_state_hooks_survive():
    model = tiny("wavlm")
    inputs = speech_input(model)
    # the first request for hidden states happens inside the block (transformers installs its
    # recording hooks lazily); the layers taken out must still be recorded afterwards
    with pytest.raises(RuntimeError, match="boom"):
        with skip_layers(model, [0, 2]):
            assert len(run(model, inputs).hidden_states) == 3
            raise RuntimeError("boom")
    assert len(model.encoder.layers) == 4 and not hasattr(model.encoder.layers[1].attention, "rel_attn_embed")
    out = run(model, inputs)
    assert len(out.hidden_states) == 5
    fresh = run(tiny("wavlm"), inputs)
    assert all(torch.equal(a, b) for a, b in zip(out.hidden_states, fresh.hidden_states))


def test_nested_skips_compose():
    model = tiny("hubert")
    inputs = speech_input(model)
    with skip_layers(model, [0]):
        with skip_layers(model, [1]) as kept:  # position 1 of [1, 2, 3] is original layer 2
            assert kept == [1, 3]
            nested = run(model, inputs)
    with skip_layers(model, [0, 2]):
        direct = run(model, inputs)
    assert torch.equal(nested.last_hidden_state, direct.last_hidden_state)
    assert kept_layers(model) == [0, 1, 2, 3]


def test_layer_list_errors_name_the_argument():
    model = tiny("wav2vec2")
    for bad, msg in [([4], "out of range"), ([1, 1], "more than once"), ([0, 1, 2, 3], "cannot remove all"),
                     ([-1], "out of range")]:
        with pytest.raises(ValueError, match=msg):
            with skip_layers(model, bad):
                pass
        with pytest.raises(ValueError, match=msg):
            remove_layers(model, bad)
    with pytest.raises(TypeError, match="layers"):
        with skip_layers(model, [1.0]):
            pass
    with pytest.raises(TypeError, match="layers"):
        remove_layers(model, 2)
    with pytest.raises(ValueError, match="num_hidden_layers"):
        with skip_layers(torch.nn.Linear(2, 2), [0]):
            pass
    assert len(model.encoder.layers) == 4


# ---------------------------------------------------------------- plans


def planted(blocks, L, inside=0.9, outside=0.2, input_sim=0.3):
    """(L+1) x (L+1) matrix with the input row: layers in each (first, last) block at `inside`."""
    S = np.full((L, L), outside)
    for a, b in blocks:
        S[a : b + 1, a : b + 1] = inside
    np.fill_diagonal(S, 1.0)
    full = np.full((L + 1, L + 1), input_sim)
    full[1:, 1:] = S
    full[0, 0] = 1.0
    return full


def test_block_plan_removes_inside_blocks_and_keeps_their_boundaries():
    S = planted([(0, 4), (6, 11)], 12)
    order = removal_order(S, "block")
    assert sorted(order) == [1, 2, 3, 7, 8, 9, 10]
    for n in range(len(order) + 1):
        removed = plan(S, n, "block")
        assert len(removed) == n and not {0, 4, 5, 6, 11} & set(removed)
        assert set(plan(S, max(n - 1, 0), "block")) <= set(removed)  # nested levels
    assert len(set(order[:2]) & {7, 8, 9, 10}) == 2  # the bigger block gives first
    with pytest.raises(ValueError, match="n_remove=8 is too large.*'block' can remove at most 7"):
        plan(S, 8, "block")
    # without the input row the same blocks come out
    assert plan(S[1:, 1:], 5, "block", include_input=False) == plan(S, 5, "block")


def test_adjacent_plan_is_greedy_on_successor_similarity():
    L = 6
    S = planted([], L, outside=0.1)
    for i, v in enumerate([0.3, 0.95, 0.5, 0.8, 0.2]):  # similarity of layer i to layer i + 1
        S[i + 1, i + 2] = S[i + 2, i + 1] = v
    S[2 + 1, 4 + 1] = S[4 + 1, 2 + 1] = 0.9  # layer 2 to layer 4, once layer 3 is gone
    order = removal_order(S, "adjacent")
    assert order[:3] == [1, 3, 2]  # 1 (0.95 to 2), then 3 (0.8 to 4), then 2 (0.9 to its new successor 4)
    assert 5 not in order  # the last layer has no successor
    assert plan(S, 2, "adjacent") == [1, 3]


def test_block_influence_is_one_minus_input_output_cosine_lowest_first():
    L = 5
    C = np.eye(L + 1)
    cos_in_out = [0.5, 0.99, 0.7, 0.95, 0.8]  # layer i: cosine(input, output) = C[i, i + 1]
    for i, v in enumerate(cos_in_out):
        C[i, i + 1] = C[i + 1, i] = v
    assert removal_order(C, "block_influence") == [1, 3, 4, 2]
    assert plan(C, 2, "block_influence") == [1, 3]
    with pytest.raises(ValueError, match="stack input row"):
        plan(C[1:, 1:], 1, "block_influence", include_input=False)


def test_order_strategies_random_and_explicit_lists():
    L = 7
    assert removal_order(None, "last", num_layers=L) == [6, 5, 4, 3, 2, 1]
    assert removal_order(None, "first", num_layers=L) == [1, 2, 3, 4, 5, 6]
    assert removal_order(None, "alternate", num_layers=L) == [1, 6, 2, 5, 3, 4]
    r = removal_order(None, "random", num_layers=L, seed=3)
    assert len(r) == L - 1 == len(set(r)) and r == removal_order(None, "random", num_layers=L, seed=3)
    assert r != removal_order(None, "random", num_layers=L, seed=4)
    assert plan(None, 2, [5, 2, 4], num_layers=L) == [2, 5]
    assert plan(planted([], L), 3, "first") == [1, 2, 3]
    assert set(STRATEGIES) == {"block", "adjacent", "block_influence", "last", "first", "alternate", "random"}


def test_plan_errors_name_the_argument():
    S = planted([(0, 3)], 6)
    with pytest.raises(ValueError, match="strategy must be one of"):
        plan(S, 1, "middle")
    with pytest.raises(ValueError, match="n_remove=6 is too large"):
        plan(S, 6, "last")
    with pytest.raises(ValueError, match="n_remove must be an integer"):
        plan(S, -1, "last")
    with pytest.raises(ValueError, match="num_layers=6: expected \\(7, 7\\).*include_input=False"):
        plan(S[1:, 1:], 1, "block", num_layers=6)
    with pytest.raises(ValueError, match="needs the similarity matrix"):
        plan(None, 1, "adjacent", num_layers=6)
    with pytest.raises(ValueError, match="strategy: layer index 9 is out of range"):
        plan(S, 1, [9])
    with pytest.raises(ValueError, match="square"):
        plan(np.ones((3, 4)), 1, "block")


# ---------------------------------------------------------------- probes and the sweep


def test_probe_accuracy_on_separable_and_on_shuffled_features():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.array(["a", "b", "c", "d"]), 20)
    centers = rng.normal(size=(4, 16)) * 4
    X = centers[np.repeat(np.arange(4), 20)] + rng.normal(size=(80, 16))
    assert probe_accuracy(X, labels) == 1.0
    assert probe_accuracy(X, labels, seed=1) == probe_accuracy(X, labels, seed=1)  # deterministic
    shuffled = np.mean([probe_accuracy(X, rng.permutation(labels), seed=s) for s in range(5)])
    assert shuffled < 0.5  # chance is 0.25
    train, test = stratified_split(labels, test_fraction=0.3)
    assert len(set(train) & set(test)) == 0 and len(train) + len(test) == 80
    assert all((labels[test] == lab).sum() == 6 for lab in "abcd")
    with pytest.raises(ValueError, match="at least 2 classes"):
        probe_accuracy(X, np.array(["a"] * 80))


@pytest.fixture(scope="module")
def small_keywords():
    try:
        return synth.keyword_task(per_word=6, words=4)
    except synth.SynthesisError as e:  # pragma: no cover - espeak-ng missing
        pytest.skip(str(e))


def test_task_clips_from_label_folders(tmp_path, small_keywords):
    for clip in small_keywords:
        os.makedirs(tmp_path / "data" / clip.label, exist_ok=True)
        shutil.copy(clip.path, tmp_path / "data" / clip.label / os.path.basename(clip.path))
    os.makedirs(tmp_path / "data" / "empty")
    clips = task_clips(str(tmp_path / "data"))
    assert len(clips) == len(small_keywords) and {c.label for c in clips} == {"yes", "no", "up", "down"}
    X, y = pooled_features(tiny("wav2vec2"), clips, batch_size=5)
    assert X.shape == (24, 32) and X.dtype == np.float32 and sorted(y.tolist()) == sorted(c.label for c in clips)
    os.makedirs(tmp_path / "one" / "yes")
    shutil.copy(small_keywords[0].path, tmp_path / "one" / "yes" / "a.wav")
    with pytest.raises(ValueError, match="1 label subfolder"):
        task_clips(str(tmp_path / "one"))
    with pytest.raises(ValueError, match="is none of them"):
        task_clips(str(tmp_path / "missing"))


def test_pooled_features_are_the_mean_of_valid_frames(small_keywords):
    from fastsim.speech.runner import normalize
    from fastsim.speech.tasks import LoadedClips, load_labelled

    loaded = load_labelled(small_keywords[:3])
    waves = [(n, w[: w.size - cut]) for (n, w), cut in zip(loaded.waves, (0, 4000, 9000))]  # unequal lengths
    for model in (tiny("wavlm", stable=True), tiny("wav2vec2")):  # padded batch / equal-length batches
        X, y = pooled_features(model, LoadedClips(waves, loaded.labels, []), batch_size=3)
        assert y.tolist() == loaded.labels.tolist()
        for (_, wave), row in zip(waves, X):
            with torch.no_grad():
                h = model(torch.from_numpy(normalize(wave))[None]).last_hidden_state[0]
            np.testing.assert_allclose(row, h.mean(0).numpy(), rtol=1e-4, atol=1e-5)


def test_sweep_end_to_end_on_a_tiny_model(tmp_path, small_keywords):
    model = tiny("wav2vec2")
    result = sweep(model, ["block", "adjacent", "block_influence", "last", "first", "random", [3, 0]],
                   [0, 1, 2, 3], small_keywords, progress=False, probe_seeds=2)
    assert result.num_layers == 4 and result.clips == 24 and result.labels == 4
    assert result.settings["head"] == "fixed" and result.settings["split"] == "the task's own split"
    assert result.settings["test_clips"] == 8 and result.settings["train_clips"] == 16  # 2 of 6 takes per word test
    layer = count_parameters(model.encoder.layers[0])
    for p in result.points:
        if p.removed is None:
            assert p.strategy == "block" or (p.strategy == "list:3/0" and p.n_removed == 3)
            continue
        assert len(p.removed) == p.n_removed and p.parameters == result.baseline_parameters - p.n_removed * layer
        assert p.seconds_per_audio_second > 0 and 0 <= p.accuracy <= 1 and p.fraction_removed == p.n_removed / 4
        assert p.kept == [i for i in range(4) if i not in p.removed] and len(p.accuracies) == 2
        assert np.isclose(p.relative_accuracy, p.accuracy / result.baseline_accuracy)
        lo, hi = p.relative_interval
        assert lo <= hi and p.relative_std >= 0
    assert all(result.point(s, 0).relative_accuracy == 1.0 for s in result.strategies())
    assert result.point("last", 2).removed == [2, 3] and result.point("list:3/0", 2).removed == [0, 3]
    # the sweep's numbers are the model's, under the fixed head: heads trained once on the unpruned model's
    # training features (each on its subsample), applied as they are to the pruned model's test features
    clips = StreamedClips(small_keywords)
    train, test = fixed_split(clips.labels, clips.splits)
    X, y = pooled_features(model, small_keywords)
    heads = [fit_head(X[s], y[s], classes=sorted(set(y)), seed=k)
             for k, s in enumerate(head_samples(y, train, 2, fraction=0.8))]
    with skip_layers(model, result.point("first", 2).removed):
        Xp, _ = pooled_features(model, small_keywords)
    by_hand = [h.accuracy(Xp[test], y[test]) for h in heads]
    assert np.allclose(by_hand, result.point("first", 2).accuracies)
    assert np.isclose(np.mean([h.accuracy(X[test], y[test]) for h in heads]), result.baseline_accuracy)
    assert kept_layers(model) == [0, 1, 2, 3]
    keeps = result.keeps()
    for s, n in keeps.items():
        assert result.point(s, n).relative_accuracy >= 0.95
        assert all(p.relative_accuracy is None or p.relative_accuracy < 0.95
                   for p in result.points if p.strategy == s and p.n_removed > n)
    written = result.save(tmp_path)
    data = json.load(open(written[0]))
    assert len(data["points"]) == 7 * 4 and data["baseline_accuracy"] == result.baseline_accuracy
    assert data["keeps_95"] == keeps and set(data["separation"]) == {"1", "2", "3"}
    assert os.path.getsize(written[1]) > 10_000
    text = result.summary()
    assert re.search(r"^\s+3\s+75\s", result.table(), re.M) and "±" in result.table()
    assert "FIXED" in text and "keeping >= 95 %" in text and "bootstrap" in text
    with pytest.raises(ValueError, match="levels: 4 layers cannot be removed"):
        sweep(model, ["last"], [4], small_keywords, progress=False)
    with pytest.raises(ValueError, match="unknown strategy 'middle'"):
        sweep(model, ["middle"], [1], small_keywords, progress=False)
    with pytest.raises(ValueError, match="head must be one of fixed, refit"):
        sweep(model, ["last"], [1], small_keywords, progress=False, head="retrain")
    with pytest.raises(ValueError, match="layout 'packed'.*not a Whisper model"):
        sweep(model, ["last"], [1], small_keywords, progress=False, layout="packed")


def test_sweep_refit_trains_a_head_per_pruned_model(small_keywords):
    model = tiny("hubert")
    result = sweep(model, ["last"], [0, 2], small_keywords, progress=False, probe_seeds=1, head="refit")
    clips = StreamedClips(small_keywords)
    train, test = fixed_split(clips.labels, clips.splits)
    (sample,) = head_samples(clips.labels, train, 1, fraction=0.8)
    with skip_layers(model, [2, 3]):
        X, y = pooled_features(model, small_keywords)
    refit = fit_head(X[sample], y[sample], classes=sorted(set(y))).accuracy(X[test], y[test])
    assert result.settings["head"] == "refit" and result.point("last", 2).accuracies == [refit]
    assert "REFIT" in result.summary()


@pytest.mark.parametrize("family,stable", [("wav2vec2", False), ("hubert", True), ("wavlm", False), ("wavlm", True),
                                           ("data2vec-audio", False), ("whisper", False)])
def test_a_replayed_prefix_gives_the_pruned_model_bit_for_bit(family, stable):
    model = tiny(family, stable)
    rng = np.random.default_rng(0)
    waves = [(i, (0.1 * rng.normal(size=n)).astype(np.float32)) for i, n in enumerate([16000, 16000, 12000, 9000])]
    inputs = list(pack(waves, "packed" if family == "whisper" else "clip"))
    with recording(model) as rec:
        full = dict(batch_features(model, inputs))
    assert rec.calls >= 1 and len(rec.layers) == 3 and rec.front  # the front end is replayed too
    for removed in ([0], [1], [2, 3], [1, 3], [3], [0, 2]):
        with skip_layers(model, removed):
            ref = dict(batch_features(model, inputs))
            with replayed_prefix(model, rec, min(removed)):
                got = dict(batch_features(model, inputs))
            assert all("forward" not in m.__dict__ for m in model.modules())  # put back
        assert set(got) == set(ref) == set(full)
        assert all(np.array_equal(ref[k], got[k]) for k in ref)
        assert any(not np.allclose(ref[k], full[k]) for k in ref)  # (the plan does change the features)
    with skip_layers(model, [2]), pytest.raises(RuntimeError, match="recorded"):
        with replayed_prefix(model, rec, 2):
            batch_features(model, inputs + inputs)  # another pass than the recorded one
    with skip_layers(model, [1]), pytest.raises(ValueError, match="not the original layers 0..1"):
        with replayed_prefix(model, rec, 2):
            pass


def test_prune_command_end_to_end(tmp_path, small_keywords, capsys):
    from fastsim.cli import main

    for clip in small_keywords:
        os.makedirs(tmp_path / "data" / clip.label, exist_ok=True)
        shutil.copy(clip.path, tmp_path / "data" / clip.label)
    out = tmp_path / "out"
    assert main(["prune", "random:hubert-tiny", "--strategies", "block_influence,last,alternate", "--levels", "0..N",
                 "--task", str(tmp_path / "data"), "--out", str(out), "--no-progress", "--probe-seeds", "1"]) == 0
    text = capsys.readouterr().out
    assert "RANDOM weights" in text and "block_influence" in text and "alternate" in text
    assert (out / "prune.json").exists() and (out / "prune.png").exists()
    assert json.load(open(out / "prune.json"))["settings"]["levels"] == [0, 1, 2, 3]
    with pytest.raises(SystemExit, match="--levels"):
        main(["prune", "random:hubert-tiny", "--levels", "0..9", "--task", str(tmp_path / "data"), "--out", str(out)])
    with pytest.raises(SystemExit, match="--strategies: unknown strategy middle"):
        main(["prune", "random:hubert-tiny", "--strategies", "last,middle", "--out", str(out)])
    with pytest.raises(SystemExit, match="--layout 'packed' lays clips out in Whisper's 30 s windows"):
        main(["prune", "random:hubert-tiny", "--layout", "packed", "--levels", "0,1", "--task", str(tmp_path / "data"),
              "--out", str(out), "--no-progress"])
    capsys.readouterr()
    assert main(["prune", "random:hubert-tiny", "--strategies", "last", "--levels", "0,2", "--head", "refit",
                 "--task", str(tmp_path / "data"), "--out", str(out), "--no-progress", "--probe-seeds", "2"]) == 0
    assert "REFIT" in capsys.readouterr().out and json.load(open(out / "prune.json"))["settings"]["head"] == "refit"


# ---------------------------------------------------------------- GPU


@pytest.mark.gpu
@pytest.mark.parametrize("family", FAMILIES)
def test_skip_layers_on_gpu_adds_no_memory_and_equals_a_smaller_model(family):
    model = tiny(family)
    ref_model = physically_smaller(model, [0, 2]).cuda()
    model = model.cuda()
    x = torch.randn(2, 16000, device="cuda")
    with torch.no_grad():
        full = model(x).last_hidden_state
        ref = ref_model(x).last_hidden_state
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    pointers = storage_pointers(model)
    with skip_layers(model, [0, 2]):
        assert torch.cuda.memory_allocated() == before
        assert set(storage_pointers(model).values()) <= set(pointers.values())
        with torch.no_grad():
            pruned = model(x).last_hidden_state
    torch.testing.assert_close(pruned, ref, rtol=1e-4, atol=1e-5)
    del pruned
    torch.cuda.synchronize()
    assert torch.cuda.memory_allocated() == before
    with torch.no_grad():
        again = model(x).last_hidden_state
    assert torch.equal(again, full)


def test_a_whole_whisper_model_prunes_its_encoder_not_its_decoder(tmp_path):
    cfg = whisper.whisper_config("tiny", d_model=32, encoder_layers=4, encoder_attention_heads=2, encoder_ffn_dim=64,
                                 decoder_layers=4, decoder_attention_heads=2, decoder_ffn_dim=64)
    torch.manual_seed(0)
    full = transformers.WhisperForConditionalGeneration(cfg).eval()  # 4 decoder layers too: the same count
    assert find_layer_stack(full).path == "model.encoder.layers"
    inputs = speech_input(tiny("whisper"))
    encoder = full.get_encoder()
    with skip_layers(full, [1, 2]):
        hooked = run(encoder, inputs)
    remove_layers(full, [1, 2])
    assert (full.config.encoder_layers, full.config.decoder_layers, len(full.model.decoder.layers)) == (2, 4, 4)
    full.save_pretrained(tmp_path)
    back = load_model(tmp_path, device="cpu")  # its encoder
    assert len(back.layers) == 2 and kept_layers(back) == [0, 3]
    torch.testing.assert_close(run(back, inputs).last_hidden_state, hooked.last_hidden_state, rtol=1e-5, atol=1e-6)
