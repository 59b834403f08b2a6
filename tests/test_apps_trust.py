"""The applications under stress (issue 13, application items): nothing lost, nothing half-written,
nothing silently wrong, and bad input named by its flag before any work.

* 6  distill refuses to overwrite a checkpoint (--resume / --overwrite)
* 7  analyze saves as a set: an interrupted save changes nothing; stale files of other metrics go
* 8  --out that is a file, unwritable or empty is refused first (analyze, prune, distill)
* 11 an extreme audio file (values near 3e38) is skipped and reported, not fatal
* 12 named errors: --device, --clips 0, --lr inf, damaged checkpoints, --threshold nan, --k
* 14 "block" on a matrix without block structure says so instead of inventing blocks
* 15 .gitignore holds the commands' default output folders
* and: adapter models' frame masks, a file listed under two labels, the prune plot with an
  unpruned accuracy of 0, the distill summary's wording
"""

import json
import os
import shutil
import subprocess
import types

import numpy as np
import pytest
import torch

from fastsim import cli
from fastsim.analysis import Analysis, analyze
from fastsim.blocks import find_blocks
from fastsim.mimic import distill
from fastsim.speech import models, runner, synth
from fastsim.speech.audio import SAMPLE_RATE

soundfile = pytest.importorskip("soundfile")  # optional: not on every machine (none on the GPU box)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: CKA of a random-weight wav2vec2-base (12 layers x 768, seed 0) over eight synthesized sentences,
#: as fastsim analyze measured it (input row first): smooth, no blocks; Otsu alone cut it in three
RANDOM_BASE_CKA = np.array([
    [1.000, 0.994, 0.988, 0.983, 0.977, 0.970, 0.963, 0.957, 0.949, 0.943, 0.934, 0.924, 0.913],
    [0.994, 1.000, 0.994, 0.988, 0.981, 0.975, 0.968, 0.962, 0.954, 0.948, 0.940, 0.930, 0.920],
    [0.988, 0.994, 1.000, 0.994, 0.987, 0.980, 0.973, 0.967, 0.961, 0.954, 0.946, 0.936, 0.926],
    [0.983, 0.988, 0.994, 1.000, 0.994, 0.987, 0.980, 0.974, 0.967, 0.960, 0.951, 0.942, 0.932],
    [0.977, 0.981, 0.987, 0.994, 1.000, 0.994, 0.987, 0.980, 0.974, 0.967, 0.958, 0.948, 0.938],
    [0.970, 0.975, 0.980, 0.987, 0.994, 1.000, 0.993, 0.987, 0.980, 0.973, 0.964, 0.954, 0.945],
    [0.963, 0.968, 0.973, 0.980, 0.987, 0.993, 1.000, 0.993, 0.987, 0.980, 0.972, 0.963, 0.953],
    [0.957, 0.962, 0.967, 0.974, 0.980, 0.987, 0.993, 1.000, 0.993, 0.986, 0.978, 0.968, 0.959],
    [0.949, 0.954, 0.961, 0.967, 0.974, 0.980, 0.987, 0.993, 1.000, 0.993, 0.984, 0.975, 0.966],
    [0.943, 0.948, 0.954, 0.960, 0.967, 0.973, 0.980, 0.986, 0.993, 1.000, 0.992, 0.984, 0.975],
    [0.934, 0.940, 0.946, 0.951, 0.958, 0.964, 0.972, 0.978, 0.984, 0.992, 1.000, 0.992, 0.983],
    [0.924, 0.930, 0.936, 0.942, 0.948, 0.954, 0.963, 0.968, 0.975, 0.984, 0.992, 1.000, 0.991],
    [0.913, 0.920, 0.926, 0.932, 0.938, 0.945, 0.953, 0.959, 0.966, 0.975, 0.983, 0.991, 1.000],
])


def noise(n=5, seed=0):
    rng = np.random.default_rng(seed)
    return [(0.1 * rng.normal(size=int(rng.integers(6000, 12000)))).astype(np.float32) for _ in range(n)]


@pytest.fixture(scope="module")
def wavs(tmp_path_factory):
    """Three noise clips as float WAV files, and one whose values are near the float32 maximum."""
    root = tmp_path_factory.mktemp("wavs")
    for i, w in enumerate(noise(3)):
        soundfile.write(root / f"{i}.wav", w, SAMPLE_RATE, subtype="FLOAT")
    signs = np.sign(np.random.default_rng(1).normal(size=8000)).astype(np.float32)
    soundfile.write(root / "extreme.wav", np.float32(3e38) * signs, SAMPLE_RATE, subtype="FLOAT")
    return root


