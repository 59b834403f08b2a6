"""Probe tasks and heads: the keyword task's fixed split by held-out voices, fixed_split, head_samples, and a
probe head trained once and applied to other features."""

import numpy as np
import pytest

from fastsim.speech import synth
from fastsim.speech.probes import fit_head, probe_accuracy
from fastsim.speech.tasks import fixed_split, head_samples, load_labelled, probe_split, stratified_split

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_keyword_task_holds_out_speakers_for_a_fixed_test_split(tmp_path):
    assert len(synth.KEYWORDS) == 35 and len(set(synth.KEYWORDS)) == 35
    assert set(synth.TEST_VARIANTS) < set(synth.VARIANTS) and len(synth.TEST_VARIANTS) == 11
    items = []
    real = synth._corpus

    def spy(name, its, one_second, root):
        items.extend(its)
        return real(name, its, one_second, root)

    synth._corpus = spy
    try:
        clips = synth.keyword_task(per_word=5, words=3, root=tmp_path)
    finally:
        synth._corpus = real
    assert [c.split for c in clips].count("test") == 3 * 2  # round(0.3 * 5) takes of each word
    assert {c.label for c in clips if c.split == "test"} == {"yes", "no", "up"}
    for clip, (label, text, voice, speed, pitch) in zip(clips, items):
        accent, variant = voice.split("+")
        assert accent in synth.ACCENTS and (variant in synth.TEST_VARIANTS) == (clip.split == "test")
        assert 110 <= speed <= 240 and 10 <= pitch <= 90 and label == text == clip.label
    assert [c.split for c in synth.keyword_task(per_word=5, words=3, root=tmp_path)] == [c.split for c in clips]
    loaded = load_labelled(clips)
    assert loaded.splits.tolist() == [c.split for c in clips]
    with pytest.raises(ValueError, match="per_word >= 2"):
        synth.keyword_task(per_word=1)


def test_fixed_split_is_the_tasks_own_or_a_seeded_stratified_one():
    labels = np.array(["a", "b"] * 10)
    splits = np.array(["train"] * 12 + ["validation"] * 2 + ["test"] * 6)
    train, test = fixed_split(labels, splits)
    assert train.tolist() == list(range(12)) and test.tolist() == list(range(14, 20))
    tr, te = fixed_split(labels, None, test_fraction=0.3, seed=4)
    ref = stratified_split(labels, seed=4, test_fraction=0.3)
    assert tr.tolist() == ref[0].tolist() and te.tolist() == ref[1].tolist()
    with pytest.raises(ValueError, match="0 test clip"):
        fixed_split(labels, np.array(["train"] * 20))
    with pytest.raises(ValueError, match="one per clip"):
        fixed_split(labels, splits[:5])


def test_head_samples_are_seeded_stratified_subsamples_of_the_training_clips():
    labels = np.array(["a"] * 30 + ["b"] * 10 + ["c"] * 20)
    train = np.arange(0, 60, 2)  # 15 a, 5 b, 10 c
    samples = head_samples(labels, train, 3, fraction=0.8)
    assert len(samples) == 3 and all(set(s) <= set(train) for s in samples)
    assert all([(labels[s] == c).sum() for c in "abc"] == [12, 4, 8] for s in samples)
    assert not np.array_equal(samples[0], samples[1])
    assert all(np.array_equal(a, b) for a, b in zip(samples, head_samples(labels, train, 3, fraction=0.8)))
    assert np.array_equal(head_samples(labels, train, 1, fraction=1.0)[0], train)
    with pytest.raises(ValueError, match="probe heads"):
        head_samples(labels, train, 0)


def test_a_head_trained_once_applies_to_other_features():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.array(["a", "b", "c"]), 30)
    centers = rng.normal(size=(3, 8)) * 3
    X = centers[np.repeat(np.arange(3), 30)] + rng.normal(size=(90, 8))
    head = fit_head(X[::2], labels[::2], classes=["a", "b", "c", "d"], seed=0)
    assert head.accuracy(X[1::2], labels[1::2]) > 0.9 and set(head.predict(X)) <= {"a", "b", "c"}
    # the standardization is the head's: shifted features are not re-standardized, so they fail
    assert head.accuracy(X[1::2] + 10 * centers[0], labels[1::2]) < 0.6
    assert head.correct(X[:3], labels[:3]).dtype == bool
    with pytest.raises(ValueError, match="dimensions"):
        head.predict(X[:, :4])
    with pytest.raises(ValueError, match="not one of the classes"):
        fit_head(X[:4], ["a", "b", "z", "a"], classes=["a", "b"])
    # probe_accuracy is a head on probe_split's training side, scored on its test side
    split = probe_split(labels, seed=3)
    by_hand = fit_head(X[split.train], labels[split.train], seed=3).accuracy(X[split.test], labels[split.test])
    assert probe_accuracy(X, labels, seed=3) == by_hand
