"""The two annotation methods, AF-RCL and GsRCL, as scikit-learn style estimators.

Each estimator (`gsrcl.methods.afrcl.AFRCL`, `gsrcl.methods.gsrcl.GsRCL`) takes its hyperparameters as keyword
parameters, resolved against a preset of `gsrcl.methods.presets`, and has ``fit`` / ``predict_scores`` /
``predict_proba`` / ``embed`` and a ``state()`` / ``from_state()`` pair that turns a fitted model into plain
arrays and back (`gsrcl.reference`). `gsrcl.methods.ensemble.Ensemble` pools several fitted models of one method.
"""

from __future__ import annotations

METHODS = ("afrcl", "gsrcl")


def get_method(name: str):
    """The estimator class of method ``name``.

    Raises
    ------
    ValueError
        For a name not in `METHODS`.
    """
    if name == "afrcl":
        from .afrcl import AFRCL

        return AFRCL
    if name == "gsrcl":
        from .gsrcl import GsRCL

        return GsRCL
    raise ValueError(f"unknown method {name!r}; choose one of {', '.join(METHODS)}")
