"""The two annotation methods. Each is an estimator class with ``fit`` / ``predict_scores`` / ``embed`` and a
``state()`` / ``from_state()`` pair that turns a fitted model into plain arrays and back (see reference.py)."""

from __future__ import annotations

METHODS = ("afrcl", "gsrcl")


def get_method(name: str):
    """The estimator class of method ``name``."""
    if name == "afrcl":
        from .afrcl import AFRCL

        return AFRCL
    if name == "gsrcl":
        from .gsrcl import GsRCL

        return GsRCL
    raise ValueError(f"unknown method {name!r}; choose one of {', '.join(METHODS)}")
