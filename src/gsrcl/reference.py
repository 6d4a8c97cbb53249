"""The on-disk reference format.

A reference is a directory ``REFDIR/NAME/`` holding exactly two files:

- ``manifest.json``: format version, method, preset and hyperparameters (the estimator's and the pipeline's:
  ``ensemble``, ``pool``, ``member_seeds``; references made before this version also list runtime settings
  there, which loading ignores), the genes in model order, the cell types, the model input (``values``: how
  values are expected and transformed, `gsrcl.model_input.ModelInput`), a training-data summary, validation
  scores, versions and date, the name/shape/dtype of every array and the SHA-256 of ``arrays.npz``;
- ``arrays.npz``: every weight as a plain numpy array, read back with ``allow_pickle=False`` (the novelty
  score's arrays under ``novelty.``; a reference without them loads, and predicts without a novelty score;
  the gene scale under ``input.scale``, absent from references made before it or with ``scale_genes=False``).

Nothing read back from disk can execute code: no pickle, no joblib, no ``torch.load``. Loading checks the
format version, that no other file is present, the checksum, and each array's shape and dtype against the
manifest, before the method rebuilds its model from the arrays.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import shutil
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from .atomic import temp_dir
from .versions import versions
from .errors import InvalidReferenceError, OutputError

FORMAT = "gsrcl-reference"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
ARRAYS = "arrays.npz"
NOVELTY_PREFIX = "novelty."  # the arrays of the novelty score (`gsrcl.novelty`), beside the method's own


def resolve(refdir: str | os.PathLike, name: str) -> Path:
    """The directory of reference ``name`` under ``refdir``; a name that would leave ``refdir`` is refused."""
    if not name or name in {".", ".."} or "/" in name or "\\" in name or os.path.isabs(name) or name.startswith("."):
        raise InvalidReferenceError(
            f"reference name {name!r} is not allowed: use a plain name such as 'pbmc' (no '/', '..' or leading '.')"
        )
    root = Path(refdir).resolve()
    path = (root / name).resolve()
    if path.parent != root:
        raise InvalidReferenceError(f"reference name {name!r} would leave {refdir}: use a plain name")
    return path


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass
class Reference:
    """A trained reference: its manifest and its arrays. ``model`` rebuilds the method's predictor."""

    manifest: dict[str, Any]
    arrays: dict[str, np.ndarray]
    path: Path | None = None
    _model: Any = field(default=None, repr=False, compare=False)
    _novelty: Any = field(default=None, repr=False, compare=False)

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

            model_arrays = {k: v for k, v in self.arrays.items() if not k.startswith(NOVELTY_PREFIX)}
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

        Raises
        ------
        InvalidReferenceError
            For fewer than two cell types, or an empty or duplicated gene list.
        """
        config, arrays = model.state()
        novelty_config = None
        if novelty is not None:
            novelty_config, novelty_arrays = novelty.state()
            arrays = {**arrays, **{NOVELTY_PREFIX + k: v for k, v in novelty_arrays.items()}}
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
        _check_consistent(manifest)
        ref = cls(manifest=manifest, arrays=arrays)
        ref._model = model
        ref._novelty = novelty
        return ref

    # --- disk ------------------------------------------------------------------------------------------------
    def save(self, refdir: str | os.PathLike, name: str | None = None, *, overwrite: bool = False) -> Path:
        """Write ``refdir/name`` atomically: a temporary directory beside it, then a rename."""
        name = name or self.name
        target = resolve(refdir, name)
        if target.exists() and not overwrite:
            raise OutputError(f"reference {name!r} already exists in {refdir}: choose another name or pass --overwrite")
        root = target.parent
        try:
            root.mkdir(parents=True, exist_ok=True)
            tmp = temp_dir(root, name)
        except OSError as exc:
            raise OutputError(f"cannot write to {refdir}: {exc.strerror or exc}") from None
        old = None
        try:
            manifest = dict(self.manifest, name=name)
            np.savez(tmp / ARRAYS, **self.arrays)
            manifest["files"] = {ARRAYS: {"sha256": _sha256(tmp / ARRAYS), "bytes": (tmp / ARRAYS).stat().st_size}}
            with open(tmp / MANIFEST, "w") as fh:
                json.dump(manifest, fh, indent=1)
                fh.write("\n")
            if target.exists():
                old = temp_dir(root, name, "old")
                os.rename(target, old / "ref")
            os.rename(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            if old is not None and (old / "ref").exists() and not target.exists():
                os.rename(old / "ref", target)
            raise
        finally:
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        self.manifest = manifest
        self.path = target
        return target

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Reference":
        path = Path(path)
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
        if expected != _sha256(arrays_path):
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
        except InvalidReferenceError:
            raise
        except (KeyError, ValueError, TypeError, RuntimeError) as exc:
            raise InvalidReferenceError(f"reference {path}: the model cannot be rebuilt from its arrays ({exc})") from None
        return ref


def read_manifest(path: str | os.PathLike) -> dict[str, Any]:
    """Read and check a reference's manifest, without touching its arrays."""
    path = Path(path)
    if not path.is_dir():
        raise InvalidReferenceError(f"reference {path} does not exist: list those available with 'gsrcl references -mp DIR'")
    mpath = path / MANIFEST
    if not mpath.is_file():
        raise InvalidReferenceError(f"{path} is not a gsrcl reference (no {MANIFEST}): build one with 'gsrcl train'")
    try:
        manifest = json.loads(mpath.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidReferenceError(f"reference {path}: {MANIFEST} is not valid JSON ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise InvalidReferenceError(f"{path} is not a gsrcl reference ({MANIFEST} lacks format '{FORMAT}')")
    version = manifest.get("format_version")
    if not isinstance(version, int) or version < 1:
        raise InvalidReferenceError(f"reference {path}: format_version {version!r} is not valid")
    if version > FORMAT_VERSION:
        raise InvalidReferenceError(
            f"reference {path} uses format version {version}, made by a newer gsrcl; this gsrcl {__version__} "
            f"reads version {FORMAT_VERSION} or older: upgrade gsrcl"
        )
    try:
        _check_consistent(manifest)
    except (KeyError, TypeError) as exc:
        raise InvalidReferenceError(f"reference {path}: {MANIFEST} lacks or mistypes {exc}") from None
    return manifest


def _check_consistent(manifest: dict[str, Any]) -> None:
    from .methods import METHODS

    if manifest["method"] not in METHODS:
        raise InvalidReferenceError(f"unknown method {manifest['method']!r} (known: {', '.join(METHODS)})")
    genes, types = manifest["genes"], manifest["cell_types"]
    if not isinstance(genes, list) or not genes or len(set(genes)) != len(genes):
        raise InvalidReferenceError("the reference's gene list is empty or has duplicates")
    if not isinstance(types, list) or len(types) < 2 or len(set(types)) != len(types):
        raise InvalidReferenceError("the reference needs at least two distinct cell types")
    for key in ("values", "model", "arrays"):
        if not isinstance(manifest[key], dict):
            raise TypeError(key)


def list_references(refdir: str | os.PathLike) -> list[dict[str, Any]]:
    """A summary of each reference directly under ``refdir`` (manifests only; arrays are not read)."""
    root = Path(refdir)
    if not root.is_dir():
        raise InvalidReferenceError(f"reference folder {refdir} does not exist")
    rows = []
    for sub in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        try:
            m = read_manifest(sub)
        except InvalidReferenceError as exc:
            rows.append({"name": sub.name, "error": exc.message})
            continue
        rows.append(
            {
                "name": sub.name,
                "method": m["method"],
                "preset": m.get("preset", ""),
                "n_genes": len(m["genes"]),
                "cell_types": m["cell_types"],
                "created": m.get("created", ""),
                "gsrcl_version": m.get("versions", {}).get("gsrcl", ""),
            }
        )
    return rows
