"""LayerSimilarity: masks, representations, protocols, sampling and merging, against the reference."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fastsim import reference as R
from fastsim.layer_similarity import LayerSimilarity


def fake_model_batch(rng, B=3, T=9, L=4, d=6):
    """Hidden states of a residual stack, and a mask with ragged lengths (>= 2 frames each)."""
    h = [torch.from_numpy(rng.normal(size=(B, T, d)))]
    for _ in range(L - 1):
        h.append(h[-1] + 0.5 * torch.tanh(h[-1] @ torch.from_numpy(rng.normal(size=(d, d)))))
    lengths = rng.integers(2, T + 1, size=B)
    mask = torch.arange(T)[None, :] < torch.from_numpy(lengths)[:, None]
    for x in h:
        x[~mask] = 1e6  # padding garbage must never reach a metric
    return h, mask


def valid_frames(batches, layer):
    return np.concatenate([h[layer][m].numpy() for h, m in batches])


@settings(max_examples=20)
@given(st.integers(0, 2**31), st.integers(1, 4))
def test_frames_exact_equals_reference_on_valid_frames(seed, nb):
    rng = np.random.default_rng(seed)
    batches = [fake_model_batch(rng) for _ in range(nb)]
    acc = LayerSimilarity(["cosine", "cka", "mutual_knn", "rbf_cka"], k=3, max_samples=10_000)
    for h, m in batches:
        acc.update(h, m)
    got = acc.compute()
    layers = [valid_frames(batches, l) for l in range(4)]
    np.testing.assert_allclose(got["cosine"], R.similarity_matrix(layers, "cosine"), atol=1e-12)
    np.testing.assert_allclose(got["cka"], R.similarity_matrix(layers, "cka"), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(got["mutual_knn"], R.similarity_matrix(layers, "mutual_knn", k=3), atol=1e-12)
    np.testing.assert_allclose(got["rbf_cka"], R.similarity_matrix(layers, "cka", kernel="rbf"), rtol=1e-9)


@pytest.mark.parametrize("representation", ["frames", "mean", "flatten"])
def test_padding_invariance(representation):
    """A clip alone equals the same clip inside a padded batch."""
    rng = np.random.default_rng(1)
    h, mask = fake_model_batch(rng, B=4, T=12)
    mets = ["cosine", "cka"]
    batched = LayerSimilarity(mets, representation=representation, frames=5).update(h, mask).compute()
    alone = LayerSimilarity(mets, representation=representation, frames=5)
    for b in range(4):
        n = int(mask[b].sum())
        alone.update([x[b : b + 1, :n] for x in h])
    for m in mets:
        np.testing.assert_allclose(batched[m], alone.compute()[m], rtol=1e-9, atol=1e-12)


def test_utterance_representations_match_reference():
    rng = np.random.default_rng(2)
    h, mask = fake_model_batch(rng, B=6, T=8)
    lengths = mask.sum(1)
    mean = [np.stack([x[b, : lengths[b]].numpy().mean(0) for b in range(6)]) for x in h]
    got = LayerSimilarity(["cka"], representation="mean").update(h, mask).compute()["cka"]
    np.testing.assert_allclose(got, R.similarity_matrix(mean, "cka"), rtol=1e-9)
    flat = []
    for x in h:
        rows = []
        for b in range(6):
            clip = np.zeros((4, x.shape[2]))
            n = min(4, int(lengths[b]))
            clip[:n] = x[b, :n].numpy()
            rows.append(clip.reshape(-1))
        flat.append(np.stack(rows))
    got = LayerSimilarity(["cka"], representation="flatten", frames=4).update(h, mask).compute()["cka"]
    np.testing.assert_allclose(got, R.similarity_matrix(flat, "cka"), rtol=1e-9)


def test_per_batch_protocol_averages_batches():
    rng = np.random.default_rng(3)
    batches = [fake_model_batch(rng, B=5, T=6) for _ in range(3)]
    acc = LayerSimilarity(["cka", "cosine", "mutual_knn"], representation="mean", protocol="per_batch", batch_size=5, k=2)
    for h, m in batches:
        acc.update(h, m)
    got = acc.compute()
    for metric, ref_metric, opts in (("cka", "cka", {}), ("cosine", "cosine", {}), ("mutual_knn", "mutual_knn", {"k": 2})):
        per = []
        for h, m in batches:
            lengths = m.sum(1)
            layers = [np.stack([x[b, : lengths[b]].numpy().mean(0) for b in range(5)]) for x in h]
            per.append(R.similarity_matrix(layers, ref_metric, **opts))
        np.testing.assert_allclose(got[metric], np.mean(per, 0), rtol=1e-9, atol=1e-12)


def test_bottom_k_sample_is_uniform_and_merges():
    """Each of N samples is kept with probability m / N, alone and after merging two streams."""
    N, m, runs = 20, 5, 400
    hits = np.zeros(N)
    merged_hits = np.zeros(N)
    x = torch.arange(N, dtype=torch.float64).reshape(1, N, 1).expand(2, N, 1)
    for seed in range(runs):
        acc = LayerSimilarity(["mutual_knn"], max_samples=m, seed=seed)
        acc.sample.update(x.clone())
        hits[acc.sample.kept[0, :, 0].long().numpy()] += 1
        a = LayerSimilarity(["mutual_knn"], max_samples=m, seed=2 * seed)
        b = LayerSimilarity(["mutual_knn"], max_samples=m, seed=2 * seed + 1)
        a.sample.update(x[:, :7].clone())
        b.sample.update(x[:, 7:].clone())
        a.merge(b)
        merged_hits[a.sample.kept[0, :, 0].long().numpy()] += 1
    expected = runs * m / N  # 100; binomial sd ~8.7
    assert np.all(np.abs(hits - expected) < 40), hits
    assert np.all(np.abs(merged_hits - expected) < 40), merged_hits


def test_merge_equals_one_accumulator_and_include_input():
    rng = np.random.default_rng(4)
    batches = [fake_model_batch(rng) for _ in range(4)]
    mets = ["cosine", "cka", "mutual_knn"]
    whole = LayerSimilarity(mets, k=3)
    a, b = LayerSimilarity(mets, k=3), LayerSimilarity(mets, k=3, seed=1)
    for i, (h, m) in enumerate(batches):
        whole.update(h, m)
        (a if i % 2 else b).update(h, m)
    merged = a.merge(b).compute()
    for metric in ("cosine", "cka"):
        np.testing.assert_allclose(merged[metric], whole.compute()[metric], rtol=1e-9, atol=1e-12)
    layers = [valid_frames(batches, l) for l in range(4)]
    np.testing.assert_allclose(merged["mutual_knn"], R.similarity_matrix(layers, "mutual_knn", k=3), atol=1e-12)
    no_input = LayerSimilarity(["cka"], include_input=False)
    for h, m in batches:
        no_input.update(h, m)
    np.testing.assert_allclose(no_input.compute()["cka"], whole.compute()["cka"][1:, 1:], rtol=1e-9)


def test_errors_name_the_argument():
    rng = np.random.default_rng(5)
    h, mask = fake_model_batch(rng)
    with pytest.raises(ValueError, match="metric must be one of"):
        LayerSimilarity(["cca"])
    with pytest.raises(TypeError, match="metrics must be a non-empty sequence"):
        LayerSimilarity("cka")
    with pytest.raises(ValueError, match="representation must be one of"):
        LayerSimilarity(representation="tokens")
    with pytest.raises(ValueError, match="max_samples must be an integer >= 2"):
        LayerSimilarity(max_samples=1)
    with pytest.raises(ValueError, match="mask must be"):
        LayerSimilarity().update(h, mask[:, :3])
    with pytest.raises(ValueError, match="of one shape; layer 2"):
        LayerSimilarity().update([h[0], h[1], h[2][:, :4]], None)
    with pytest.raises(ValueError, match="no samples yet"):
        LayerSimilarity().compute()
    with pytest.raises(ValueError, match="no valid frame"):
        LayerSimilarity(representation="mean").update(h, torch.zeros_like(mask))


def test_per_batch_compute_mid_stream_leaves_the_state_alone():
    rng = np.random.default_rng(6)
    batches = [fake_model_batch(rng, B=5, T=6) for _ in range(3)]
    peeked = LayerSimilarity(["cka"], representation="mean", protocol="per_batch", batch_size=10)
    plain = LayerSimilarity(["cka"], representation="mean", protocol="per_batch", batch_size=10)
    for i, (h, m) in enumerate(batches):
        peeked.update(h, m)
        plain.update(h, m)
        if i == 0:
            peeked.compute()  # only a partial batch so far: computed on the side
    np.testing.assert_allclose(peeked.compute()["cka"], plain.compute()["cka"], rtol=1e-12)
    assert peeked.per_batch.batches == plain.per_batch.batches == 1
