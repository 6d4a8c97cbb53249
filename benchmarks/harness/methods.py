"""The methods of the benchmark by name."""

from __future__ import annotations

from typing import Any

from gsrcl.errors import GsrclError

from .tasks import DEFAULT_SEED

OURS = ("gsrcl", "afrcl")
BASELINES = ("svm", "svm_rejection", "celltypist")
#: Every method, in the report's column order.
METHOD_NAMES = OURS + BASELINES


def make_method(name: str, seed: int = DEFAULT_SEED, quick: bool = False, overrides: dict[str, Any] | None = None):
    """A new, unfitted method.

    Parameters
    ----------
    name : str
        One of `METHOD_NAMES`.
    seed : int
        Its seed.
    quick : bool
        Ours: tiny networks and a few epochs (``harness.ours.QUICK_OVERRIDES``); no effect on the baselines.
    overrides : dict, optional
        Ours: hyperparameters other than the preset's.

    Returns
    -------
    harness.ours.OurMethod or a class of harness.baselines
        An object with ``fit(adata, labels)``, ``predict(adata)``, ``implementation`` and ``modules``.

    Raises
    ------
    GsrclError
        Unknown name, or ``overrides`` for a baseline.
    """
    if name in OURS:
        from .ours import OurMethod

        return OurMethod(name, seed=seed, quick=quick, overrides=overrides)
    if overrides:
        raise GsrclError(f"settings {sorted(overrides)} are for gsrcl or afrcl, not the baseline {name!r}")
    from .baselines import CellTypistLR, LinearSVM, SVMRejection

    if name == "svm":
        return LinearSVM(seed)
    if name == "svm_rejection":
        return SVMRejection(seed)
    if name == "celltypist":
        return CellTypistLR(seed)
    raise GsrclError(f"unknown method {name!r}; choose from {', '.join(METHOD_NAMES)}")
