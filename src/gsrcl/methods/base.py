"""The estimator base class of both methods: parameters scikit-learn style, the fitted check, the gene scale.

Each method's keyword parameters are the fields of its hyperparameter dataclass (`gsrcl.methods.presets`),
plus ``preset``, ``seed`` and the runtime settings; `EstimatorBase.__init_subclass__` writes that ``__init__``
once, from the dataclass, so a parameter is named in one place. As in scikit-learn, ``__init__`` only stores
what it is given, ``fit`` checks it, and ``get_params`` / ``set_params`` read and change it.
"""

from __future__ import annotations

import inspect
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp
from sklearn.base import BaseEstimator

from .encoding import BLOCK, as_csr, vstack
from .gene_scale import GENE_SCALE_KEY, SCALE_CLIP, gene_scale
from .presets import ABSENT_MEANS, OFF_IS_ZERO, RUNTIME, Hyperparameters, as_dict, field_names, get_preset
from .state import jsonable

DEFAULT_SEED = 1111
# The runtime parameters and their defaults (the table leaves them out: they never change the model).
_RUNTIME_DEFAULTS: dict[str, Any] = {"device": "cpu", "threads": None, "block": BLOCK, "quiet": False}


def _make_init(names: tuple[str, ...], runtime: dict[str, Any]):
    """An ``__init__`` that stores ``preset``, each of ``names`` (default None: the preset's value), ``seed``
    and the ``runtime`` parameters as attributes of the same name, with a signature that lists them all."""
    defaults = {"preset": "default", **dict.fromkeys(names), "seed": DEFAULT_SEED, **runtime}

    def __init__(self, preset: str = "default", **kwargs):
        unknown = sorted(set(kwargs) - set(defaults))
        if unknown:
            raise TypeError(f"{type(self).__name__} got unknown parameter(s) {', '.join(unknown)}; "
                            f"known: {', '.join(defaults)}")
        self.preset = preset
        for key, default in defaults.items():
            if key != "preset":
                setattr(self, key, kwargs.get(key, default))

    kind = inspect.Parameter.KEYWORD_ONLY
    __init__.__signature__ = inspect.Signature(
        [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD),
         inspect.Parameter("preset", inspect.Parameter.POSITIONAL_OR_KEYWORD, default="default")]
        + [inspect.Parameter(k, kind, default=v) for k, v in defaults.items() if k != "preset"])
    return __init__