def no_computation(monkeypatch, *commands):
    """Make the model loading of these command modules fail loudly: a check that comes first never reaches it."""
    def refuse(*args, **kwargs):
        raise AssertionError("the command started its work before checking its arguments")

    for name in commands:
        monkeypatch.setattr(f"fastsim.cli.{name}.resolve_model", refuse)


# ---- 6: distill never overwrites a checkpoint silently ------------------------------------------------

def small_distill(checkpoint_dir, **kw):
    model = models.random_model("wav2vec2", "tiny")
    args = dict(sample_rate=SAMPLE_RATE, batch_size=2, crop_seconds=0.25, steps=2, checkpoint_every=1, progress=False,
                checkpoint_dir=checkpoint_dir)
    return distill(model, noise(4), **{**args, **kw})


def test_distill_refuses_to_overwrite_a_checkpoint(tmp_path):
    ck = tmp_path / "checkpoint"
    small_distill(ck, steps=3)
    before = {p: (ck / p).read_bytes() for p in ("state.json", "mimic.safetensors", "optimizer.safetensors")}
    with pytest.raises(ValueError, match="holds a checkpoint .step 3.*resume.*overwrite"):
        small_distill(ck)
    assert {p: (ck / p).read_bytes() for p in before} == before  # untouched
    small_distill(ck, overwrite=True)
    assert json.loads((ck / "state.json").read_text())["step"] == 2
    with pytest.raises(ValueError, match="exclude each other"):
        small_distill(ck, resume=True, overwrite=True)


def test_distill_command_names_resume_and_overwrite(tmp_path, monkeypatch):
    small_distill(tmp_path / "out" / "checkpoint", steps=3)
    no_computation(monkeypatch, "distill")
    with pytest.raises(SystemExit, match="holds a distillation checkpoint at step 3.*--resume.*--overwrite"):
        cli.main(["distill", "random:wav2vec2-tiny", "--out", str(tmp_path / "out"), "--steps", "2"])
    assert json.loads((tmp_path / "out" / "checkpoint" / "state.json").read_text())["step"] == 3


# ---- 7: analyze saves its results as a set ------------------------------------------------------------

def fake_analysis(metrics, seed=0):
    rng = np.random.default_rng(seed)
    matrices = {}
    for m in metrics:
        a = rng.uniform(0.3, 1.0, size=(4, 4))
        matrices[m] = (a + a.T) / 2
        np.fill_diagonal(matrices[m], 1.0)
    return Analysis("fake", ["input", "1", "2", "3"], matrices, {m: [] for m in metrics}, 3, 100, 2.0)


def snapshot(folder):
    return {p: open(os.path.join(folder, p), "rb").read() for p in sorted(os.listdir(folder))}


def test_a_rerun_with_other_metrics_leaves_no_stale_results(tmp_path):
    out = tmp_path / "out"
    (out).mkdir()
    (out / "notes.txt").write_text("mine")  # not a result file: stays
    fake_analysis(["cosine", "cka", "rbf_cka"]).save(out)
    assert {"rbf_cka.csv", "heatmap_rbf_cka.png"} <= set(os.listdir(out))
    written = fake_analysis(["cosine", "cka"], seed=1).save(out)
    assert sorted(os.listdir(out)) == sorted(["notes.txt", "matrices.npz", "analysis.json", "cosine.csv", "cka.csv",
                                              "heatmap_cosine.png", "heatmap_cka.png"])
    assert sorted(map(os.path.basename, written)) == sorted(set(os.listdir(out)) - {"notes.txt"})
    assert set(json.loads((out / "analysis.json").read_text())["metrics"]) == {"cosine", "cka"}
    assert set(np.load(out / "matrices.npz").files) == {"layers", "cosine", "cka"}


def test_an_interrupted_save_changes_nothing(tmp_path, monkeypatch):
    import fastsim.heatmap

    out = tmp_path / "out"
    fake_analysis(["cosine", "cka"]).save(out)
    before = snapshot(out)
    calls = []
    real = fastsim.heatmap.save_heatmap

    def interrupted(*args, **kwargs):  # Ctrl-C while the second heatmap is being written
        calls.append(1)
        if len(calls) == 2:
            with open(args[2], "wb") as f:
                f.write(b"\x89PNG\r\n\x1a\n" + b"\0" * 116)  # the 124-byte PNG of the report
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(fastsim.heatmap, "save_heatmap", interrupted)
    with pytest.raises(KeyboardInterrupt):
        fake_analysis(["cosine", "cka"], seed=1).save(out)
    assert snapshot(out) == before  # the earlier results, whole; no staging directory left


