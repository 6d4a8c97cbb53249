"""``gsrcl import``: an original GsRCL / AF-RCL reference folder (or its zip) as a gsrcl reference.

The original's networks and SVMs are gsrcl's own (docs/methods.md §2-§4): an imported reference is an ordinary
gsrcl reference (``manifest.json`` + ``arrays.npz``, nothing pickled), which `gsrcl.reference.Reference.load`,
``gsrcl predict`` and every output use as any other. What it reproduces of the original (docs/methods.md §2):

- the genes in the genes file's order; query genes matched to them, genes the query lacks filled with zeros;
- the value transform: counts become ``log((x + 1) + 1e-6)`` in float32 (`gsrcl.model_input.original_log`).
  The log of a zero is not zero there (9.5e-7); so that the model input stays sparse, it is kept at zero and
  the constant moves into the model: each encoder's first bias gains ``c * W.sum(axis=1)`` and each SVM on the
  genes has its support vectors lowered by ``c``, which is the same arithmetic up to float rounding. Values that
  are log1p already are used as they are (the original's ``-l 0``);
- GsRCL: each type's encoder (or none: an SVM on the genes) and its binary SVM; the per-type probabilities are
  the libsvm probabilities of class 1 (`gsrcl.svm.PortableSVC`), rows then divided by their sum;
- AF-RCL: the encoder's output (the projection head is not used) and the multi-class SVM, its columns named by
  the cell-type dict;
- the label rule of `gsrcl.cutoff` (the argmax, or Unassigned at or below p).

The manifest records the import under ``imported``: the source, the original's own name, the SHA-256 of every
original file, the scikit-learn version that pickled each SVM where it says, and each GsRCL checkpoint's sizes.
"""

from __future__ import annotations

import logging
import os
import shutil
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import GsrclError, InvalidReferenceError, MissingPathError
from ..manifest import file_sha256
from ..model_input import ModelInput, zero_value
from .checkpoints import EncoderWeights, read_afrcl_encoder, read_gsrcl_checkpoint
from .layout import METHODS, OriginalLayout, find_layout, read_genes, unpack_zip

__all__ = ["import_original", "build_reference", "LOG_OFFSET", "PRESET"]

log = logging.getLogger("gsrcl.original.importer")

LOG_OFFSET = 1e-6  # the original's log((x + 1) + 1e-6)
PRESET = "original"  # the manifest's preset of an imported reference


def import_original(source: str | os.PathLike, refdir: str | os.PathLike, name: str, *, method: str | None = None,
                    overwrite: bool = False, quiet: bool = False, origin: dict[str, Any] | None = None) -> Path:
    """Convert the original reference ``source`` into the gsrcl reference ``refdir/name``.

    Parameters
    ----------
    source : str or os.PathLike
        The original reference's folder (``MP/REF``, or a folder holding only it) or a ``.zip`` of it.
    refdir, name : str or os.PathLike, str
        Where the gsrcl reference is saved (as `gsrcl.reference.Reference.save` does: atomically).
    method : {"gsrcl", "afrcl"}, optional
        The layout expected; None: recognised from the file names.
    overwrite : bool
        Replace an existing reference ``name``.
    quiet : bool
        No progress bar.
    origin : dict, optional
        Recorded in the manifest's import record (e.g. the download's URL).

    Returns
    -------
    pathlib.Path
        The saved reference's folder.

    Raises
    ------
    GsrclError
        An unknown ``method``.
    MissingPathError
        ``source`` does not exist.
    OutputError
        ``name`` exists without ``overwrite``, or ``refdir`` cannot be written (checked before anything is read).
    InvalidReferenceError, UnsafeFileError, CorruptFileError
        For a source that is not a complete, well-formed original reference (`gsrcl.original.layout`,
        `gsrcl.original.checkpoints`, `gsrcl.original.joblib_reader`). Nothing is written then.
    """
    from ..atomic import recover_dirs, temp_dir
    from ..reference import check_target

    if method is not None and method not in METHODS:
        raise GsrclError(f"unknown method {method!r}: choose gsrcl or afrcl, or leave --method out")
    source = Path(source)
    if not source.exists():
        raise MissingPathError(f"{source} does not exist: give the original reference's folder or its .zip")
    check_target(refdir, name, overwrite=overwrite)
    root = Path(refdir)
    made = not root.exists()
    work = None
    try:
        folder = source
        archive = None
        if source.is_file():
            if not zipfile.is_zipfile(source) and source.suffix.lower() != ".zip":
                raise InvalidReferenceError(f"{source} is a file, not an original reference folder or a .zip of one")
            root.mkdir(parents=True, exist_ok=True)
            recover_dirs(root)
            work = temp_dir(root, name)
            log.info("unpacking %s", source.name)
            folder = unpack_zip(source, work)
            known = (origin or {}).get("archive_sha256")  # a download has hashed the archive already
            archive = {"archive": source.name, "archive_sha256": known or file_sha256(source)}
        layout = find_layout(folder, method)
        record = {"source": str(source.resolve()), **(archive or {}), **(origin or {})}
        ref = build_reference(layout, name, record=record, quiet=quiet)
        path = ref.save(refdir, name, overwrite=overwrite)
    except BaseException:
        if work is not None:
            shutil.rmtree(work, ignore_errors=True)
            work = None
        if made and root.is_dir() and not any(root.iterdir()):
            root.rmdir()
        raise
    finally:
        if work is not None:
            shutil.rmtree(work, ignore_errors=True)
    log.info("imported %s (%s, %d cell types, %d genes) as %s", layout.name, layout.method,
             len(ref.cell_types), len(ref.genes), path)
    return path


