"""StreamingCKA.all_reduce over a real torch.distributed group: gloo, 2 processes, on the CPU."""

import os

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import fastsim
from fastsim import reference as R


def data():
    rng = np.random.default_rng(11)
    base = rng.normal(size=(120, 6)) + 50.0
    return [base, np.tanh(base @ rng.normal(size=(6, 8)) / 4) + 0.2 * rng.normal(size=(120, 8))]


def worker(rank: int, world: int, init_file: str, out_dir: str, split: int) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        layers = [torch.from_numpy(x) for x in data()]
        s, e = (0, split) if rank == 0 else (split, 120)
        acc = fastsim.StreamingCKA(debiased=True)
        acc.update([x[s:s] for x in layers])  # an empty chunk: fixes the widths, adds nothing
        for c in range(s, e, 25):
            acc.update([x[c : min(e, c + 25)] for x in layers])
        acc.all_reduce()
        np.save(os.path.join(out_dir, f"rank{rank}.npy"), acc.compute().numpy())
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("split", [70, 120])  # uneven shards; one rank without data
def test_two_gloo_ranks_equal_one_process(tmp_path, split):
    mp.spawn(worker, args=(2, str(tmp_path / "init"), str(tmp_path), split), nprocs=2, join=True)
    single = fastsim.StreamingCKA(debiased=True).update(data()).compute()
    for rank in (0, 1):
        got = np.load(tmp_path / f"rank{rank}.npy")
        np.testing.assert_allclose(got, single, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(single, R.similarity_matrix(data(), "cka", debiased=True), rtol=1e-9)


def similarity_worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    from fastsim.layer_similarity import LayerSimilarity

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        h, mask = similarity_data()
        acc = LayerSimilarity(["cosine", "cka", "mutual_knn"], k=3, seed=rank)
        for b in range(rank, h[0].shape[0], world):  # utterances dealt out to the ranks
            acc.update([x[b : b + 1] for x in h], mask[b : b + 1])
        acc.all_reduce()
        out = acc.compute()
        np.savez(os.path.join(out_dir, f"sim{rank}.npz"), **{k: v.numpy() for k, v in out.items()})
    finally:
        dist.destroy_process_group()


def similarity_data():
    rng = np.random.default_rng(12)
    h = [torch.from_numpy(rng.normal(size=(6, 10, 5)))]
    for _ in range(3):
        h.append(h[-1] + 0.4 * torch.tanh(h[-1] @ torch.from_numpy(rng.normal(size=(5, 5)))))
    mask = torch.arange(10)[None, :] < torch.tensor([10, 7, 9, 4, 10, 6])[:, None]
    return h, mask


def test_layer_similarity_across_two_gloo_ranks(tmp_path):
    from fastsim.layer_similarity import LayerSimilarity

    mp.spawn(similarity_worker, args=(2, str(tmp_path / "init2"), str(tmp_path)), nprocs=2, join=True)
    h, mask = similarity_data()
    single = LayerSimilarity(["cosine", "cka", "mutual_knn"], k=3).update(h, mask).compute()
    for rank in (0, 1):
        got = np.load(tmp_path / f"sim{rank}.npz")
        for metric in single:
            np.testing.assert_allclose(got[metric], single[metric].numpy(), rtol=1e-9, atol=1e-12)
