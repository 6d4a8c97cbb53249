"""The presets of both methods: one typed table of named settings.

A `Preset` holds the estimator's hyperparameters (`AFRCLParams` or `GsRCLParams`, frozen dataclasses whose
fields are the estimators' keyword parameters) and the pipeline settings that `gsrcl.train` applies around the
estimator (``ensemble``, ``pool``, ``library_size``, ``linear_pool``). Runtime settings (``threads``, ``block``,
``device``, ``quiet``, GsRCL's ``checkpoint_memory_mb``) change how fast a model is fitted, never the model: they are
estimator parameters too, but are not in the table and are not saved with a reference.

``paper`` is the published setting of each method; ``default`` is ``paper`` with the changes listed in
`PRESETS` (why each: docs/decisions.md); ``demo`` is ``default`` with few epochs (``gsrcl demo``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from ..values import CP10K

__all__ = ["Hyperparameters", "AFRCLParams", "GsRCLParams", "Preset", "PRESETS", "ABSENT_MEANS", "RUNTIME",
           "OFF_IS_ZERO", "get_preset", "preset_names"]


@dataclass(frozen=True)
class Hyperparameters:
    """The hyperparameters both methods share (docs/methods.md §3 and §4 describe each method).

    Attributes
    ----------
    hidden, out : tuple of int, int
        The encoder's hidden layer widths and its output width.
    head : tuple of int
        The projection head: hidden widths, then its output width.
    batch_norm : bool or "auto"
        Batch normalisation in the encoder and head; "auto": on only if the training cells outnumber
        ``batch_size``.
    lr, weight_decay : float
        Adam's learning rate and weight decay.
    batch_size : int
        Cells per optimiser step (0 or less: all cells).
    temperature : float
        The contrastive loss's temperature.
    epochs, min_epochs : int
        At most ``epochs`` epochs; early stopping never before ``min_epochs``.
    val_every : int
        Epochs between two validations of the encoder.
    selection : {"quick", "grid"}
        How a checkpoint is scored on the validation cells: one SVM (``quick``) or the full grid search.
    patience : int or None
        Validations without a new best score before stopping (None or 0: never stops early).
    svm_cells : {"train", "train+val"}
        The cells the final SVM(s) are fitted on.
    svm_ties : {"first", "largest_c"}
        Which of the grid settings tied on CV MCC the final SVM takes (`gsrcl.svm.fit_svc`).
    svm_cv : int
        Folds of the final SVM's grid search.
    svm_grid_cells, score_cells : int or None
        Cells (a stratified subset) of the final SVM's grid search, and of the classifier scoring each
        checkpoint (None: all).
    input_dropout : float
        Dropout on the encoder's input.
    validation_size : float
        The share of each cell type kept for validation when ``fit`` is given no validation cells, and by
        `gsrcl.train`.
    average_checkpoints : bool or "always"
        The mean of the checkpoints validated after the first: True, one more candidate (kept if it scores at
        least the best); "always", the model kept; False, not made.
    scale_genes : bool
        Each gene divided by (its standard deviation over the reference cells + 0.1), values clipped at 10; no
        centring, so the input stays sparse. Stored with the model and applied to every query.
    normalize_embedding : bool
        The classifiers see each cell's encoder output scaled to unit length.
    """

    hidden: tuple[int, ...]
    out: int
    head: tuple[int, ...]
    batch_norm: bool | str
    lr: float
    batch_size: int
    temperature: float
    epochs: int
    val_every: int
    selection: str
    patience: int | None
    min_epochs: int
    svm_cells: str
    svm_ties: str
    svm_cv: int = 5
    svm_grid_cells: int | None = None
    score_cells: int | None = None
    input_dropout: float = 0.0
    weight_decay: float = 1e-6
    validation_size: float = 0.2
    average_checkpoints: bool | str = False
    scale_genes: bool = False
    normalize_embedding: bool = False


@dataclass(frozen=True)
class AFRCLParams(Hyperparameters):
    """AF-RCL's hyperparameters: the shared ones and

    Attributes
    ----------
    skip_unexpressed_genes : bool
        Genes no reference cell expresses are left out of training (their first-layer weights stored as
        zeros): they get no gradient from the data anyway, only the weight decay.
    """

    skip_unexpressed_genes: bool = False


@dataclass(frozen=True)
class GsRCLParams(Hyperparameters):
    """GsRCL's hyperparameters: the shared ones and

    Attributes
    ----------
    noise_std : float
        The standard deviation of the Gaussian noise that makes each cell's two views.
    shuffle : bool
        Batches drawn from shuffled cells (the original takes them in order).
    val_steps, min_steps : int or None
        For large references, ``val_every`` and ``min_epochs`` in optimiser steps: validation and stopping
        never later than after this many steps (None: by epochs only).
    ties : {"first", "later"}
        Which checkpoint a task keeps when two score the same.
    gene_svm : bool or "pool"
        Per cell type, an RBF SVM on the model input too: True keeps it instead of the encoder's when it
        scores higher on the validation cells; "pool" keeps both for every type and takes the mean of their
        probabilities.
    independent_encoders : bool
        One encoder per cell type instead of one shared encoder.
    """

    noise_std: float = 1.0
    shuffle: bool = True
    val_steps: int | None = None
    min_steps: int | None = None
    ties: str = "later"
    gene_svm: bool | str = False
    independent_encoders: bool = False


@dataclass(frozen=True)
class Preset:
    """One named setting of one method.

    Attributes
    ----------
    method, name : str
        The method ("afrcl" or "gsrcl") and the preset's name.
    params : AFRCLParams or GsRCLParams
        The estimator's hyperparameters.
    ensemble : int
        Models trained with different seeds whose scores are pooled (`gsrcl.methods.ensemble`).
    pool : {"mean", "geometric"}
        How the ensemble's scores are pooled.
    library_size : float or None
        Each cell scaled to this total on the count scale before log1p (`gsrcl.model_input.ModelInput`);
        None: log1p of the values as they are, as the papers.
    linear_pool : bool
        Also fit a linear SVM on the model input, pooled with the model for cells far from the reference
        (`gsrcl.linear`).
    """

    method: str
    name: str
    params: Hyperparameters
    ensemble: int = 1
    pool: str = "mean"
    library_size: float | None = None
    linear_pool: bool = False

    def pipeline(self) -> dict[str, Any]:
        """The pipeline settings (``ensemble``, ``pool``, ``library_size``, ``linear_pool``) as a dict."""
        return {"ensemble": self.ensemble, "pool": self.pool, "library_size": self.library_size,
                "linear_pool": self.linear_pool}


# The cells of each type a reference keeps at most (`gsrcl.train`'s ``max_cells_per_type``; docs/decisions.md).
MAX_CELLS_PER_TYPE = 5_000

# Runtime settings: estimator parameters that change how fast a model is fitted, never the model; not saved.
RUNTIME = ("threads", "block", "device", "quiet", "checkpoint_memory_mb")
# Settings whose "off" is None in the table; a user turns them off with 0, since an estimator parameter left at
# None means "the preset's value". Patience 0 never stops, 0 cells means all cells, 0 steps means by epochs.
OFF_IS_ZERO = ("patience", "svm_grid_cells", "score_cells", "val_steps", "min_steps")
# The value a setting had before it existed: a saved model that lacks it was fitted with this value.
ABSENT_MEANS: dict[str, Any] = {"normalize_embedding": False, "gene_svm": False}

_AFRCL_PAPER = AFRCLParams(
    hidden=(1024, 1024, 1024), out=512, head=(256, 128), batch_norm=True, lr=1e-3, batch_size=64,
    temperature=0.1, epochs=501, val_every=5, selection="grid", patience=None, min_epochs=0, svm_cells="train",
    svm_ties="first",
)
_GSRCL_PAPER = GsRCLParams(
    hidden=(4096, 4096, 4096), out=2048, head=(512, 128), batch_norm="auto", lr=1e-4, batch_size=8192,
    temperature=0.07, epochs=3001, val_every=50, selection="grid", patience=None, min_epochs=0, svm_cells="train",
    svm_ties="first", shuffle=False, ties="first",
)
# What the default presets change from the published settings (each change: docs/decisions.md).
_DEFAULT_CHANGES: dict[str, Any] = {
    "selection": "quick", "svm_cells": "train+val", "svm_ties": "largest_c", "svm_grid_cells": 3000,
    "score_cells": 2000, "normalize_embedding": True,
}
_AFRCL_DEFAULT = replace(_AFRCL_PAPER, **_DEFAULT_CHANGES, epochs=200, patience=6, min_epochs=30,
                         average_checkpoints="always", skip_unexpressed_genes=True)
_GSRCL_DEFAULT = replace(_GSRCL_PAPER, **_DEFAULT_CHANGES, batch_size=128, shuffle=True, epochs=100, val_every=5,
                         val_steps=35, min_steps=140, patience=3, min_epochs=20, ties="later", gene_svm="pool")

PRESETS: dict[str, dict[str, Preset]] = {
    "afrcl": {
        "paper": Preset("afrcl", "paper", _AFRCL_PAPER),
        "default": Preset("afrcl", "default", _AFRCL_DEFAULT, ensemble=5, library_size=CP10K, linear_pool=True),
        "demo": Preset("afrcl", "demo", replace(_AFRCL_DEFAULT, epochs=15, min_epochs=5), ensemble=5,
                       library_size=CP10K, linear_pool=True),
    },
    "gsrcl": {
        "paper": Preset("gsrcl", "paper", _GSRCL_PAPER),
        "default": Preset("gsrcl", "default", _GSRCL_DEFAULT, library_size=CP10K, linear_pool=True),
        "demo": Preset("gsrcl", "demo", replace(_GSRCL_DEFAULT, epochs=30, min_epochs=10), library_size=CP10K,
                       linear_pool=True),
    },
}


def preset_names() -> tuple[str, ...]:
    """The preset names, the same for both methods."""
    return tuple(PRESETS["afrcl"])


def get_preset(method: str, name: str) -> Preset:
    """The preset ``name`` of ``method``.

    Raises
    ------
    ValueError
        For an unknown method or preset name.
    """
    if method not in PRESETS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(PRESETS)}")
    if name not in PRESETS[method]:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS[method])}")
    return PRESETS[method][name]


def field_names(params_class: type) -> tuple[str, ...]:
    """The hyperparameter names of a params dataclass, in table order."""
    return tuple(f.name for f in fields(params_class))


def as_dict(params: Hyperparameters) -> dict[str, Any]:
    """The hyperparameters of ``params`` as a plain dict."""
    return asdict(params)
