"""Progress bars of training: the epochs of one run, and the SVM fits after it.

Both are tqdm bars that disappear when done and show nothing with ``quiet``; they only display, so a model is the
same with or without them.
"""

from __future__ import annotations

import math

from .schedule import Patience


class EpochBar:
    """The epoch bar of one training run.

    With early stopping the number of epochs is not known in advance, so the bar counts epochs with no total
    and no ETA, and says how many it runs at most; without early stopping it counts towards ``epochs``. After
    each epoch it shows the epoch's mean loss; once a validation has run, the last checkpoint score (the
    validation MCC of a classifier on the embeddings, named ``score_name``), the epoch it was measured after and
    the best so far; with early stopping, the validations without gain against the patience.

    Parameters
    ----------
    desc : str
        The bar's label, e.g. ``"afrcl training"``.
    epochs : int
        The most epochs the run takes.
    patience : Patience
        The run's early-stopping rule, read (never updated) by the bar.
    quiet : bool
        Show nothing.
    score_name : str
        What the checkpoint score is, as the bar names it.
    validates : bool
        Whether the run validates at all (it cannot stop early without validation cells).
    """

    def __init__(self, desc: str, epochs: int, patience: Patience, quiet: bool, score_name: str = "val MCC",
                 validates: bool = True):
        from tqdm.auto import tqdm

        self.patience, self.score_name = patience, score_name
        self.early = patience.stops and validates
        self.epoch, self.scored_epoch, self.score = 0, None, math.nan
        fmt = None
        if self.early:  # no total: the run may stop at any validation
            fmt = "{desc}: epoch {n_fmt} of at most " + str(int(epochs)) + " [{elapsed}, {rate_fmt}{postfix}]"
        self.bar = tqdm(total=None if self.early else int(epochs), desc=desc, unit="epoch", disable=quiet,
                        leave=False, dynamic_ncols=True, bar_format=fmt)

    def update(self, loss: float, score: float | None = None) -> None:
        """One epoch done with mean loss ``loss``; ``score`` is the checkpoint score when it was validated."""
        self.epoch += 1
        if score is not None:
            self.scored_epoch, self.score = self.epoch, float(score)
        self.bar.update()
        # a new checkpoint score is always shown (tqdm redraws at most every 0.1 s otherwise)
        self.bar.set_postfix_str(self.describe(loss), refresh=score is not None)

    def describe(self, loss: float) -> str:
        """The bar's text after the counts: the loss, the checkpoint score, the early-stopping state."""
        parts = [f"loss {loss:.4g}"]
        if self.scored_epoch is not None:
            top = self.patience.top
            parts.append(f"{self.score_name} (checkpoint score) {self.score:.3f} after epoch {self.scored_epoch}"
                         + (f", best {top:.3f}" if math.isfinite(top) else ""))
            if self.early:
                wait = self.patience.since >= self.patience.patience and self.epoch < self.patience.min_epochs
                parts.append(f"early stop: {self.patience.since}/{self.patience.patience} validations without gain"
                             + (f", not before epoch {self.patience.min_epochs}" if wait else ""))
        return ", ".join(parts)

    def close(self) -> None:
        self.bar.close()


def svm_bar(desc: str, total: int, quiet: bool):
    """A bar over ``total`` SVM fits (each a grid search with CV), labelled ``desc``; nothing with ``quiet``."""
    from tqdm.auto import tqdm

    # each fit takes long enough that redrawing after every one costs nothing
    return tqdm(total=total, desc=desc, unit="SVM", disable=quiet, leave=False, dynamic_ncols=True, mininterval=0)