def test_staged_directory_moves_a_set_and_cleans_up(tmp_path):
    from fastsim.speech.files import staged_directory

    out = tmp_path / "o"
    with staged_directory(out, stale=["old.csv"], last="z.json") as stage:
        for name in ("a.csv", "z.json"):
            (open(os.path.join(stage, name), "w")).write(name)
    assert sorted(os.listdir(out)) == ["a.csv", "z.json"]
    (out / "old.csv").write_text("stale")
    with pytest.raises(RuntimeError):
        with staged_directory(out, stale=["old.csv"]) as stage:
            open(os.path.join(stage, "a.csv"), "w").write("new")
            raise RuntimeError
    assert sorted(os.listdir(out)) == ["a.csv", "old.csv", "z.json"] and (out / "a.csv").read_text() == "a.csv"


# ---- 8: --out checked before any work ----------------------------------------------------------------

def test_check_output_dir(tmp_path):
    from fastsim.speech.files import OutputError, check_output_dir

    (tmp_path / "file").write_text("x")
    assert check_output_dir(tmp_path / "new" / "deeper") == str(tmp_path / "new" / "deeper")
    assert not (tmp_path / "new").exists()  # a check creates nothing
    for bad, match in ((tmp_path / "file", "is a file"), (tmp_path / "file" / "sub", "its parent .* is a file"),
                       ("", "empty"), ("  ", "empty")):
        with pytest.raises(OutputError, match=match):
            check_output_dir(bad)
    if os.path.isdir("/proc"):  # not writable even as root
        with pytest.raises(OutputError, match="cannot write"):
            check_output_dir("/proc/fastsim-out")


@pytest.mark.parametrize("command", ["analyze", "prune", "distill"])
def test_a_bad_out_is_refused_before_any_work(tmp_path, monkeypatch, command):
    no_computation(monkeypatch, command)
    (tmp_path / "file").write_text("x")
    bad = [str(tmp_path / "file"), ""] + (["/proc/fastsim-out"] if os.path.isdir("/proc") else [])
    for out in bad:
        with pytest.raises(SystemExit, match="--out"):
            cli.main([command, "random:wav2vec2-tiny", "--out", out])


# ---- 11: an extreme audio file is skipped and reported ---------------------------------------------

def test_an_extreme_audio_file_is_skipped_and_reported(wavs, tmp_path, capsys):
    files = sorted(str(p) for p in wavs.iterdir())
    result = analyze(models.random_model("wav2vec2", "tiny"), files, metrics=("cosine", "cka"))
    assert result.clips == 3 and [os.path.basename(f.source) for f in result.failures] == ["extreme.wav"]
    assert "not audio" in result.failures[0].reason and np.isfinite(result.matrices["cka"]).all()
    code = cli.main(["analyze", "random:wav2vec2-tiny", str(wavs), "--out", str(tmp_path / "o"), "--no-progress",
                     "--metrics", "cosine"])
    assert code == 0 and "skipped" in capsys.readouterr().out


def test_clips_whose_hidden_states_are_not_finite_are_skipped(monkeypatch):
    import fastsim.analysis

    model = models.random_model("wav2vec2", "tiny", feat_extract_norm="layer", do_stable_layer_norm=True)
    real = fastsim.analysis.hidden_state_batches

    waves = noise(4)
    frames = models.frame_counts(model, [w.size for w in waves])
    assert len(set(frames)) == 4

    def poisoned(*args, **kwargs):  # the model's layer 2 gives NaN for the third clip
        for batch in real(*args, **kwargs):
            for b, n in enumerate(batch.mask.sum(1).tolist()):
                if n == frames[2]:
                    batch.hidden_states[2][b, 3] = float("nan")
            yield batch

    clean = analyze(model, [w for i, w in enumerate(waves) if i != 2], sample_rate=SAMPLE_RATE, metrics=("cosine", "cka"))
    monkeypatch.setattr(fastsim.analysis, "hidden_state_batches", poisoned)
    result = analyze(model, waves, sample_rate=SAMPLE_RATE, metrics=("cosine", "cka"), batch_size=4)
    assert result.clips == 3 and [f.source for f in result.failures] == ["array #2"]
    assert "NaN or Inf (from hidden state 2 on)" in result.failures[0].reason
    assert result.seconds_of_audio == pytest.approx(sum(w.size for i, w in enumerate(waves) if i != 2) / SAMPLE_RATE)
    for m in ("cosine", "cka"):
        np.testing.assert_allclose(result.matrices[m], clean.matrices[m], atol=1e-5)
    with pytest.raises(ValueError, match="array #2: the model's hidden states"):
        analyze(model, waves, sample_rate=SAMPLE_RATE, metrics=("cosine",), strict=True)


