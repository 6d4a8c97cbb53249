"""The original tool's encoder checkpoints (``.pt``), read as plain tensors and checked key by key
(docs/methods.md §2; the layouts: GsRCL a dict of the encoder's state_dict and its constructor arguments,
AF-RCL a bare state_dict of fixed sizes).

``torch.load`` runs with ``weights_only=True``: its unpickler rebuilds only tensors and plain containers and
refuses any other object, so reading a checkpoint runs no code from it. Every key, shape and dtype is then
checked against what the original prediction script would build, strictly (no missing key, no extra key), and the
weights are returned in the names of `gsrcl.nn.encoder.MLP.to_arrays` (``linear{i}.weight`` as (out, in),
``bn{i}.weight|bias|running_mean|running_var``), which the gsrcl encoder computes the same way: Linear, then
BatchNorm1d (eps 1e-5, running statistics) where there is one, then ReLU, and a plain last Linear.
"""

from __future__ import annotations

import math
import pickle
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import CorruptFileError, InvalidReferenceError, UnsafeFileError

__all__ = ["EncoderWeights", "read_gsrcl_checkpoint", "read_afrcl_encoder", "AFRCL_WIDTHS", "GSRCL_KWARGS"]

# AF-RCL's prediction script builds its encoder with these sizes whatever the file holds: hidden 1024 (three
# blocks), output 512, projection head 256 then 128.
AFRCL_WIDTHS = {"hidden": 1024, "out": 512, "head": (256, 128)}
GSRCL_KWARGS = {"in_dim": int, "dim_enc": int, "in_dim_proj": int, "dim_proj": int, "out_dim": int,
                "batchnorm": bool, "dropout": (type(None), float, int), "frozen": bool}
_GSRCL_KEYS = {"forzen_params", "frozen_kwargs", "epoch"}  # sic: the original's spelling
_NORM_FIELDS = ("weight", "bias", "running_mean", "running_var")
_BN_EPS = 1e-5


@dataclass
class EncoderWeights:
    """An original encoder's weights in gsrcl's names.

    Attributes
    ----------
    arrays : dict of str to numpy.ndarray
        ``linear{i}.weight`` (out, in), ``linear{i}.bias``, and ``bn{i}.*`` for each hidden block with a norm,
        float32.
    n_inputs, hidden, out : int, tuple of int, int
        The encoder's input width (genes), hidden widths and output width.
    batch_norm : bool
        Whether the hidden blocks have BatchNorm.
    record : dict
        What the checkpoint says of itself (GsRCL: its constructor arguments and epoch).
    """

    arrays: dict[str, np.ndarray]
    n_inputs: int
    hidden: tuple[int, ...]
    out: int
    batch_norm: bool
    record: dict[str, Any] = field(default_factory=dict)


