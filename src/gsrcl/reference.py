"""The on-disk reference format.

A reference is a directory ``REFDIR/NAME/`` holding exactly two files:

- ``manifest.json``: format version, method, preset and hyperparameters (the estimator's and the pipeline's:
  ``ensemble``, ``pool``, ``member_seeds``; references made before this version also list runtime settings
  there, which loading ignores), the genes in model order, the cell types, the model input (``values``: how
  values are expected and transformed, `gsrcl.model_input.ModelInput`), a training-data summary, validation
  scores, versions and date, the name/shape/dtype of every array, the SHA-256 of ``arrays.npz``, and
  ``manifest_sha256``: the SHA-256 of the model-defining fields of the manifest (`CHECKED_FIELDS`, which include
  the arrays' checksum), so that a changed gene order, cell-type order or model input is refused;
- ``arrays.npz``: every weight as a plain numpy array (deflate-compressed; a trained reference's network weight
  matrices in float16, `half_precision`), read back with ``allow_pickle=False`` (the novelty
  score's arrays under ``novelty.``; a reference without them loads, and predicts without a novelty score;
  those of the linear SVM of ``--linear-pool`` under ``linear.``, its config as the manifest's ``linear``;
  the gene scale under ``input.scale``, absent from references made before it or with ``scale_genes=False``).

Nothing read back from disk can execute code: no pickle, no joblib, no ``torch.load``. Loading checks the
format version, the manifest's checksum and the type of every field it reads (`read_manifest`), that no other
file is present, the arrays' checksum, and each array's shape and dtype against the manifest, before the method
rebuilds its model from the arrays. References saved before ``manifest_sha256`` existed load without it: their
manifest is cross-checked against the model config and the arrays instead (numbers of genes and cell types,
the cell types' order, the model input), which cannot catch a reordered gene list.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
import shutil
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .atomic import disk_full_as_error, locked, recover_dirs, replace_dir, temp_dir, write_error
from .versions import versions
from .errors import InvalidReferenceError, OutputError

from .manifest import (  # noqa: F401  (re-exported: the format's names belong with the reference too)
    ARRAYS, CHECKED_FIELDS, CHECKSUM, FORMAT, FORMAT_VERSION, LINEAR_PREFIX, MANIFEST, NOVELTY_PREFIX, VALUE_KINDS,
    check_consistent, file_sha256, manifest_checksum, read_manifest,
)


_WEIGHT_MATRIX = re.compile(r"(?:^|\.)linear\d+\.weight\Z")
_SUPPORT_VECTORS = re.compile(r"(?:^|\.)support_vectors\Z")
HALF_MAX = 6.0e4  # below float16's largest finite value (65504)


def half_precision(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The arrays as a trained reference stores them: the networks' weight matrices (``...linear<i>.weight``)
    in float16, the SVMs' support vectors in float32 where that is exact (they are cells of float32 values),
    every other array as it is (biases, batch-norm statistics, the SVMs' other arrays, gene scale, novelty model).

    The models read float16 weights back as float32. A matrix with a value float16 cannot hold is kept as it
    is. The effect on probabilities is measured in docs/decisions.md ("Compact references").
    """
    out = {}
    for key, value in arrays.items():
        if (_WEIGHT_MATRIX.search(key) and value.ndim == 2 and value.dtype.kind == "f"
                and np.abs(value).max(initial=0) < HALF_MAX):
            value = value.astype(np.float16)
        elif _SUPPORT_VECTORS.search(key) and value.dtype == np.float64:
            single = value.astype(np.float32)
            if np.array_equal(single, value):  # cells of float32 values: exact in float32
                value = single
        out[key] = value
    return out


