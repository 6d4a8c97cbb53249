"""When a training run validates and when it stops: the validation cadence and early stopping."""

from __future__ import annotations

import math
from typing import Any


def step_schedule(p: dict[str, Any], steps_per_epoch: int) -> tuple[int, int]:
    """The validation cadence and the minimum epochs of a run with ``steps_per_epoch`` optimiser steps per epoch.

    With ``val_steps`` / ``min_steps`` in the parameters ``p``, a large reference (many steps per epoch)
    validates and may stop after as many optimiser steps as a small one would, instead of as many epochs;
    never later than ``val_every`` / ``min_epochs`` epochs.

    Returns
    -------
    val_every, min_epochs : int
    """
    val_every, min_epochs = int(p["val_every"]), int(p["min_epochs"])
    steps = max(1, int(steps_per_epoch))
    if p.get("val_steps"):
        val_every = max(1, min(val_every, math.ceil(p["val_steps"] / steps)))
    if p.get("min_steps"):
        min_epochs = min(min_epochs, math.ceil(p["min_steps"] / steps))
    return val_every, min_epochs


class Patience:
    """Early stopping: stop after ``patience`` validations without a new best score, once ``min_epochs`` ran.

    A ``patience`` of 0 or None never stops. ``top`` is the best score so far, ``since`` the validations since
    it."""

    def __init__(self, patience: int | None, min_epochs: int):
        self.patience, self.min_epochs = patience, min_epochs
        self.top, self.since = -math.inf, 0

    @property
    def stops(self) -> bool:
        """Whether this rule can stop a run early at all."""
        return bool(self.patience)

    def update(self, score: float, epochs_done: int) -> bool:
        """Record the score of a validation after ``epochs_done`` epochs; True when the run should stop."""
        if score > self.top:
            self.top, self.since = score, 0
        else:
            self.since += 1
        return bool(self.patience) and self.since >= self.patience and epochs_done >= self.min_epochs
