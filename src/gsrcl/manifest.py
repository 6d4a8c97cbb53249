"""A reference's ``manifest.json``: its format, the checksum over its model-defining fields, and the checks of
every field prediction reads (types, and agreement of the fields with each other).

`read_manifest` is the one reader: `gsrcl.reference.Reference.load`, ``gsrcl references`` and ``gsrcl verify``
all go through it, so they refuse the same references with the same line.
"""

from __future__ import annotations

import hashlib
import json
import math
import numbers
import os
from pathlib import Path
from typing import Any

from . import __version__
from .errors import InvalidReferenceError

FORMAT = "gsrcl-reference"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
ARRAYS = "arrays.npz"
NOVELTY_PREFIX = "novelty."  # the arrays of the novelty score (`gsrcl.novelty`), beside the method's own
LINEAR_PREFIX = "linear."  # the arrays of the linear classifier on the genes (`gsrcl.linear`), where there is one
CHECKSUM = "manifest_sha256"  # the manifest's field holding the SHA-256 of its CHECKED_FIELDS
# The manifest's fields that define the model, i.e. everything a prediction depends on ("files" holds the
# arrays' checksum); name, training, validation, versions and created only describe the reference.
CHECKED_FIELDS = ("format", "format_version", "method", "preset", "hyperparameters", "genes", "cell_types",
                  "values", "model", "novelty", "arrays", "files")
OPTIONAL_CHECKED = ("linear",)  # checked fields only references that have them hold (older checksums stay valid)
VALUE_KINDS = ("counts", "log1p", "normalized")  # the value kinds a reference can expect (ModelInput.expected)