def _load(path: Path) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU, its failures as one-line gsrcl errors."""
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()
        detail = next((line for line in first if "GLOBAL" in line or "Unsupported" in line), first[0] if first else "")
        raise UnsafeFileError(
            f"{path.name} holds more than tensors and plain data ({detail.strip()[:160]}): gsrcl reads checkpoints "
            "with weights_only=True and refused it (nothing was run)"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as exc:
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CorruptFileError(f"{path.name} cannot be read as a torch checkpoint ({text[:160]}): the file is "
                               "truncated or damaged; download or copy it again") from None


def _tensor(state: dict, key: str, shape: tuple[int, ...], path: Path, *, integer: bool = False) -> np.ndarray:
    import torch

    value = state[key]
    if not isinstance(value, torch.Tensor) or value.layout != torch.strided:
        raise InvalidReferenceError(f"{path.name}: {key} is not a dense tensor")
    if tuple(value.shape) != shape:
        raise InvalidReferenceError(f"{path.name}: {key} has shape {list(value.shape)}, the original's network "
                                    f"needs {list(shape)}")
    if integer:
        return value.numpy()
    if not value.is_floating_point():
        raise InvalidReferenceError(f"{path.name}: {key} holds {value.dtype}, not floating-point weights")
    array = value.detach().to(torch.float32).numpy().copy()
    if not np.isfinite(array).all():
        raise InvalidReferenceError(f"{path.name}: {key} holds NaN or infinite values")
    return array


def _check_keys(state: Any, expected: list[str], path: Path) -> None:
    if not isinstance(state, dict):
        raise InvalidReferenceError(f"{path.name} does not hold a state_dict (a dict of tensors), but "
                                    f"{type(state).__name__}")
    missing = [k for k in expected if k not in state]
    extra = sorted(str(k) for k in state if k not in set(expected))
    if missing or extra:
        parts = ([f"lacks {', '.join(missing[:3])}"] if missing else []) + \
                ([f"has unexpected {', '.join(extra[:3])}"] if extra else [])
        raise InvalidReferenceError(f"{path.name}: the encoder's weights {' and '.join(parts)}; the original's "
                                    "network loads them strictly, so this is not one of its checkpoints")


def _block(state: dict, prefix: str, norm: str | None, shape: tuple[int, int], path: Path, i: int,
           arrays: dict[str, np.ndarray]) -> None:
    """Copy the Linear (and the norm, when ``norm`` names it) of block ``prefix`` into ``arrays`` as block ``i``."""
    arrays[f"linear{i}.weight"] = _tensor(state, f"{prefix}.linear.weight", shape, path)
    arrays[f"linear{i}.bias"] = _tensor(state, f"{prefix}.linear.bias", (shape[0],), path)
    if norm is None:
        return
    for name in _NORM_FIELDS:
        arrays[f"bn{i}.{name}"] = _tensor(state, f"{prefix}.{norm}.{name}", (shape[0],), path)
    _tensor(state, f"{prefix}.{norm}.num_batches_tracked", (), path, integer=True)
    if (arrays[f"bn{i}.running_var"] < 0).any():
        raise InvalidReferenceError(f"{path.name}: {prefix}.{norm}.running_var has negative values")


def read_gsrcl_checkpoint(path: str | Path) -> EncoderWeights:
    """One GsRCL cell type's encoder (``<type>--<tag>.pt``): a dict of ``forzen_params`` (the encoder's
    state_dict), ``frozen_kwargs`` (its sizes) and ``epoch``.

    The sizes come from ``frozen_kwargs`` (``in_dim`` genes, ``dim_enc`` hidden, ``in_dim_proj`` output,
    ``batchnorm``; with a ``dropout`` value the layers are numbered from 1). Checkpoints saved with
    ``frozen=False``, whose projection head gives the output, are refused: the original training code never
    saves them.

    Raises
    ------
    UnsafeFileError
        When the file holds more than tensors and plain data.
    CorruptFileError
        When it is not a readable torch checkpoint.
    InvalidReferenceError
        For a missing or unexpected key, a size, shape or dtype that differs from what the sizes give.
    """
    path = Path(path)
    ckpt = _load(path)
    if not isinstance(ckpt, dict) or not {"forzen_params", "frozen_kwargs"} <= set(ckpt) or set(ckpt) - _GSRCL_KEYS:
        keys = sorted(map(str, ckpt)) if isinstance(ckpt, dict) else type(ckpt).__name__
        raise InvalidReferenceError(f"{path.name} is not a GsRCL encoder checkpoint: it holds {keys}, expected "
                                    "forzen_params, frozen_kwargs and epoch")
    kwargs = ckpt["frozen_kwargs"]
    if not isinstance(kwargs, dict) or set(kwargs) != set(GSRCL_KWARGS):
        raise InvalidReferenceError(f"{path.name}: frozen_kwargs must name {', '.join(GSRCL_KWARGS)}, not "
                                    f"{sorted(kwargs) if isinstance(kwargs, dict) else kwargs!r}")
    for key, kind in GSRCL_KWARGS.items():
        value = kwargs[key]
        ok = isinstance(value, kind) and (kind is not int or (not isinstance(value, bool) and value >= 1))
        if not ok:
            raise InvalidReferenceError(f"{path.name}: frozen_kwargs[{key!r}] is {value!r}, not a valid "
                                        f"{'size' if kind is int else 'value'}")
    if not kwargs["frozen"]:
        raise InvalidReferenceError(f"{path.name}: frozen_kwargs['frozen'] is False (the projection head's output "
                                    "would be used): the original's published encoders are all frozen; not supported")
    dropout = kwargs["dropout"]
    if dropout is not None and not (isinstance(dropout, (int, float)) and math.isfinite(dropout)
                                    and 0 <= dropout < 1):
        raise InvalidReferenceError(f"{path.name}: frozen_kwargs['dropout'] is {dropout!r}, not a rate in [0, 1)")
    n, enc, out, bn = kwargs["in_dim"], kwargs["dim_enc"], kwargs["in_dim_proj"], kwargs["batchnorm"]
    first = 1 if dropout is not None else 0  # a parameter-free Dropout sits at index 0
    shapes = [(enc, n), (enc, enc), (enc, enc), (out, enc)]
    expected = []
    for i in range(4):
        expected += [f"encoder.{first + i}.linear.weight", f"encoder.{first + i}.linear.bias"]
        if bn and i < 3:
            expected += [f"encoder.{first + i}.norm.{f}" for f in (*_NORM_FIELDS, "num_batches_tracked")]
    state = ckpt["forzen_params"]
    _check_keys(state, expected, path)
    arrays: dict[str, np.ndarray] = {}
    for i, shape in enumerate(shapes):
        _block(state, f"encoder.{first + i}", "norm" if bn and i < 3 else None, shape, path, i, arrays)
    epoch = ckpt.get("epoch")
    record = {**{k: kwargs[k] for k in GSRCL_KWARGS}, "epoch": epoch if isinstance(epoch, int) else None}
    return EncoderWeights(arrays, n, (enc, enc, enc), out, bool(bn), record)


def read_afrcl_encoder(path: str | Path, n_genes: int) -> EncoderWeights:
    """AF-RCL's ``<R>_pretrained_encoder.pt``: the full encoder's state_dict (42 tensors: ``encoder.0``-``3`` and
    ``proj_head.0``-``1``, each a ``linear`` and a ``bnorm``) at the original's fixed sizes (`AFRCL_WIDTHS`) on
    ``n_genes`` inputs. The encoder output (``encoder.3``) is what the SVM sees; the two output blocks' norms and
    the projection head are checked but not kept.

    Raises
    ------
    UnsafeFileError, CorruptFileError, InvalidReferenceError
        As `read_gsrcl_checkpoint`.
    """
    path = Path(path)
    state = _load(path)
    hidden, out = AFRCL_WIDTHS["hidden"], AFRCL_WIDTHS["out"]
    head0, head1 = AFRCL_WIDTHS["head"]
    blocks = [("encoder.0", (hidden, n_genes)), ("encoder.1", (hidden, hidden)), ("encoder.2", (hidden, hidden)),
              ("encoder.3", (out, hidden)), ("proj_head.0", (head0, out)), ("proj_head.1", (head1, head0))]
    expected = [f"{b}.{part}" for b, _ in blocks
                for part in ("linear.weight", "linear.bias", *(f"bnorm.{f}" for f in _NORM_FIELDS),
                             "bnorm.num_batches_tracked")]
    _check_keys(state, expected, path)
    arrays: dict[str, np.ndarray] = {}
    for i, (prefix, shape) in enumerate(blocks):
        target = arrays if i < 4 else {}
        _block(state, prefix, "bnorm" if i != 3 else None, shape, path, i, target)
        if i == 3:  # the output block's norm exists but is never applied
            unused: dict[str, np.ndarray] = {}
            _block(state, prefix, "bnorm", shape, path, i, unused)
    return EncoderWeights(arrays, int(n_genes), (hidden, hidden, hidden), out, True, {})
