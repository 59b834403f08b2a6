"""fastsim.speech.speech_commands on a synthetic folder laid out like Speech Commands v0.02: the lists'
split, _background_noise_ not a class, a speaker task from the file names, clips read only when asked."""

import os

import numpy as np
import pytest

from fastsim.speech import speech_commands as sc
from fastsim.speech.audio import AudioError
from fastsim.speech.tasks import StreamedClips, fixed_split, task_clips

soundfile = pytest.importorskip("soundfile")  # absent on the GPU machine: skip, do not break collection

WORDS = ("yes", "no", "up")
#: speaker -> clips per word: two speakers reach 50 clips over the words, one does not
SPEAKERS = {"0a7c2a8d": 17, "1b4c9b89": 20, "c1d39ce8": 3}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("speech_commands_v0.02")
    rng = np.random.default_rng(0)
    test, valid = [], []
    for word in WORDS:
        os.makedirs(root / word)
        for s, n in SPEAKERS.items():
            for k in range(n):
                rel = f"{word}/{s}_nohash_{k}.wav"
                soundfile.write(root / rel, (0.1 * rng.normal(size=1600)).astype(np.float32), 16000, subtype="PCM_16")
                # the real lists split by speaker: one speaker tests, one validates, one trains
                (test if s == "1b4c9b89" else valid if s == "c1d39ce8" else []).append(rel)
    os.makedirs(root / "_background_noise_")
    soundfile.write(root / "_background_noise_" / "white_noise.wav", np.zeros(16000 * 3, np.float32), 16000)
    (root / "_background_noise_" / "README.md").write_text("noise")
    (root / "testing_list.txt").write_text("\n".join(test) + "\n")
    (root / "validation_list.txt").write_text("\n".join(valid) + "\n")
    (root / "LICENSE").write_text("CC-BY-4.0")
    return root


def test_keyword_clips_take_the_lists_split_and_no_background_class(folder):
    assert sc.is_speech_commands(folder) and not sc.is_speech_commands(folder / "yes")
    clips = sc.keyword_clips(folder)
    assert {c.label for c in clips} == set(WORDS)  # _background_noise_ is not a class
    assert len(clips) == len(WORDS) * sum(SPEAKERS.values())
    by = {c.path.replace(os.sep, "/").split(str(folder).replace(os.sep, "/") + "/")[1]: c.split for c in clips}
    assert all(split == "test" for rel, split in by.items() if "1b4c9b89" in rel)
    assert all(split == "validation" for rel, split in by.items() if "c1d39ce8" in rel)
    assert all(split == "train" for rel, split in by.items() if "0a7c2a8d" in rel)
    train, test = fixed_split([c.label for c in clips], [c.split for c in clips])
    assert len(test) == 3 * 20 and len(train) == 3 * 17  # validation clips in neither
    assert task_clips(str(folder)) == clips  # a Speech Commands folder is a task


def test_speaker_task_keeps_speakers_with_fifty_clips_and_its_own_fixed_split(folder):
    clips = sc.speaker_clips(folder)
    assert {c.label for c in clips} == {"0a7c2a8d", "1b4c9b89"}  # 51 and 60 clips; c1d39ce8 has 9
    assert len(clips) == 3 * (17 + 20)
    splits = [c.split for c in clips]
    assert set(splits) == {"train", "test"} and 0.15 < splits.count("test") / len(clips) < 0.45
    assert [c.split for c in sc.speaker_clips(folder)] == splits  # fixed: a hash of the names
    for speaker in ("0a7c2a8d", "1b4c9b89"):  # both sides hold every speaker
        assert {c.split for c in clips if c.label == speaker} == {"train", "test"}
    assert task_clips(f"speakers:{folder}") == clips
    with pytest.raises(sc.SpeechCommandsError, match="0 speaker"):
        sc.speaker_clips(folder, min_clips=100)


def test_clips_are_read_only_when_asked(folder, tmp_path):
    clips = sc.keyword_clips(folder)
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"not audio")
    streamed = StreamedClips([*clips, type(clips[0])(str(broken), "yes", "train")])  # nothing read yet
    assert len(streamed) == len(clips) + 1 and streamed.splits is not None
    assert streamed.wave(0).shape == (1600,)
    with pytest.raises(AudioError):
        streamed.wave(len(clips))


def test_not_a_speech_commands_folder_is_named(tmp_path):
    os.makedirs(tmp_path / "yes")
    (tmp_path / "testing_list.txt").write_text("")
    assert not sc.is_speech_commands(tmp_path)
    with pytest.raises(sc.SpeechCommandsError, match="validation_list.txt missing"):
        sc.keyword_clips(tmp_path)


def test_a_pruning_sweep_reads_a_speech_commands_folder(folder, one_torch_thread):
    from fastsim.prune import sweep
    from fastsim.speech.models import random_model

    result = sweep(random_model("wav2vec2", "tiny"), ["last"], [0, 1], str(folder), progress=False, probe_seeds=2)
    assert result.settings["split"] == "the task's own split"
    assert (result.settings["train_clips"], result.settings["test_clips"]) == (3 * 17, 3 * 20)
    assert result.labels == 3 and result.clips == 3 * 37  # validation clips are not read
