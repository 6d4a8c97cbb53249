"""Several models of one method, trained with different seeds, whose scores are averaged.

A contrastive encoder trained on a small reference places the boundaries between close types (NK against
cytotoxic CD8 T cells, CD14 against FCGR3A monocytes) somewhere new for each seed, and a query from another
study falls on either side of them by chance. The mean of the members' scores is steadier than any one of
them (deep ensembles, Lakshminarayanan et al. 2017). Each member has its own seed, so its own validation split,
initial weights and batches; members never see the query.

On disk an ensemble is its members' states side by side: member ``i``'s arrays under ``member{i}.`` and its
config in the list ``members``. A model with one member is stored as the plain model.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._training import EstimatorBase, prefixed, split_arrays

__all__ = ["Ensemble", "member_seeds", "check_pool", "load_model", "POOLS"]

POOLS = ("mean", "geometric")
TINY_SCORE = 1e-12  # floor before the log of the geometric pool


def member_seeds(seed: int, n: int) -> list[int]:
    """``n`` seeds, the first ``seed`` itself (so that one member is the single model), the others drawn from it."""
    if int(n) != n or n < 1:
        raise ValueError(f"ensemble must be a positive number of models, not {n!r}")
    extra = np.random.SeedSequence(int(seed)).generate_state(int(n) - 1) % (2**31 - 1)
    return [int(seed), *map(int, extra)]


def check_pool(pool) -> None:
    if pool not in POOLS:
        raise ValueError(f"unknown pool {pool!r}; choose one of {', '.join(POOLS)}")


class Ensemble:
    """Fitted members of one method with the same cell types; ``predict_scores`` pools theirs, ``embed`` puts
    their embeddings side by side."""

    predict_proba = EstimatorBase.predict_proba  # the pooled scores, rows divided by their sum

    def __init__(self, members: list) -> None:
        if len(members) < 2:
            raise ValueError("an ensemble needs at least two members")
        first = members[0]
        for m in members[1:]:
            if m.method_name != first.method_name or list(m.cell_types) != list(first.cell_types):
                raise ValueError("the members of an ensemble must be of one method and have the same cell types")
        self.members = list(members)
        check_pool(self.params.get("pool", "mean"))

    @property
    def method_name(self) -> str:
        return self.members[0].method_name

    @property
    def cell_types(self) -> list[str]:
        return list(self.members[0].cell_types)

    @property
    def params(self) -> dict[str, Any]:
        return self.members[0].params

    @property
    def hyperparameters(self) -> dict[str, Any]:
        return {**self.members[0].hyperparameters, "member_seeds": [int(m.seed) for m in self.members]}

    @property
    def history_(self) -> dict[str, Any]:
        return getattr(self.members[0], "history_", {})

    @property
    def validation_(self) -> dict[str, Any]:
        """The first member's validation record (as its ``history_``), with every member's under ``members``."""
        records = [getattr(m, "validation_", {}) for m in self.members]
        return {**records[0], "members": records}

    def predict_scores(self, X) -> np.ndarray:
        """The members' scores pooled by ``params['pool']``: ``mean``, or ``geometric`` (the mean of their logs,
        rows renormalised where the method's scores are a distribution over the types)."""
        geometric = self.params.get("pool", "mean") == "geometric"
        total = None
        for m in self.members:
            s = np.asarray(m.predict_scores(X), dtype=np.float64)
            if geometric:
                s = np.log(np.maximum(s, TINY_SCORE))
            total = s if total is None else total + s
        total /= len(self.members)
        if not geometric:
            return total
        out = np.exp(total)
        if getattr(self.members[0], "scores_sum_to_one", False):
            out /= out.sum(axis=1, keepdims=True)
        return out

    def embed(self, X) -> np.ndarray:
        return np.hstack([np.asarray(m.embed(X), dtype=np.float32) for m in self.members])

    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        configs, arrays = [], {}
        for i, m in enumerate(self.members):
            config, member_arrays = m.state()
            configs.append(config)
            arrays.update(prefixed(member_arrays, f"member{i}."))
        return {"method": self.method_name, "cell_types": self.cell_types, "members": configs}, arrays

    @classmethod
    def from_state(cls, member_class, config: dict[str, Any], arrays: dict[str, np.ndarray]) -> "Ensemble":
        configs = config.get("members")
        if not isinstance(configs, list) or len(configs) < 2:
            raise ValueError("an ensemble's config must list at least two members")
        stray = sorted(k for k in arrays if not any(k.startswith(f"member{i}.") for i in range(len(configs))))
        if stray:
            raise ValueError(f"unexpected arrays {stray[:3]} (the config lists {len(configs)} members)")
        members = [member_class.from_state(c, split_arrays(arrays, f"member{i}.")) for i, c in enumerate(configs)]
        ensemble = cls(members)
        if ensemble.cell_types != [str(t) for t in config.get("cell_types", [])]:
            raise ValueError("the ensemble's cell types differ from its members'")
        return ensemble


def load_model(member_class, config: dict[str, Any], arrays: dict[str, np.ndarray]):
    """The fitted model of a saved state: an `Ensemble` when the config lists members, else the plain model."""
    if "members" in config:
        return Ensemble.from_state(member_class, config, arrays)
    return member_class.from_state(config, arrays)