def resolve(refdir: str | os.PathLike, name: str) -> Path:
    """The directory of reference ``name`` under ``refdir``; a name that would leave ``refdir`` is refused.

    A reference is read only from directly inside ``refdir``: a symbolic link ``refdir/name`` is followed only
    to another entry of ``refdir`` itself. `list_references` applies the same rule, so a reference it lists as
    usable is one that ``predict`` loads.

    Raises
    ------
    InvalidReferenceError
        For a name that is not plain ('/', '..', a leading '.'), or that is a link leading out of ``refdir``.
    """
    if not isinstance(name, str) or not name or name in {".", ".."} or "/" in name or "\\" in name \
            or os.path.isabs(name) or name.startswith("."):
        raise InvalidReferenceError(
            f"reference name {name!r} is not allowed: use a plain name such as 'pbmc' (no '/', '..' or leading '.')"
        )
    root = Path(refdir).resolve()
    path = (root / name).resolve()
    if path.parent != root:
        if (root / name).is_symlink():
            raise InvalidReferenceError(
                f"reference {name!r} in {refdir} is a link to {path}, outside {refdir}: references are read only "
                f"from inside their folder; move or copy the reference into {refdir}"
            )
        raise InvalidReferenceError(f"reference name {name!r} would leave {refdir}: use a plain name")
    return path


def check_target(refdir: str | os.PathLike, name: str, *, overwrite: bool = False) -> Path:
    """Where `Reference.save` would write reference ``name`` under ``refdir``, checked before any work is done
    (``gsrcl train`` calls it before reading its input): a plain name (`resolve`), free unless ``overwrite``, and
    a folder that can be written (``refdir`` itself, or where it would be created when it does not exist).

    Writing is tried with an anonymous temporary file, which leaves nothing behind, so a read-only file system,
    missing permissions or a path through a file are found as they are, whoever runs it.

    Returns
    -------
    pathlib.Path
        The reference's directory (as `resolve` gives it).

    Raises
    ------
    InvalidReferenceError
        For a name that is not allowed.
    OutputError
        For a reference ``name`` that exists without ``overwrite``, or a ``refdir`` that is not a folder or
        cannot be written.
    """
    import tempfile

    target = resolve(refdir, name)
    if (target.exists() or (Path(refdir) / name).is_symlink()) and not overwrite:
        raise OutputError(f"reference {name!r} already exists in {refdir}: choose another name or pass --overwrite")
    existing = target.parent
    while not existing.exists() and existing != existing.parent:  # save creates the missing folders
        existing = existing.parent
    if not existing.is_dir():
        raise OutputError(f"cannot write to {refdir}: {existing} is not a folder; choose another -mp folder")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as exc:
        raise OutputError(
            f"cannot write to {refdir}: {exc.strerror or exc} ({existing}): choose another -mp folder or make it "
            "writable"
        ) from None
    return target


