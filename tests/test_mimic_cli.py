"""fastsim distill end to end on a tiny random model (offline: noise clips and tiny probe tasks)."""

import json

import numpy as np
import pytest

from fastsim.cli import main
from fastsim.mimic import MimickingNetwork

soundfile = pytest.importorskip("soundfile")  # optional: not on every machine (none on the GPU box)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def audio_dir(tmp_path_factory):
    """Training clips and a labelled task directory (two 'labels': low and high tones in noise)."""
    root = tmp_path_factory.mktemp("audio")
    rng = np.random.default_rng(0)
    train = root / "train"
    train.mkdir()
    for i in range(4):
        soundfile.write(train / f"{i}.wav", rng.normal(size=12000).astype(np.float32) * 0.1, 16000)
    t = np.arange(8000) / 16000
    for label, f in (("low", 200.0), ("high", 2000.0)):
        (root / "task" / label).mkdir(parents=True)
        for i in range(6):
            x = np.sin(2 * np.pi * f * (1 + 0.05 * i) * t) + 0.05 * rng.normal(size=t.size)
            soundfile.write(root / "task" / label / f"{i}.wav", (0.5 * x).astype(np.float32), 16000)
    return root


def test_distill_command_end_to_end(tmp_path, audio_dir, capsys):
    out = tmp_path / "out"
    args = ["distill", "random:wav2vec2-tiny", str(audio_dir / "train"), "--out", str(out), "--steps", "6",
            "--batch-size", "2", "--tasks", str(audio_dir / "task"), "--baseline-steps", "5", "--time-batch", "1",
            "--time-seconds", "0.5", "--repeats", "1", "--warmup", "0", "--no-progress", "--checkpoint-every", "3"]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "RANDOM weights" in text
    for needle in ("parameters:", "inference time", "probe accuracy", "no-distillation baseline"):
        assert needle in text
    report = json.load(open(out / "report.json"))
    assert report["targets"] == [4] and 0 < report["parameters"]["reduction"] < 1
    assert report["time"]["full_s"] > 0 and report["time"]["mimicked_s"] > 0
    probe = report["probes"][str(audio_dir / "task")]
    assert probe["clips"] == 12 and all(0 <= probe[k] <= 1 for k in ("full", "mimicked", "baseline"))
    net = MimickingNetwork.load(out / "mimic.safetensors")
    assert net.config.dim == 32 and json.load(open(out / "mimic.json"))["teacher"].startswith("wav2vec2-tiny")
    # resume: continue the checkpoint to 9 steps
    assert main(args[:5] + ["--steps", "9", "--resume"] + args[7:]) == 0
    assert json.load(open(out / "checkpoint" / "state.json"))["step"] == 9


def test_two_block_targets_from_similarity_blocks(tmp_path, audio_dir, capsys):
    args = ["distill", "random:hubert-tiny", str(audio_dir / "train"), "--out", str(tmp_path / "o"), "--widths", "8,8",
            "--steps", "2", "--tasks", "", "--time-batch", "1", "--time-seconds", "0.5", "--repeats", "1",
            "--warmup", "0", "--no-progress"]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "similarity blocks" in text
    targets = json.load(open(tmp_path / "o" / "report.json"))["targets"]
    assert len(targets) == 2 and 1 <= targets[0] < targets[1] == 4


@pytest.mark.parametrize("extra, match", [
    (["--widths", "a"], "--widths"), (["--steps", "0"], "--steps"), (["--context", "2"], "--context"),
    (["--targets", "3,2", "--widths", "8,8"], "--targets"), (["--tasks", "/nonexistent-dir"], "--tasks"),
    (["--time-seconds", "0.01"], "--time-seconds"), (["--crop-seconds", "0.01"], "--crop-seconds"),
    (["--lr", "0"], "--lr"), (["--weight-decay", "-1"], "--weight-decay"),
])
def test_distill_command_errors_name_the_argument(tmp_path, audio_dir, extra, match, capsys):
    args = ["distill", "random:wav2vec2-tiny", str(audio_dir / "train"), "--out", str(tmp_path / "e"), "--steps", "1",
            "--time-batch", "1", "--time-seconds", "0.5", "--repeats", "1", "--warmup", "0", "--no-progress"]
    with pytest.raises(SystemExit, match=match):
        main(args + extra)