# ---- 12: named errors instead of tracebacks ------------------------------------------------------------

@pytest.mark.parametrize("command", ["analyze", "prune", "distill"])
def test_bad_devices_are_named(tmp_path, monkeypatch, command):
    no_computation(monkeypatch, command)
    devices = ["foo", "cuda:99"] + ([] if torch.cuda.is_available() else ["cuda"])
    for device in devices:
        with pytest.raises(SystemExit, match="--device: 'cuda(:99)?'|--device: 'foo' is not a torch device"):
            cli.main([command, "random:wav2vec2-tiny", "--out", str(tmp_path / "o"), "--device", device])


def test_analyze_clips_zero_is_named(tmp_path, monkeypatch):
    no_computation(monkeypatch, "analyze")
    with pytest.raises(SystemExit, match="--clips must be >= 1"):
        cli.main(["analyze", "--clips", "0", "--out", str(tmp_path / "o")])


@pytest.mark.parametrize("argv", [
    ["distill", "--lr", "inf"], ["distill", "--lr", "nan"], ["distill", "--weight-decay", "inf"],
    ["distill", "--crop-seconds", "inf"], ["analyze", "--threshold", "nan"], ["prune", "--threshold", "nan"],
    ["analyze", "--min-contrast", "inf"],
])
def test_non_finite_numbers_are_refused_by_flag(argv, capsys, monkeypatch):
    no_computation(monkeypatch, argv[0])
    with pytest.raises(SystemExit):
        cli.main(argv)
    assert f"argument {argv[1]}: must be a finite number" in capsys.readouterr().err


def test_library_refuses_non_finite_lr_and_threshold(tmp_path):
    with pytest.raises(ValueError, match="lr must be a finite number"):
        small_distill(None, lr=float("inf"))
    with pytest.raises(ValueError, match="crop_seconds"):
        small_distill(None, crop_seconds=float("inf"))
    with pytest.raises(ValueError, match="threshold must be a finite number"):
        find_blocks(RANDOM_BASE_CKA, float("nan"))


CLI_DISTILL = ["--batch-size", "2", "--crop-seconds", "0.25", "--no-progress", "--tasks", "", "--no-baseline",
               "--time-batch", "1", "--time-seconds", "0.5", "--repeats", "1", "--warmup", "0", "--clips", "2",
               "--checkpoint-every", "1"]


@pytest.fixture(scope="module")
def cli_checkpoint(tmp_path_factory):
    """OUT of a 2-step fastsim distill run (its checkpoint in OUT/checkpoint)."""
    out = tmp_path_factory.mktemp("distilled") / "out"
    assert cli.main(["distill", "random:wav2vec2-tiny", "--out", str(out), "--steps", "2", *CLI_DISTILL]) == 0
    return out


def damage(folder, how):
    name = {"truncated weights": "mimic.safetensors", "truncated moments": "optimizer.safetensors"}.get(how, "state.json")
    path = folder / name
    if how.startswith("truncated"):
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    else:
        path.write_bytes(b"\x00\xffnot json{" if how == "garbage state" else b"[1, 2]")
    return name


DAMAGES = ["truncated weights", "truncated moments", "garbage state", "state not an object"]


@pytest.mark.parametrize("how", DAMAGES)
def test_resume_from_a_damaged_checkpoint_names_the_file(tmp_path, how):
    ck = tmp_path / "checkpoint"
    small_distill(ck, steps=2)
    name = damage(ck, how)
    with pytest.raises(ValueError, match=f"{name} is damaged"):
        small_distill(ck, steps=3, resume=True)


@pytest.mark.parametrize("how", DAMAGES)
def test_resume_command_from_a_damaged_checkpoint_names_the_file(tmp_path, cli_checkpoint, how):
    out = tmp_path / "out"
    shutil.copytree(cli_checkpoint, out)
    name = damage(out / "checkpoint", how)
    with pytest.raises(SystemExit, match=f"--resume: .*{name} is damaged"):
        cli.main(["distill", "random:wav2vec2-tiny", "--out", str(out), "--resume", "--steps", "3", *CLI_DISTILL])
    shutil.rmtree(out)
    shutil.copytree(cli_checkpoint, out)  # undamaged, the same command resumes
    assert cli.main(["distill", "random:wav2vec2-tiny", "--out", str(out), "--resume", "--steps", "3", *CLI_DISTILL]) == 0