@dataclass
class Reference:
    """A trained reference: its manifest and its arrays. ``model`` rebuilds the method's predictor."""

    manifest: dict[str, Any]
    arrays: dict[str, np.ndarray]
    path: Path | None = None
    _model: Any = field(default=None, repr=False, compare=False)
    _novelty: Any = field(default=None, repr=False, compare=False)
    _linear: Any = field(default=None, repr=False, compare=False)

    # --- what a reference holds ------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.manifest.get("name", "")

    @property
    def method(self) -> str:
        return self.manifest["method"]

    @property
    def genes(self) -> list[str]:
        return self.manifest["genes"]

    @property
    def cell_types(self) -> list[str]:
        return self.manifest["cell_types"]

    @property
    def values(self) -> dict[str, Any]:
        """The manifest's ``values`` section: the recorded `model_input`."""
        return self.manifest["values"]

    @property
    def model_input(self):
        """The `gsrcl.model_input.ModelInput` the reference was trained on, to apply to every query."""
        from .model_input import ModelInput

        return ModelInput.from_manifest(self.values)

    @property
    def model(self):
        if self._model is None:
            from .methods import get_method
            from .methods.ensemble import load_model

            model_arrays = {k: v for k, v in self.arrays.items()
                            if not k.startswith((NOVELTY_PREFIX, LINEAR_PREFIX))}
            self._model = load_model(get_method(self.method), self.manifest["model"], model_arrays)
        return self._model

    @property
    def novelty(self):
        """The `NoveltyModel` stored with the reference; None for a reference made without one."""
        config = self.manifest.get("novelty")
        if config is None:
            return None
        if self._novelty is None:
            from .methods.state import split_arrays
            from .novelty import NoveltyModel

            self._novelty = NoveltyModel.from_state(config, split_arrays(self.arrays, NOVELTY_PREFIX), len(self.genes))
        return self._novelty

    @property
    def linear(self):
        """The `gsrcl.linear.LinearClassifier` pooled with the model for cells far from the reference; None for a
        reference made without one."""
        config = self.manifest.get("linear")
        if config is None:
            return None
        if self._linear is None:
            from .linear import LinearClassifier
            from .methods.state import split_arrays

            self._linear = LinearClassifier.from_state(config, split_arrays(self.arrays, LINEAR_PREFIX),
                                                       len(self.genes))
        return self._linear

    def __repr__(self) -> str:
        """One line: name, method, preset, numbers of cell types and genes, creation date."""
        from .reference_summary import one_line

        return one_line(self.manifest)

    def summary(self, *, all_genes: bool = False) -> str:
        """The reference in detail, as ``gsrcl references show`` prints it (`gsrcl.reference_summary.describe`):
        cells per type, validation scores, genes (the first few, or all with ``all_genes``), value handling,
        novelty score, creation and versions."""
        from .reference_summary import describe

        return describe(self.manifest, all_genes=all_genes)

    # --- building ------------------------------------------------------------------------------------------
    @classmethod
    def from_model(
        cls,
        model,
        *,
        name: str,
        genes: list[str],
        model_input,
        preset: str,
        hyperparameters: dict[str, Any],
        training: dict[str, Any],
        validation: dict[str, Any],
        novelty=None,
        linear=None,
        imported: dict[str, Any] | None = None,
        compact: bool = False,
    ) -> "Reference":
        """A reference of a fitted model, its manifest assembled here from every part (the one place it is).

        Parameters
        ----------
        model : fitted estimator or Ensemble
        name : str
        genes : list of str
            The reference's genes, in the model's input order.
        model_input : gsrcl.model_input.ModelInput
            Recorded as the manifest's ``values`` section.
        preset : str
        hyperparameters : dict
            The resolved settings of training (the estimator's and the pipeline's; no runtime setting).
        training, validation : dict
            The training summary and the validation scores.
        novelty : NoveltyModel, optional
            Stored under ``novelty.``.
        linear : gsrcl.linear.LinearClassifier, optional
            Stored under ``linear.`` (its config as the manifest's ``linear``); prediction pools it with the model
            for cells far from the reference (`gsrcl.linear.pool_by_novelty`).
        imported : dict, optional
            For a reference imported from the original tool (`gsrcl.original.importer`): what it was made from,
            recorded as the manifest's ``imported``.
        compact : bool
            Store the networks' weight matrices in half precision (`half_precision`); the reference's model is
            then rebuilt from its arrays, so that it predicts as the saved reference will. False keeps them exact.

        Raises
        ------
        InvalidReferenceError
            For fewer than two cell types, or an empty or duplicated gene list.
        """
        config, arrays = model.state()
        if compact:
            arrays = half_precision(arrays)
        novelty_config = None
        if novelty is not None:
            novelty_config, novelty_arrays = novelty.state()
            arrays = {**arrays, **{NOVELTY_PREFIX + k: v for k, v in novelty_arrays.items()}}
        linear_config = None
        if linear is not None:
            linear_config, linear_arrays = linear.state()
            arrays = {**arrays, **{LINEAR_PREFIX + k: v for k, v in linear_arrays.items()}}
        arrays = {k: np.ascontiguousarray(v) for k, v in arrays.items()}
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "name": name,
            "method": model.method_name,
            "preset": preset,
            "hyperparameters": hyperparameters,
            "genes": list(map(str, genes)),
            "cell_types": list(map(str, model.cell_types)),
            "values": model_input.to_manifest(),
            "training": training,
            "validation": validation,
            "model": config,
            "novelty": novelty_config,
            "arrays": {k: {"shape": list(v.shape), "dtype": str(v.dtype)} for k, v in arrays.items()},
            "versions": versions("numpy", "torch", "scikit-learn"),
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        }
        if linear_config is not None:
            manifest["linear"] = linear_config
        if imported is not None:
            manifest["imported"] = imported
        check_consistent(manifest)
        ref = cls(manifest=manifest, arrays=arrays)
        ref._model = None if compact else model
        ref._novelty = novelty
        ref._linear = linear
        return ref

    # --- disk ------------------------------------------------------------------------------------------------
    def save(self, refdir: str | os.PathLike, name: str | None = None, *, overwrite: bool = False) -> Path:
        """Write ``refdir/name`` atomically: a complete temporary folder beside it, then put in place.

        The temporary is ``.NAME.tmp-PID.HOST-*``; with ``overwrite`` the old reference is swapped out in one
        step where the system can, else moved aside as ``.NAME.old-PID.HOST-*`` just before the new one moves in
        (`gsrcl.atomic.replace_dir`). ``REFDIR/NAME`` always holds one complete reference: a failure at any step
        puts the old one back, and what a killed run left is cleared (an old reference whose name is missing
        put back) by the next save, load or listing (`gsrcl.atomic.recover_dirs`). The existence check is made
        again, holding a lock on ``refdir``, just before the new reference moves in.

        Raises
        ------
        OutputError
            When ``name`` exists and not ``overwrite``, or ``refdir`` cannot be written.
        DiskFullError
            When the disk fills up; nothing is left behind.
        """
        name = name or self.name
        target = resolve(refdir, name)
        if target.exists() and not overwrite:
            raise OutputError(f"reference {name!r} already exists in {refdir}: choose another name or pass --overwrite")
        root = target.parent
        tmp = None
        made = not root.exists()

        def discard() -> None:
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)
            if made:
                try:
                    root.rmdir()  # only if empty
                except OSError:
                    pass

        with disk_full_as_error(refdir, cleanup=discard):
            try:
                root.mkdir(parents=True, exist_ok=True)
                recover_dirs(root)
                tmp = temp_dir(root, name)
            except OSError as exc:
                raise write_error(exc, refdir) from None
            manifest = dict(self.manifest, name=name)
            np.savez_compressed(tmp / ARRAYS, **self.arrays)
            with open(tmp / ARRAYS, "rb+") as fh:  # on disk before the reference is put in place
                os.fsync(fh.fileno())
            manifest["files"] = {ARRAYS: {"sha256": file_sha256(tmp / ARRAYS), "bytes": (tmp / ARRAYS).stat().st_size}}
            manifest[CHECKSUM] = manifest_checksum(manifest)  # last: it covers "files"
            with open(tmp / MANIFEST, "w") as fh:
                json.dump(manifest, fh, indent=1)
                fh.write("\n")
                fh.flush()
                os.fsync(fh.fileno())
            with locked(root):
                if os.path.lexists(target) and not overwrite:
                    raise OutputError(f"reference {name!r} was saved in {refdir} by another run meanwhile: choose "
                                      "another name or pass --overwrite")
                replace_dir(tmp, target, name)
            tmp = None
        self.manifest = manifest
        self.path = target
        return target

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Reference":
        path = Path(path)
        if not os.path.lexists(path):  # a run killed while replacing it may have left it aside
            recover_dirs(path.parent)
        manifest = read_manifest(path)
        unexpected = sorted(p.name for p in path.iterdir() if p.name not in {MANIFEST, ARRAYS})
        if unexpected:
            raise InvalidReferenceError(
                f"reference {path} holds unexpected files ({', '.join(unexpected[:3])}); a reference holds only "
                f"{MANIFEST} and {ARRAYS}, so it was not loaded: remove them or rebuild it with 'gsrcl train'"
            )
        arrays_path = path / ARRAYS
        if not arrays_path.is_file():
            raise InvalidReferenceError(f"reference {path} lacks {ARRAYS}: rebuild it with 'gsrcl train'")
        expected = manifest.get("files", {}).get(ARRAYS, {}).get("sha256")
        if expected != file_sha256(arrays_path):
            raise InvalidReferenceError(
                f"reference {path}: {ARRAYS} does not match the checksum in {MANIFEST} (changed or damaged); "
                "rebuild it with 'gsrcl train'"
            )
        try:
            with np.load(arrays_path, allow_pickle=False) as npz:
                arrays = {k: npz[k] for k in npz.files}
        except (ValueError, OSError, zipfile.BadZipFile) as exc:
            raise InvalidReferenceError(f"reference {path}: {ARRAYS} cannot be read as plain arrays ({exc})") from None
        declared = manifest["arrays"]
        if set(arrays) != set(declared):
            raise InvalidReferenceError(
                f"reference {path}: arrays {sorted(set(arrays) ^ set(declared))[:3]} differ from the manifest"
            )
        for key, spec in declared.items():
            if list(arrays[key].shape) != list(spec["shape"]) or str(arrays[key].dtype) != spec["dtype"]:
                raise InvalidReferenceError(
                    f"reference {path}: array {key!r} has shape {arrays[key].shape} and dtype {arrays[key].dtype}, "
                    f"the manifest says {tuple(spec['shape'])} and {spec['dtype']}"
                )
        ref = cls(manifest=manifest, arrays=arrays, path=path)
        try:
            ref.model  # rebuild now, so that a bad reference fails here and not mid-prediction
            ref.novelty
            ref.linear
        except InvalidReferenceError:
            raise
        except (KeyError, ValueError, TypeError, AttributeError, IndexError, RuntimeError) as exc:
            raise InvalidReferenceError(f"reference {path}: the model cannot be rebuilt from its arrays ({exc})") from None
        if [str(t) for t in ref.model.cell_types] != ref.cell_types:  # the columns of its scores
            raise InvalidReferenceError(
                f"reference {path}: the model's cell types differ from the manifest's cell_types (changed or "
                "damaged): rebuild it with 'gsrcl train'"
            )
        return ref