class EstimatorBase(BaseEstimator):
    """What the two estimators share: parameters, the fitted check, the gene scale, ``predict_proba``.

    Parameters
    ----------
    preset : str
        The preset (`gsrcl.methods.presets.PRESETS`) whose value each parameter left at None takes.
    **hyperparameters
        Each field of the method's ``Params`` dataclass (`AFRCLParams`, `GsRCLParams`); None: the preset's
        value. ``patience``, ``svm_grid_cells``, ``score_cells``, ``val_steps`` and ``min_steps`` are turned off
        with 0 (no early stopping, all cells, by epochs only).
    seed : int
        The seed of every random draw of ``fit``.
    device : str
        The torch device ``fit`` trains on ("cpu" or "cuda"); prediction runs on the CPU.
    threads : int or None
        Torch threads during ``fit`` (None: leave torch's setting).
    block : int
        Cells encoded at once.
    quiet : bool
        No progress bars.
    checkpoint_memory_mb : int
        GsRCL only: checkpoints beyond this many MB wait in a temporary folder during ``fit``.

    Attributes
    ----------
    classes_ : list of str
        The cell types, sorted: the columns of ``predict_scores`` (``cell_types`` is the same list).
    history_, validation_ : dict
        What ``fit`` recorded per epoch, and the validation scores of the kept checkpoints (empty after
        ``from_state``).
    gene_scale_ : numpy.ndarray or None
        Each gene's scale factor (``scale_genes``), fitted on the training and validation cells.
    """

    method_name: ClassVar[str] = ""
    Params: ClassVar[type[Hyperparameters]] = Hyperparameters
    scores_sum_to_one: ClassVar[bool] = True  # whether predict_scores rows are a distribution over the types
    extra_runtime: ClassVar[dict[str, Any]] = {}  # the method's own runtime parameters and their defaults

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "__init__" not in cls.__dict__:
            cls.__init__ = _make_init(field_names(cls.Params), cls._runtime_defaults())

    @classmethod
    def _runtime_defaults(cls) -> dict[str, Any]:
        return {**_RUNTIME_DEFAULTS, **cls.extra_runtime}

    # --- parameters ------------------------------------------------------------------------------------
    @property
    def params(self) -> dict[str, Any]:
        """Every setting ``fit`` uses, resolved: the preset's values, those given replacing them, the runtime
        settings; 0 in `OFF_IS_ZERO` settings as None.

        Raises
        ------
        ValueError
            For an unknown preset.
        """
        params = as_dict(get_preset(self.method_name, self.preset).params)
        for key in field_names(self.Params):
            given = getattr(self, key)
            if given is not None:
                params[key] = None if key in OFF_IS_ZERO and given == 0 else given
        for key in ("hidden", "head"):
            try:
                if isinstance(params[key], (str, bytes)):
                    raise TypeError(key)
                params[key] = tuple(int(h) for h in params[key])
            except (TypeError, ValueError):
                raise ValueError(f"{key} must be a list of layer widths, e.g. [64, 64], not {params[key]!r}") from None
        params.update({key: getattr(self, key) for key in self._runtime_defaults()})
        return params

    def _check_params(self) -> dict[str, Any]:
        """The resolved `params`, checked; called by ``fit`` (and by `gsrcl.train` before it reads the data).

        Raises
        ------
        ValueError
            For an unknown preset or a value out of range.
        """
        p = self.params
        epochs = p["epochs"]
        if isinstance(epochs, bool) or int(epochs) != epochs or epochs < 1:
            raise ValueError(f"epochs must be a positive integer, not {epochs!r}")
        for key in ("hidden", "head", "out"):
            widths = (p.get(key, 1),) if key == "out" else p[key]
            if not all(isinstance(w, int) and not isinstance(w, bool) and w >= 1 for w in widths):
                raise ValueError(f"{key} must be positive whole layer widths, not {p[key]!r}")
        if not 0 <= p["validation_size"] < 1:
            raise ValueError(f"validation_size must be at least 0 and below 1, not {p['validation_size']}")
        choices = {"selection": ("quick", "grid"), "svm_cells": ("train", "train+val"),
                   "svm_ties": ("first", "largest_c"), "average_checkpoints": (False, True, "always"),
                   "batch_norm": (False, True, "auto"), "gene_svm": (False, True, "pool"), "ties": ("first", "later")}
        for key, allowed in choices.items():
            if key in p and p[key] not in allowed:
                raise ValueError(f"{key} is one of {', '.join(map(repr, allowed))}, not {p[key]!r}")
        return p

    @property
    def hyperparameters(self) -> dict[str, Any]:
        """The preset, the seed and the resolved hyperparameters, JSON-able: what a saved model records (no
        runtime setting)."""
        p = {k: v for k, v in self.params.items() if k not in RUNTIME}
        return {"preset": self.preset, "seed": int(self.seed), **jsonable(p)}

    @classmethod
    def _from_config(cls, config: dict[str, Any]):
        """An unfitted estimator with the saved ``hyperparameters`` of ``config`` (``from_state``'s first step).

        Settings the config lacks take `ABSENT_MEANS` (they predate it) or the preset's value; saved settings
        that are no estimator parameter (the pipeline and runtime settings older models recorded) are ignored.
        """
        if config.get("method") != cls.method_name:
            raise ValueError(f"the model config is for method {config.get('method')!r}, not {cls.method_name!r}")
        hp = dict(config.get("hyperparameters", {}))
        model = cls(preset=hp.get("preset", "default"), seed=hp.get("seed", DEFAULT_SEED), quiet=True)
        names = field_names(cls.Params)
        saved = {k: (0 if v is None and k in OFF_IS_ZERO else v) for k, v in hp.items() if k in names}
        saved.update({k: v for k, v in ABSENT_MEANS.items() if k in names and k not in hp})
        return model.set_params(**saved)

    # --- fitted state ----------------------------------------------------------------------------------
    @property
    def cell_types(self) -> list[str]:
        """The fitted cell types, ``classes_``."""
        return self.classes_

    @cell_types.setter
    def cell_types(self, types) -> None:
        self.classes_ = [str(t) for t in types]

    def _check_fitted(self) -> None:
        if not getattr(self, "classes_", None):
            raise RuntimeError(f"this {type(self).__name__} is not fitted: call fit() or from_state() first")

    def _represent(self, emb: np.ndarray) -> np.ndarray:
        """What the classifiers see of the encoder output ``emb``: its rows scaled to unit length with
        ``normalize_embedding``, else ``emb`` itself."""
        if not self.params.get("normalize_embedding"):
            return emb
        norms = np.linalg.norm(emb, axis=1, keepdims=True)
        return emb / np.maximum(norms, np.finfo(np.float32).tiny)

    # --- the gene scale (``scale_genes``): each gene divided by its spread over the reference cells ---------
    def _fit_gene_scale(self, X, X_val):
        """Fit the gene scale on the training and validation cells (with ``scale_genes``) and return both
        scaled; without it ``gene_scale_`` is None and both come back as they are."""
        if not self.params.get("scale_genes"):
            self.gene_scale_ = None
            return X, X_val
        X, X_val = as_csr(X), as_csr(X_val)
        self.gene_scale_ = gene_scale(vstack(X, X_val) if X_val.shape[0] else X)
        return self._scaled(X), self._scaled(X_val)

    def _scaled(self, X):
        """X with the reference's gene scaling applied (X itself when the model has none)."""
        if getattr(self, "gene_scale_", None) is None:
            return X
        out = sp.csr_matrix(as_csr(X) @ sp.diags(self.gene_scale_), dtype=np.float32)
        np.minimum(out.data, SCALE_CLIP, out=out.data)
        return out

    def _gene_scale_arrays(self) -> dict[str, np.ndarray]:
        scale = getattr(self, "gene_scale_", None)
        return {} if scale is None else {GENE_SCALE_KEY: scale}

    def _load_gene_scale(self, arrays: dict[str, np.ndarray], n_genes: int) -> None:
        scale = arrays.get(GENE_SCALE_KEY)
        if scale is not None and (scale.ndim != 1 or len(scale) != n_genes or not np.isfinite(scale).all()
                                  or (scale <= 0).any()):
            raise ValueError(f"the gene scale has shape {scale.shape} (positive values needed, one per gene: "
                             f"{n_genes})")
        self.gene_scale_ = None if scale is None else scale.astype(np.float32)

    # --- prediction ------------------------------------------------------------------------------------
    def predict_scores_and_embed(self, X, rows) -> tuple[np.ndarray, np.ndarray]:
        """``predict_scores(X)`` and ``embed`` of the cells ``rows`` of ``X`` (the t-SNE sample of a block)."""
        return self.predict_scores(X), self.embed(as_csr(X)[rows])

    def predict_proba(self, X) -> np.ndarray:
        """``predict_scores`` with each row divided by its sum (uniform where a row sums to 0), float64."""
        scores = self.predict_scores(X)
        total = scores.sum(axis=1, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            proba = np.where(total > 0, scores / np.where(total > 0, total, 1), 1.0 / scores.shape[1])
        return proba.astype(np.float64)