def test_analyze_names_k_when_it_exceeds_the_samples(tmp_path):
    clip = synth.sentences(2, root=tmp_path / "cache")
    with pytest.raises(SystemExit, match=r"^fastsim: error: --k must satisfy 1 <= k < n .*got k = 5, n = 2"):
        cli.main(["analyze", "random:wav2vec2-tiny", *[c.path for c in clip], "--representation", "mean",
                  "--metrics", "mutual_knn", "--k", "5", "--out", str(tmp_path / "o"), "--no-progress"])
    assert not (tmp_path / "o").exists()


# ---- 14: no block structure -------------------------------------------------------------------------

def test_block_plan_on_a_smooth_matrix_says_there_is_no_block_structure():
    from fastsim.prune import plan

    assert plan(RANDOM_BASE_CKA, 0, "block") == []
    with pytest.raises(ValueError, match="nothing to remove.*no block structure.*contrast"):
        plan(RANDOM_BASE_CKA, 2, "block")
    assert plan(RANDOM_BASE_CKA, 2, "block", min_contrast=0) != []  # the bare cut still invents blocks
    from fastsim.prune.plans import layer_blocks

    found = layer_blocks(RANDOM_BASE_CKA)
    assert found.blocks == [] and len(found.candidates) >= 2 and abs(found.contrast) < 0.01


# ---- 15: .gitignore ---------------------------------------------------------------------------------

def test_gitignore_holds_the_default_output_folders():
    if shutil.which("git") is None or not os.path.isdir(os.path.join(REPO, ".git")):
        pytest.skip("not a git checkout")
    import argparse

    sub = argparse.ArgumentParser().add_subparsers()
    outs = [command.add_parser(sub).get_default("out") for command in cli.COMMANDS]
    outs = [o for o in outs if o]
    assert sorted(outs) == ["fastsim-analysis", "fastsim-distill", "fastsim-prune"]
    for out in outs:
        done = subprocess.run(["git", "-C", REPO, "check-ignore", "-q", f"{out}/matrices.npz"])
        assert done.returncode == 0, f"{out}/ is not in .gitignore"


# ---- bugs the previous engineer noticed --------------------------------------------------------------

def test_adapter_models_mask_the_stack_frames():
    model = models.random_model("wav2vec2", "tiny", add_adapter=True, num_adapter_layers=1, adapter_stride=2)
    rng = np.random.default_rng(0)
    waves = [(name, rng.normal(size=8000).astype(np.float32)) for name in "ab"]
    stack = models.frame_counts(models.random_model("wav2vec2", "tiny"), [8000])[0]
    for batch in runner.hidden_state_batches(model, waves):
        assert all(h.shape[1] == stack for h in batch.hidden_states)
        assert batch.mask.sum(1).tolist() == [stack, stack]  # every stack frame, not the adapter's half
    for batch in runner.hidden_state_batches(model, waves, all_layers=False):
        T = batch.hidden_states[0].shape[1]
        assert T < stack and batch.mask.sum(1).tolist() == [T, T]  # the adapter's output: its own frames


def test_a_file_listed_under_two_labels_keeps_both(wavs, tmp_path):
    from fastsim.speech.tasks import load_labelled

    a, b = str(wavs / "0.wav"), str(wavs / "1.wav")
    (tmp_path / "broken.wav").write_bytes(b"RIFF....not a wav")
    loaded = load_labelled([synth.Clip(a, "yes"), synth.Clip(a, "no"), synth.Clip(b, "no"),
                            synth.Clip(str(tmp_path / "broken.wav"), "yes")])
    assert [n for n, _ in loaded.waves] == [a, a, b] and loaded.labels.tolist() == ["yes", "no", "no"]
    assert len(loaded.failures) == 1


def test_prune_plot_with_an_unpruned_accuracy_of_zero(tmp_path):
    from fastsim.prune.sweep import SweepPoint, SweepResult

    points = [SweepPoint("last", 0, [], [0, 1], 0.0, [0.0], float("nan"), 10, 0.01),
              SweepPoint("last", 1, [1], [0], 0.0, [0.0], float("nan"), 5, 0.005)]
    result = SweepResult("m", "keywords", 2, 4, 1.0, 2, 0.0, 10, points)
    written = result.save(tmp_path / "p")
    assert [os.path.basename(w) for w in written] == ["prune.json", "prune.png"]
    assert (tmp_path / "p" / "prune.png").stat().st_size > 1000


def test_distill_summary_speaks_the_library_language():
    from fastsim.mimic.pipeline import DistillReport

    part = types.SimpleNamespace(summary=lambda: "")
    report = DistillReport("m", None, "mse", 1, None, part, part)
    text = report.summary()
    assert "--tasks" not in text and "no probe tasks" in text