def list_references(refdir: str | os.PathLike) -> list[dict[str, Any]]:
    """A summary of each reference directly under ``refdir`` (manifests only; arrays are not read).

    Each folder (or link to one) not starting with '.' gives a row: the reference's name, method, preset,
    number of genes, cell types, creation date and gsrcl version, or ``error``, why it is not usable. A link is
    judged by `resolve`, as ``predict`` judges it: one leading out of ``refdir`` is listed as not usable.
    """
    root = Path(refdir)
    if not root.is_dir():
        raise InvalidReferenceError(f"reference folder {refdir} does not exist")
    recover_dirs(root)  # what killed runs left: an old reference put back, temporaries removed
    rows = []
    entries = (p for p in root.iterdir()
               if not p.name.startswith(".") and (p.is_dir() or (p.is_symlink() and not p.exists())))
    for sub in sorted(entries):
        try:
            if sub.is_symlink() and not sub.exists():
                raise InvalidReferenceError(f"a link to {os.readlink(sub)}, which does not exist")
            m = read_manifest(resolve(root, sub.name))
        except InvalidReferenceError as exc:
            rows.append({"name": sub.name, "error": exc.message})
            continue
        except OSError as exc:
            rows.append({"name": sub.name, "error": f"cannot be read ({exc.strerror or exc})"})
            continue
        rows.append(
            {
                "name": sub.name,
                "method": m["method"],
                "preset": m.get("preset", ""),
                "n_genes": len(m["genes"]),
                "cell_types": m["cell_types"],
                "created": m.get("created", ""),
                "gsrcl_version": str((m.get("versions") or {}).get("gsrcl", "")),
            }
        )
    return rows
