"""The measures of issue 15 across a real torch.distributed group: gloo, 2 processes, on the CPU.
Every exact-streaming measure's accumulator, all-reduced, equals its float64 reference on the
union of the ranks' data to 1e-9 (uneven shards, one rank without data); LayerSimilarity with
exact and sampled new measures equals one process."""

import os

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import fastsim
from fastsim import reference as R
from fastsim.metrics import registry

EXACT = ["procrustes", "cca_r2", "cca_mean", "svcca", "pwcca", "linear_regression", "rsa_linear", "rsa_cosine"]
N = 90


def data():
    rng = np.random.default_rng(15)
    base = rng.normal(size=(N, 5)) + 40.0
    return [
        base,
        np.tanh((base - 40.0) @ rng.normal(size=(5, 6)) / 3) + 0.3 * rng.normal(size=(N, 6)),
        (base - 40.0) @ rng.normal(size=(5, 3)) * 1e3 + rng.normal(size=(N, 3)),
    ]


def worker(rank: int, world: int, init_file: str, out_dir: str, split: int) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        layers = [torch.from_numpy(x) for x in data()]
        s, e = (0, split) if rank == 0 else (split, N)
        out = {}
        for name in EXACT:
            acc = registry.get(name).accumulator(precision="highest")
            acc.update([x[s:s] for x in layers])  # an empty chunk: fixes the widths, adds nothing
            for c in range(s, e, 17):
                acc.update([x[c : min(e, c + 17)] for x in layers])
            acc.all_reduce()
            out[name] = acc.compute().numpy()
        np.savez(os.path.join(out_dir, f"rank{rank}.npz"), **out)
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("split", [31, N])  # uneven shards; one rank without data
def test_two_gloo_ranks_equal_the_reference(tmp_path, split):
    mp.spawn(worker, args=(2, str(tmp_path / "init"), str(tmp_path), split), nprocs=2, join=True)
    layers = data()
    for rank in (0, 1):
        got = np.load(tmp_path / f"rank{rank}.npz")
        for name in EXACT:
            np.testing.assert_allclose(got[name], R.similarity_matrix(layers, name), rtol=1e-9, atol=1e-9,
                                       err_msg=f"{name} on rank {rank}")


MIXED = ["cca_r2", "procrustes", "rsa_cosine", "jaccard_knn", "second_order_cosine", "rsa_spearman"]


def similarity_data():
    rng = np.random.default_rng(16)
    h = [torch.from_numpy(rng.normal(size=(6, 10, 4)))]
    for _ in range(2):
        h.append(h[-1] + 0.4 * torch.tanh(h[-1] @ torch.from_numpy(rng.normal(size=(4, 4)))))
    mask = torch.arange(10)[None, :] < torch.tensor([10, 7, 9, 6, 10, 8])[:, None]
    return h, mask


def similarity_worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        h, mask = similarity_data()
        acc = fastsim.LayerSimilarity(MIXED, k=3, seed=rank)
        for b in range(rank, h[0].shape[0], world):  # utterances dealt out to the ranks
            acc.update([x[b : b + 1] for x in h], mask[b : b + 1])
        acc.all_reduce()
        out = acc.compute()
        np.savez(os.path.join(out_dir, f"sim{rank}.npz"), **{k: v.numpy() for k, v in out.items()})
    finally:
        dist.destroy_process_group()


def test_layer_similarity_with_new_measures_across_two_gloo_ranks(tmp_path):
    mp.spawn(similarity_worker, args=(2, str(tmp_path / "init2"), str(tmp_path)), nprocs=2, join=True)
    h, mask = similarity_data()
    frames = [x[mask].numpy() for x in h]
    for rank in (0, 1):
        got = np.load(tmp_path / f"sim{rank}.npz")
        for name in MIXED:
            opts = {"k": 3} if "knn" in name or name == "second_order_cosine" else {}
            # 55 frames < max_samples: the sampled measures see every frame too
            np.testing.assert_allclose(got[name], R.similarity_matrix(frames, name, **opts), rtol=1e-9, atol=1e-9,
                                       err_msg=f"{name} on rank {rank}")