def build_reference(layout: OriginalLayout, name: str, *, record: dict[str, Any] | None = None,
                    quiet: bool = False):
    """The `gsrcl.reference.Reference` of an original reference's files (not saved).

    Raises
    ------
    InvalidReferenceError, UnsafeFileError, CorruptFileError
        As `import_original`.
    """
    from tqdm.auto import tqdm

    from ..cutoff import check_cell_types
    from ..reference import Reference

    genes = read_genes(layout.genes)
    files = layout.files
    with tqdm(total=len(files) - 1, desc=f"importing {layout.name}", unit="file", disable=quiet) as progress:
        if layout.method == "gsrcl":
            model, details = _gsrcl_model(layout, genes, progress)
        else:
            model, details = _afrcl_model(layout, genes, progress)
    check_cell_types(model.cell_types, name)
    imported = {
        "from": record or {},
        "method": layout.method,
        "original_name": layout.name,
        "files": {p.name: file_sha256(p) for p in files},
        **details,
    }
    model_input = ModelInput(
        expected="counts", offset=LOG_OFFSET,
        message="imported from the original tool: counts become log((x + 1) + 1e-6), log1p values are used as "
                "they are, no library-size scaling")
    return Reference.from_model(model, name=name, genes=genes, model_input=model_input, preset=PRESET,
                                hyperparameters={**model.hyperparameters, "ensemble": 1}, training={},
                                validation={}, imported=imported)


def _fold_zero(weights: EncoderWeights) -> dict[str, np.ndarray]:
    """The encoder's arrays with the log of a zero (`zero_value`) moved into its first bias."""
    arrays = dict(weights.arrays)
    w = arrays["linear0.weight"].astype(np.float64)
    bias = arrays["linear0.bias"].astype(np.float64) + float(zero_value(LOG_OFFSET)) * w.sum(axis=1)
    arrays["linear0.bias"] = bias.astype(np.float32)
    return arrays


def _arch(weights: EncoderWeights) -> dict[str, Any]:
    return {"n_inputs": weights.n_inputs, "hidden": list(weights.hidden), "out": weights.out,
            "batch_norm": weights.batch_norm, "input_dropout": 0.0}


def _shifted(svc):
    """An SVM on the genes with its support vectors lowered by the log of a zero (`zero_value`)."""
    from ..svm import PortableSVC

    return PortableSVC(svc.classes_, svc.support_vectors_ - float(zero_value(LOG_OFFSET)), svc.n_support_,
                       svc.dual_coef_, svc.intercept_, svc.gamma, svc.probA_, svc.probB_)


def _binary(svc, path: Path, n_features: int, what: str) -> None:
    classes = [c.item() if hasattr(c, "item") else c for c in svc.classes_]
    if classes != [0, 1]:
        raise InvalidReferenceError(f"{path.name}: the SVM's classes are {classes}, a GsRCL one-vs-rest SVM has 0 "
                                    "and 1 (1: the cell type)")
    if svc.n_features_in_ != n_features:
        raise InvalidReferenceError(f"{path.name}: the SVM takes {svc.n_features_in_} features, but {what} gives "
                                    f"{n_features}")


