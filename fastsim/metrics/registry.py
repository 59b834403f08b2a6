"""Name -> metric. (Skeleton: names and titles; the full specs land with the metric modules.)"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Metric:
    name: str
    title: str


REGISTRY: dict[str, Metric] = {
    m.name: m
    for m in (
        Metric("cosine", "mean per-frame cosine similarity"),
        Metric("cka", "linear CKA"),
        Metric("rbf_cka", "RBF CKA (median sigma)"),
        Metric("mutual_knn", "mutual kNN alignment"),
        Metric("cknna", "CKNNA (CKA on mutual neighbours)"),
    )
}


def names() -> tuple[str, ...]:
    return tuple(REGISTRY)


def get(name: str) -> Metric:
    if not isinstance(name, str) or name not in REGISTRY:
        raise ValueError(f"metric must be one of {', '.join(map(repr, REGISTRY))}; got {name!r}")
    return REGISTRY[name]


def title(name: str) -> str:
    return get(name).title
