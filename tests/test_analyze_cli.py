"""fastsim analyze end to end: a tiny model saved to a temp dir, speech synthesized with espeak-ng,
the files it writes; bad input; and the same analysis spread over two gloo ranks."""

import json
import os

import numpy as np
import pytest
import torch.distributed as dist
import torch.multiprocessing as mp

from fastsim import cli
from fastsim.analysis import analyze
from fastsim.speech import models, synth
from fastsim.speech.audio import SAMPLE_RATE


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    root = tmp_path_factory.mktemp("analyze")
    models.random_model("wavlm", "tiny", seed=3).save_pretrained(root / "model")
    audio = root / "audio"
    (audio / "more").mkdir(parents=True)
    for i, clip in enumerate(synth.sentences(4, root=root / "cache")):
        os.link(clip.path, (audio if i % 2 else audio / "more") / f"s{i}.wav")
    (audio / "zz-broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot really")
    return root


def test_cli_writes_matrices_heatmaps_and_blocks(workdir, capsys):
    import matplotlib.image

    out = workdir / "out"
    code = cli.main(["analyze", str(workdir / "model"), str(workdir / "audio"), "--out", str(out),
                     "--metrics", "cosine,cka,mutual_knn,rbf_cka", "--no-progress", "--k", "5"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "skipped" in printed and "zz-broken.wav" in printed  # one bad file reported, not fatal
    assert "blocks of mutually similar consecutive layers" in printed

    saved = np.load(out / "matrices.npz")
    assert list(saved["layers"]) == ["input", "1", "2", "3", "4"]
    report = json.loads((out / "analysis.json").read_text())
    assert report["clips"] == 4 and report["frames"] > 100 and len(report["skipped"]) == 1
    for metric in ("cosine", "cka", "mutual_knn", "rbf_cka"):
        m = saved[metric]
        assert m.shape == (5, 5) and np.allclose(np.diag(m), 1.0) and np.allclose(m, m.T)
        np.testing.assert_allclose(np.array(report["metrics"][metric]["matrix"]), m)
        csv = np.loadtxt(out / f"{metric}.csv", delimiter=",", skiprows=1, usecols=range(1, 6))
        np.testing.assert_allclose(csv, m)
        image = matplotlib.image.imread(out / f"heatmap_{metric}.png")
        assert image.shape[0] > 300 and image.shape[1] > 300 and image[..., :3].std() > 0.05  # a real picture


def test_cli_reports_bad_input_clearly(workdir, capsys):
    with pytest.raises(SystemExit, match="unknown metric.*pearson"):
        cli.main(["analyze", str(workdir / "model"), str(workdir / "audio"), "--metrics", "cosine,pearson"])
    with pytest.raises(SystemExit, match="zz-broken.wav: cannot read"):
        cli.main(["analyze", str(workdir / "model"), str(workdir / "audio"), "--strict", "--no-progress",
                  "--out", str(workdir / "strict")])
    with pytest.raises(SystemExit, match="cannot load"):
        cli.main(["analyze", str(workdir / "no-model"), str(workdir / "audio")])
    with pytest.raises(SystemExit, match="random:FAMILY-SIZE"):
        cli.main(["analyze", "random:conformer-base"])
    with pytest.raises(SystemExit, match="holds no audio"):
        cli.main(["analyze", str(workdir / "model"), str(workdir / "model")])


def clips():
    rng = np.random.default_rng(5)
    return [(rng.normal(size=n) * np.hanning(n)).astype(np.float32) for n in (4000, 6100, 4000, 9000, 5200)]


def rank_worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        model = models.random_model("wav2vec2", "tiny", seed=1)
        result = analyze(model, clips(), sample_rate=SAMPLE_RATE, metrics=("cosine", "cka", "mutual_knn"), k=4,
                         distributed=True)
        np.savez(os.path.join(out_dir, f"rank{rank}.npz"), frames=result.frames, clips=result.clips, **result.matrices)
    finally:
        dist.destroy_process_group()


def test_two_gloo_ranks_equal_one_process(tmp_path):
    mp.spawn(rank_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    single = analyze(models.random_model("wav2vec2", "tiny", seed=1), clips(), sample_rate=SAMPLE_RATE,
                     metrics=("cosine", "cka", "mutual_knn"), k=4)
    for rank in (0, 1):
        got = np.load(tmp_path / f"rank{rank}.npz")
        assert int(got["frames"]) == single.frames and int(got["clips"]) == single.clips == 5
        for metric, m in single.matrices.items():
            # the same activations; only the order of float32 sums differs between the runs
            np.testing.assert_allclose(got[metric], m, atol=1e-6)