def _gsrcl_model(layout: OriginalLayout, genes: list[str], progress):
    from ..methods.gsrcl import GsRCL
    from ..methods.state import jsonable, prefixed
    from .joblib_reader import read_svc

    arrays: dict[str, np.ndarray] = {}
    encoders, tasks, details = [], [], {"checkpoints": {}, "svm_versions": {}}
    for k, task in enumerate(layout.tasks):
        progress.set_postfix_str(task.cell_type)
        entry: dict[str, Any] = {"cell_type": task.cell_type, "encoder": None}
        svc = read_svc(task.svm)
        if task.encoder is not None:
            weights = read_gsrcl_checkpoint(task.encoder)
            progress.update()
            if weights.n_inputs != len(genes):
                raise InvalidReferenceError(
                    f"{task.encoder.name}: the encoder takes {weights.n_inputs} genes, but {layout.genes.name} lists "
                    f"{len(genes)}: they are not of one reference")
            _binary(svc, task.svm, weights.out, f"its encoder {task.encoder.name}")
            j = len(encoders)
            encoders.append(_arch(weights))
            arrays.update(prefixed(_fold_zero(weights), f"encoder{j}."))
            entry["encoder"] = j
            details["checkpoints"][task.encoder.name] = weights.record
        else:
            _binary(svc, task.svm, len(genes), f"the genes file ({layout.genes.name})")
            svc = _shifted(svc)
        progress.update()
        version = getattr(svc, "sklearn_version", None)
        if version:
            details["svm_versions"][task.svm.name] = str(version)
        config, svc_arrays = svc.state()
        entry["svc"] = jsonable(config)
        arrays.update(prefixed(svc_arrays, f"svc{k}."))
        tasks.append(entry)
    if not encoders:
        raise InvalidReferenceError(f"{layout.folder}: no cell type has an encoder (every SVM takes the genes); gsrcl "
                                    "draws its t-SNE picture from an encoder's output, so it cannot import this one")
    first = encoders[0]
    est = GsRCL(preset="paper", hidden=tuple(first["hidden"]), out=first["out"], batch_norm=first["batch_norm"],
                seed=0, quiet=True)
    config = {"method": "gsrcl", "cell_types": [t.cell_type for t in layout.tasks], "n_genes": len(genes),
              "encoders": encoders, "tasks": tasks, "hyperparameters": est.hyperparameters}
    return _rebuilt(GsRCL, config, arrays, layout), details


def _afrcl_model(layout: OriginalLayout, genes: list[str], progress):
    from ..methods.afrcl import AFRCL
    from ..methods.state import jsonable, prefixed
    from ..svm import PortableSVC
    from .joblib_reader import read_cell_type_dict, read_svc

    types = read_cell_type_dict(layout.cell_type_dict)
    progress.update()
    svc = read_svc(layout.svm)
    progress.update()
    weights = read_afrcl_encoder(layout.encoder, len(genes))
    progress.update()
    classes = [c.item() if hasattr(c, "item") else c for c in svc.classes_]
    names, indices = list(types), list(types.values())
    if classes != list(range(len(classes))) or indices != classes:
        raise InvalidReferenceError(
            f"{layout.cell_type_dict.name} maps {len(names)} cell types to the classes {indices[:6]}, but the SVM's "
            f"classes are {classes[:6]}: the original would name its columns wrongly; they are not of one reference")
    if names != sorted(names):  # the original's training numbers the sorted names; gsrcl's SVMs keep that order
        raise InvalidReferenceError(
            f"{layout.cell_type_dict.name} numbers its cell types in another order than their sorted names, which "
            "the original's training never writes: not supported")
    if svc.n_features_in_ != weights.out:
        raise InvalidReferenceError(f"{layout.svm.name}: the SVM takes {svc.n_features_in_} features, the encoder "
                                    f"gives {weights.out}")
    named = PortableSVC(np.array(names), svc.support_vectors_, svc.n_support_,
                        svc.dual_coef_, svc.intercept_, svc.gamma, svc.probA_, svc.probB_)
    svc_config, svc_arrays = named.state()
    est = AFRCL(preset="paper", seed=0, quiet=True)
    config = {"method": "afrcl", "cell_types": names, "n_genes": len(genes), "encoder": _arch(weights),
              "svc": jsonable(svc_config), "hyperparameters": est.hyperparameters}
    arrays = {**prefixed(_fold_zero(weights), "encoder."), **prefixed(svc_arrays, "svc.")}
    version = getattr(svc, "sklearn_version", None)
    details = {"svm_versions": {layout.svm.name: str(version)} if version else {}}
    return _rebuilt(AFRCL, config, arrays, layout), details


def _rebuilt(method, config: dict[str, Any], arrays: dict[str, np.ndarray], layout: OriginalLayout):
    """The method's model from the converted state, its own checks turned into one line."""
    try:
        return method.from_state(config, arrays)
    except (ValueError, KeyError) as exc:
        raise InvalidReferenceError(f"{layout.folder}: the original's parts do not make one model ({exc})") from None
