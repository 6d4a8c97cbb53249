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

from .base import EstimatorBase
from .state import prefixed, split_arrays

__all__ = ["Ensemble", "member_seeds", "check_pool", "load_model", "POOLS"]

POOLS = ("mean", "geometric")
TINY_SCORE = 1e-12  # floor before the log of the geometric pool


def member_seeds(seed: int, n: int) -> list[int]:
    """``n`` seeds, the first ``seed`` itself (so that one member is the single model), the others drawn from it.

    Raises
    ------
    ValueError
        Unless ``n`` is a positive integer.
    """
    if int(n) != n or n < 1:
        raise ValueError(f"ensemble must be a positive number of models, not {n!r}")
    extra = np.random.SeedSequence(int(seed)).generate_state(int(n) - 1) % (2**31 - 1)
    return [int(seed), *map(int, extra)]


def check_pool(pool) -> None:
    """Raise ValueError unless ``pool`` is one of `POOLS`."""
    if pool not in POOLS:
        raise ValueError(f"unknown pool {pool!r}; choose one of {', '.join(POOLS)}")


class Ensemble:
    """Fitted members of one method with the same cell types; ``predict_scores`` pools theirs, ``embed`` puts
    their embeddings side by side.

    Parameters
    ----------
    members : list of fitted estimators
        At least two, of one method, with the same cell types.
    pool : {"mean", "geometric"}
        How ``predict_scores`` pools the members' scores.

    Raises
    ------
    ValueError
        For fewer than two members, members that differ in method or cell types, or an unknown pool.
    """

    predict_proba = EstimatorBase.predict_proba  # the pooled scores, rows divided by their sum

    def __init__(self, members: list, pool: str = "mean") -> None:
        if len(members) < 2:
            raise ValueError("an ensemble needs at least two members")
        first = members[0]
        for m in members[1:]:
            if m.method_name != first.method_name or list(m.cell_types) != list(first.cell_types):
                raise ValueError("the members of an ensemble must be of one method and have the same cell types")
        check_pool(pool)
        self.members = list(members)
        self.pool = pool

    @property
    def method_name(self) -> str:
        return self.members[0].method_name

    @property
    def classes_(self) -> list[str]:
        return list(self.members[0].classes_)

    cell_types = classes_

    @property
    def hyperparameters(self) -> dict[str, Any]:
        """The first member's hyperparameters (the members differ only in their seeds)."""
        return self.members[0].hyperparameters

    @property
    def history_(self) -> dict[str, Any]:
        return getattr(self.members[0], "history_", {})

    @property
    def validation_(self) -> dict[str, Any]:
        """The first member's validation record (as its ``history_``), with every member's under ``members``."""
        records = [getattr(m, "validation_", {}) for m in self.members]
        return {**records[0], "members": records}

    def predict_scores(self, X) -> np.ndarray:
        """The members' scores pooled by ``pool``: ``mean``, or ``geometric`` (the mean of their logs, rows
        renormalised where the method's scores are a distribution over the types)."""
        return self._pool([m.predict_scores(X) for m in self.members])

    def predict_scores_and_embed(self, X, rows) -> tuple[np.ndarray, np.ndarray]:
        """``predict_scores(X)`` and ``embed`` of the cells at the sorted positions ``rows`` of X, from one
        encoder pass of each member."""
        pairs = [m.predict_scores_and_embed(X, rows) for m in self.members]
        return self._pool([s for s, _ in pairs]), np.hstack([np.asarray(e, dtype=np.float32) for _, e in pairs])

    def _pool(self, member_scores: list) -> np.ndarray:
        geometric = self.pool == "geometric"
        total = None
        for s in member_scores:
            s = np.asarray(s, dtype=np.float64)
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
        """The members' embeddings of ``X``, side by side (float32)."""
        return np.hstack([np.asarray(m.embed(X), dtype=np.float32) for m in self.members])

    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """The config (method, cell types, pool, the members' configs) and the members' arrays under
        ``member{i}.``."""
        configs, arrays = [], {}
        for i, m in enumerate(self.members):
            config, member_arrays = m.state()
            configs.append(config)
            arrays.update(prefixed(member_arrays, f"member{i}."))
        config = {"method": self.method_name, "cell_types": self.cell_types, "pool": self.pool, "members": configs}
        return config, arrays

    @classmethod
    def from_state(cls, member_class, config: dict[str, Any], arrays: dict[str, np.ndarray]) -> "Ensemble":
        """The ensemble of a saved `state`, its members rebuilt by ``member_class.from_state``.

        Raises
        ------
        ValueError
            For a config that lists fewer than two members, arrays of no member, or cell types that differ.
        """
        configs = config.get("members")
        if not isinstance(configs, list) or len(configs) < 2:
            raise ValueError("an ensemble's config must list at least two members")
        stray = sorted(k for k in arrays if not any(k.startswith(f"member{i}.") for i in range(len(configs))))
        if stray:
            raise ValueError(f"unexpected arrays {stray[:3]} (the config lists {len(configs)} members)")
        members = [member_class.from_state(c, split_arrays(arrays, f"member{i}.")) for i, c in enumerate(configs)]
        # references made before the pool had its place here recorded it with the members' hyperparameters
        pool = config.get("pool", configs[0].get("hyperparameters", {}).get("pool", "mean"))
        ensemble = cls(members, pool=pool)
        if ensemble.cell_types != [str(t) for t in config.get("cell_types", [])]:
            raise ValueError("the ensemble's cell types differ from its members'")
        return ensemble


def load_model(member_class, config: dict[str, Any], arrays: dict[str, np.ndarray]):
    """The fitted model of a saved state: an `Ensemble` when the config lists members, else the plain model
    (``member_class.from_state``)."""
    if "members" in config:
        return Ensemble.from_state(member_class, config, arrays)
    return member_class.from_state(config, arrays)