def read_manifest(path: str | os.PathLike) -> dict[str, Any]:
    """Read and check a reference's manifest, without touching its arrays.

    The checks: the format and its version, the checksum of the model-defining fields (``manifest_sha256``,
    `CHECKED_FIELDS`; references saved before it was recorded lack it), and the type of every field read and
    the agreement of the fields with each other (`check_consistent`).

    Raises
    ------
    InvalidReferenceError
        One line naming what is wrong: a missing folder or manifest, invalid JSON, a newer format, a changed
        manifest (checksum), a missing or mistyped field.
    """
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
    except OSError as exc:
        raise InvalidReferenceError(f"reference {path}: {MANIFEST} cannot be read ({exc.strerror or exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise InvalidReferenceError(f"{path} is not a gsrcl reference ({MANIFEST} lacks format '{FORMAT}')")
    version = manifest.get("format_version")
    if not _is_int(version) or version < 1:
        raise InvalidReferenceError(
            f"reference {path}: format_version {version!r} in {MANIFEST} is not valid (a whole number from 1): "
            "the manifest was changed or damaged; rebuild the reference with 'gsrcl train'"
        )
    if version > FORMAT_VERSION:
        raise InvalidReferenceError(
            f"reference {path} uses format version {version}, made by a newer gsrcl; this gsrcl {__version__} "
            f"reads version {FORMAT_VERSION} or older: upgrade gsrcl"
        )
    stored = manifest.get(CHECKSUM)
    if stored is not None and stored != manifest_checksum(manifest):
        raise InvalidReferenceError(
            f"reference {path}: {MANIFEST} was changed after the reference was saved (its model-defining fields do "
            f"not match their checksum, {CHECKSUM}), so it was not loaded: rebuild it with 'gsrcl train'"
        )
    try:
        check_consistent(manifest)
        for key in ("name", "preset", "created"):  # read by listings, summaries and the outputs' records
            if key in manifest:
                _require(isinstance(manifest[key], str), key, manifest[key], "a string")
        for key in ("hyperparameters", "training", "validation", "versions"):
            if key in manifest:
                _require(isinstance(manifest[key], dict), key, manifest[key], "an object")
        files = manifest.get("files", {})
        _require(isinstance(files, dict), "files", files, "an object")
        if ARRAYS in files:
            entry = files[ARRAYS]
            _require(isinstance(entry, dict) and isinstance(entry.get("sha256"), str), f"files.{ARRAYS}", entry,
                     "an object with the arrays' sha256")
    except InvalidReferenceError as exc:
        raise InvalidReferenceError(
            f"reference {path}: {exc.message}; the manifest was changed or damaged: rebuild it with 'gsrcl train'"
        ) from None
    except (KeyError, TypeError, AttributeError) as exc:  # a check above missed a shape: still one line
        raise InvalidReferenceError(f"reference {path}: {MANIFEST} lacks or mistypes {exc}") from None
    return manifest


def file_sha256(path: str | os.PathLike) -> str:
    """The SHA-256 (hex) of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def manifest_checksum(manifest: dict[str, Any]) -> str:
    """The SHA-256 (hex) of the manifest's `CHECKED_FIELDS`, as canonical JSON (keys sorted, no spaces, ASCII).

    The fields pass through JSON first, so a manifest in memory and the same manifest read back from its file
    give the same checksum. ``Reference.save`` records it as ``manifest_sha256``; `read_manifest` checks it.
    """
    covered = {k: manifest.get(k) for k in CHECKED_FIELDS}
    covered.update({k: manifest[k] for k in OPTIONAL_CHECKED if manifest.get(k) is not None})
    covered = json.loads(json.dumps(covered))
    text = json.dumps(covered, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def _is_int(value) -> bool:
    """A whole number of JSON: an int that is not a bool."""
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    """A finite real number of JSON: not a bool, not a string, not NaN or infinite."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _require(ok: bool, name: str, value, what: str) -> None:
    """InvalidReferenceError naming manifest field ``name``, its ``value`` and ``what`` it must be, unless ``ok``."""
    if not ok:
        shown = repr(value)
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        raise InvalidReferenceError(f"{MANIFEST} field {name!r} is {shown}; it must be {what}")


def check_consistent(manifest: dict[str, Any]) -> None:
    """Check the type of every field that loading and prediction read, and the fields' agreement with each
    other: the model config's (and each ensemble member's and the novelty score's) cell types and number of
    genes against the manifest's. Rebuilding the model then checks the model config against the arrays.

    Raises
    ------
    InvalidReferenceError
        Naming the first field that is missing, mistyped or out of range.
    """
    from .methods import METHODS

    missing = [k for k in ("method", "genes", "cell_types", "values", "model", "arrays") if k not in manifest]
    if missing:
        raise InvalidReferenceError(f"{MANIFEST} lacks the field(s) {', '.join(missing)}")
    method = manifest["method"]
    if not isinstance(method, str) or method not in METHODS:
        raise InvalidReferenceError(f"unknown method {method!r} (known: {', '.join(METHODS)})")
    genes, types = manifest["genes"], manifest["cell_types"]
    _require(isinstance(genes, list) and all(isinstance(g, str) for g in genes), "genes", genes,
             "a list of gene names (strings)")
    if not genes or len(set(genes)) != len(genes):
        raise InvalidReferenceError("the reference's gene list is empty or has duplicates")
    _require(isinstance(types, list) and all(isinstance(t, str) for t in types), "cell_types", types,
             "a list of cell-type names (strings)")
    if len(types) < 2 or len(set(types)) != len(types):
        raise InvalidReferenceError("the reference needs at least two distinct cell types")

    values = manifest["values"]
    _require(isinstance(values, dict), "values", values, "an object")
    _require(values.get("expected") in VALUE_KINDS, "values.expected", values.get("expected"),
             f"one of {', '.join(VALUE_KINDS)}")
    base = values.get("log_base")
    _require(base is None or (_is_number(base) and base > 1), "values.log_base", base, "null or a number above 1")
    size = values.get("library_size")
    _require(size is None or (_is_number(size) and size > 0), "values.library_size", size,
             "null (cells not scaled) or a positive number")
    for key in ("transform", "message"):
        if key in values:
            _require(isinstance(values[key], str), f"values.{key}", values[key], "a string")

    model = manifest["model"]
    _require(isinstance(model, dict), "model", model, "an object")
    members = model.get("members")
    if members is not None:
        _require(isinstance(members, list) and all(isinstance(m, dict) for m in members), "model.members", members,
                 "a list of objects")
    for where, config in [("model", model)] + [(f"model.members[{i}]", m) for i, m in enumerate(members or [])]:
        if "method" in config:
            _require(config["method"] == method, f"{where}.method", config["method"], f"{method!r}, the method")
        if "cell_types" in config and not _same_list(config["cell_types"], types):
            raise InvalidReferenceError(f"{MANIFEST} field 'cell_types' does not match the model's "
                                        f"({where}.cell_types): the same names in the same order")
        if "n_genes" in config:
            _require(_is_int(config["n_genes"]) and config["n_genes"] == len(genes), f"{where}.n_genes",
                     config["n_genes"], f"{len(genes)}, the number of genes")
    novelty = manifest.get("novelty")
    _require(novelty is None or isinstance(novelty, dict), "novelty", novelty, "null or an object")
    linear = manifest.get("linear")
    _require(linear is None or isinstance(linear, dict), "linear", linear, "null or an object")
    if linear is not None and not _same_list(linear.get("classes"), types):
        raise InvalidReferenceError(f"{MANIFEST} field 'cell_types' does not match the linear classifier's "
                                    "(linear.classes): the same names in the same order")
    if novelty is not None and "cell_types" in novelty and not _same_list(novelty["cell_types"], types):
        raise InvalidReferenceError(f"{MANIFEST} field 'cell_types' does not match the novelty score's "
                                    "(novelty.cell_types): the same names in the same order")

    arrays = manifest["arrays"]
    _require(isinstance(arrays, dict), "arrays", arrays, "an object")
    for key, spec in arrays.items():
        ok = (isinstance(spec, dict) and isinstance(spec.get("dtype"), str) and isinstance(spec.get("shape"), list)
              and all(_is_int(n) and n >= 0 for n in spec["shape"]))
        _require(ok, f"arrays.{key}", spec, "an object of a shape (whole numbers) and a dtype")


def _same_list(value, expected: list[str]) -> bool:
    """Whether ``value`` (a list, tuple or array of names) names ``expected`` in the same order."""
    if isinstance(value, (str, bytes, dict)) or not hasattr(value, "__iter__"):
        return False
    return [str(v) for v in value] == expected
