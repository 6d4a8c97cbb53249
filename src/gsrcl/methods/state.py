"""Helpers for a fitted model's state (``state()`` / ``from_state()``): JSON-able config values and prefixed
array names."""

from __future__ import annotations

import math

import numpy as np


def jsonable(obj):
    """``obj`` with numpy scalars as Python ones, tuples as lists, dict keys as str and NaN as None."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, float) and math.isnan(obj):
        return None
    return obj


def split_arrays(arrays: dict[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    """The arrays whose key starts with ``prefix``, with it removed."""
    return {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}


def prefixed(arrays: dict[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    """The arrays with ``prefix`` put before each key (the inverse of ``split_arrays``)."""
    return {f"{prefix}{k}": np.asarray(v) for k, v in arrays.items()}
