"""Name -> metric: one line per metric module. Adding a metric is one new module (which builds a
``Metric``, see ``fastsim.metrics.spec``) and one line here."""

from __future__ import annotations

from . import (
    cca_mean,
    cca_r2,
    cka,
    cknna,
    cosine,
    cycle_knn,
    jaccard_knn,
    linear_regression,
    mutual_knn,
    procrustes,
    pwcca,
    rank_knn,
    rbf_cka,
    rsa_cosine,
    rsa_linear,
    rsa_spearman,
    second_order_cosine,
    svcca,
)
from .spec import Metric

REGISTRY: dict[str, Metric] = {
    m.name: m
    for m in (
        cosine.METRIC,
        cka.METRIC,
        rbf_cka.METRIC,
        mutual_knn.METRIC,
        cknna.METRIC,
        procrustes.METRIC,
        cca_r2.METRIC,
        cca_mean.METRIC,
        svcca.METRIC,
        pwcca.METRIC,
        linear_regression.METRIC,
        rsa_linear.METRIC,
        rsa_cosine.METRIC,
        rsa_spearman.METRIC,
        jaccard_knn.METRIC,
        rank_knn.METRIC,
        second_order_cosine.METRIC,
        cycle_knn.METRIC,
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
