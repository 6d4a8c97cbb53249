"""A reference's manifest is checked as its arrays are: a checksum over the model-defining fields
(``manifest_sha256``) for references saved now, and for references saved before it existed (tests/data/compat)
cross-checks against the model config and the arrays and the type of every field read. Also: ``gsrcl train``
checks REFDIR and NAME before training, and ``gsrcl references`` judges a linked reference as ``predict`` does.

Every reference here is a copy of the small compatibility references (or one re-saved from them): no training.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp

from gsrcl.cli import main
from gsrcl.errors import InvalidReferenceError, OutputError
from gsrcl.reference import CHECKED_FIELDS, CHECKSUM, MANIFEST, Reference, list_references, manifest_checksum, \
    read_manifest

COMPAT = Path(__file__).parent / "data" / "compat" / "references"
METHODS = ("afrcl", "gsrcl")
CODE = InvalidReferenceError.exit_code


@pytest.fixture
def old_refdir(tmp_path) -> Path:
    """Copies of the references saved by an older gsrcl, without ``manifest_sha256``."""
    root = tmp_path / "old"
    for method in METHODS:
        shutil.copytree(COMPAT / f"compat_{method}", root / method)
    return root


@pytest.fixture
def new_refdir(tmp_path) -> Path:
    """The same references saved by this gsrcl: with ``manifest_sha256``."""
    root = tmp_path / "new"
    for method in METHODS:
        Reference.load(COMPAT / f"compat_{method}").save(root, method)
    return root


def _edit(path: Path, change) -> None:
    manifest = json.loads((path / MANIFEST).read_text())
    change(manifest)
    (path / MANIFEST).write_text(json.dumps(manifest))


def _refused(path: Path) -> str:
    with pytest.raises(InvalidReferenceError) as e:
        Reference.load(path)
    assert "\n" not in e.value.message and e.value.exit_code == CODE
    return e.value.message


def _query(path: Path, genes: list[str]) -> Path:
    """A small h5ad of counts over the reference's genes."""
    X = sp.csr_matrix(np.random.default_rng(0).poisson(1.0, (30, len(genes))).astype(np.float32))
    q = ad.AnnData(X)
    q.obs_names = [f"c{i}" for i in range(30)]
    q.var_names = genes
    q.write_h5ad(path)
    return path


# changes that predicted with exit 0 and relabelled cells before the manifest was checked
TAMPERING = {
    "cell_types reordered": lambda m: m.__setitem__("cell_types", m["cell_types"][1:] + m["cell_types"][:1]),
    "genes reversed": lambda m: m.__setitem__("genes", m["genes"][::-1]),
    "library_size 0": lambda m: m["values"].__setitem__("library_size", 0),
    "library_size changed": lambda m: m["values"].__setitem__("library_size", 1e6),
    "value kind changed": lambda m: m["values"].__setitem__("expected", "counts"),
    "model config changed": lambda m: m["model"].__setitem__("pool", "max"),
    "hyperparameters changed": lambda m: m["hyperparameters"].__setitem__("library_size", 1),
    "novelty config changed": lambda m: m["novelty"].__setitem__("median", 1.0),
    "files entry changed": lambda m: m["files"]["arrays.npz"].__setitem__("bytes", 1),
}


def test_saved_manifest_records_checksum_of_model_fields(new_refdir):
    manifest = read_manifest(new_refdir / "afrcl")
    assert manifest[CHECKSUM] == manifest_checksum(manifest)
    assert {"genes", "cell_types", "values", "model", "novelty", "arrays", "files"} <= set(CHECKED_FIELDS)
    # what only describes the reference is not covered: it may change without changing a prediction
    _edit(new_refdir / "afrcl", lambda m: m["training"].__setitem__("labels", "obs['relabelled']"))
    assert Reference.load(new_refdir / "afrcl").manifest["training"]["labels"] == "obs['relabelled']"


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("change", list(TAMPERING))
def test_tampered_manifest_is_refused_by_its_checksum(new_refdir, method, change):
    _edit(new_refdir / method, TAMPERING[change])
    assert "checksum" in _refused(new_refdir / method)
    assert "error" in {r["name"]: r for r in list_references(new_refdir)}[method]


def test_tampered_manifest_is_refused_by_predict_with_the_reference_code(new_refdir, tmp_path, capsys):
    genes = read_manifest(new_refdir / "afrcl")["genes"]
    query = _query(tmp_path / "q.h5ad", genes)
    _edit(new_refdir / "afrcl", TAMPERING["cell_types reordered"])
    out = tmp_path / "out"
    code = main(["predict", "-i", str(query), "-r", "afrcl", "-mp", str(new_refdir), "-o", str(out), "--no-plot"])
    err = capsys.readouterr().err
    assert code == CODE and len(err.strip().splitlines()) == 1 and "checksum" in err
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("change, field", [
    ("cell_types reordered", "cell_types"),
    ("library_size 0", "values.library_size"),
])
def test_old_reference_is_cross_checked(old_refdir, method, change, field):
    assert CHECKSUM not in read_manifest(old_refdir / method)
    _edit(old_refdir / method, TAMPERING[change])
    assert f"'{field}'" in _refused(old_refdir / method)


@pytest.mark.parametrize("field, value", [
    ("format_version", True), ("format_version", "1"), ("format_version", 1.0),
    ("values.library_size", "10000"), ("values.library_size", True), ("values.library_size", -5),
    ("values.library_size", float("nan")), ("values.log_base", "e"), ("values.expected", "scaled"),
    ("values", []), ("genes", "CD3E"), ("genes", [1, 2, 3]), ("cell_types", ["T", 7]), ("method", ["afrcl"]),
    ("model.n_genes", "120"), ("model.n_genes", 119), ("novelty", "yes"), ("versions", ["gsrcl"]),
    ("files", ["arrays.npz"]), ("arrays", {"x": {"shape": [True], "dtype": "float32"}}),
])
def test_mistyped_field_is_refused_in_one_line(old_refdir, new_refdir, field, value):
    for refdir in (old_refdir, new_refdir):
        path = refdir / "afrcl"

        def change(m):
            *parents, last = field.split(".")
            node = m
            for key in parents:
                node = node[key]
            node[last] = value

        _edit(path, change)
        message = _refused(path)
        assert "Traceback" not in message
        if refdir is old_refdir and field != "format_version":
            assert field.split(".")[-1] in message  # the field is named


def test_format_version_true_exits_with_the_reference_code(old_refdir, tmp_path, capsys):
    _edit(old_refdir / "gsrcl", lambda m: m.__setitem__("format_version", True))
    query = _query(tmp_path / "q.h5ad", read_manifest(old_refdir / "afrcl")["genes"])
    code = main(["predict", "-i", str(query), "-r", "gsrcl", "-mp", str(old_refdir), "-o", str(tmp_path / "o"),
                 "--no-plot"])
    err = capsys.readouterr().err
    assert code == CODE and "format_version True" in err and len(err.strip().splitlines()) == 1


def test_old_references_still_load_without_the_checksum(old_refdir):
    for method in METHODS:
        ref = Reference.load(old_refdir / method)
        assert CHECKSUM not in ref.manifest and len(ref.genes) == 120


# --- gsrcl references and predict agree on linked references -----------------------------------------------
def test_link_out_of_refdir_is_listed_as_not_usable_and_refused_by_predict(old_refdir, tmp_path, capsys):
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(old_refdir / "afrcl", elsewhere / "outside")
    os.symlink(elsewhere / "outside", old_refdir / "linked_out")
    os.symlink(old_refdir / "gsrcl", old_refdir / "alias")  # a link to another reference of REFDIR itself
    os.symlink(tmp_path / "nowhere", old_refdir / "broken")
    rows = {r["name"]: r for r in list_references(old_refdir)}
    assert "outside" in rows["linked_out"]["error"] and "link" in rows["linked_out"]["error"]
    assert "does not exist" in rows["broken"]["error"]
    assert rows["alias"]["method"] == "gsrcl"  # usable, as predict finds it
    assert main(["references", "-mp", str(old_refdir)]) == 0
    out = capsys.readouterr().out
    assert "linked_out: not usable" in out and "alias: gsrcl" in out
    assert main(["references", "-mp", str(old_refdir), "--names"]) == 0
    assert capsys.readouterr().out.split() == ["afrcl", "alias", "gsrcl"]  # the usable ones only

    query = _query(tmp_path / "q.h5ad", read_manifest(old_refdir / "afrcl")["genes"])
    code = main(["predict", "-i", str(query), "-r", "linked_out", "-mp", str(old_refdir), "-o",
                 str(tmp_path / "o"), "--no-plot"])
    err = capsys.readouterr().err
    assert code == CODE and "outside" in err and len(err.strip().splitlines()) == 1
    assert main(["references", "show", "linked_out", "-mp", str(old_refdir)]) == CODE


# --- gsrcl train checks REFDIR and NAME before training ----------------------------------------------------
@pytest.fixture
def no_training(monkeypatch):
    """Make reading the input or training fail the test: the checks must come first."""
    import gsrcl.io
    import gsrcl.training

    def fail(*args, **kwargs):
        raise AssertionError("the input was read or training started before REFDIR was checked")

    monkeypatch.setattr(gsrcl.training, "train", fail)
    monkeypatch.setattr(gsrcl.io, "read_query", fail)
    monkeypatch.setattr(gsrcl.io, "open_query", fail)


def _train(tmp_path, refdir, name="new", *extra):
    query = tmp_path / "in.h5ad"
    if not query.exists():
        _query(query, ["A", "B", "C"])
    return main(["train", "-i", str(query), "--labels", "cell_type", "-r", name, "-mp", str(refdir), *extra])


def test_train_refuses_refdir_under_a_file_before_training(tmp_path, no_training, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    assert _train(tmp_path, blocker / "refs") == OutputError.exit_code
    err = capsys.readouterr().err
    assert "not a folder" in err and len(err.strip().splitlines()) == 1
    assert blocker.read_text() == "not a folder"


def test_train_refuses_unwritable_refdir_before_training(tmp_path, no_training, capsys, monkeypatch):
    import tempfile

    refdir = tmp_path / "refs"
    refdir.mkdir()

    def read_only(*args, **kwargs):  # what a read-only file system or a folder without write permission gives
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "TemporaryFile", read_only)
    assert _train(tmp_path, refdir) == OutputError.exit_code
    err = capsys.readouterr().err
    assert "cannot write to" in err and "Permission denied" in err and len(err.strip().splitlines()) == 1
    assert list(refdir.iterdir()) == []


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes to read-only folders")
def test_train_refuses_read_only_refdir_before_training(tmp_path, no_training):
    refdir = tmp_path / "refs"
    refdir.mkdir()
    refdir.chmod(0o555)
    try:
        assert _train(tmp_path, refdir) == OutputError.exit_code
    finally:
        refdir.chmod(0o755)


def test_train_refuses_taken_name_before_training(old_refdir, tmp_path, no_training, capsys):
    assert _train(tmp_path, old_refdir, "afrcl") == OutputError.exit_code
    assert "already exists" in capsys.readouterr().err
    with pytest.raises(AssertionError, match="before REFDIR"):  # a free name gets as far as reading the input
        _train(tmp_path, old_refdir, "free")


def test_show_describes_odd_descriptive_sections_without_a_traceback(new_refdir, capsys):
    # training and validation only describe the reference (not covered by the checksum): shown, never trusted
    def change(m):
        m["training"].update(cells_per_type=["x"], validation_cells_per_type={"Dendritic": "many"}, history="none",
                             dropped_classes=["Mast"], gene_selection=[1])
        m["validation"].update(members=[1, {"score": "high"}], tasks=["CD34+"], svm={"cv_mcc": "n/a"})

    _edit(new_refdir / "afrcl", change)
    assert Reference.load(new_refdir / "afrcl").name == "afrcl"
    assert main(["references", "show", "afrcl", "-mp", str(new_refdir)]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("afrcl: afrcl (default preset)") and err == ""


@pytest.mark.parametrize("method", ["afrcl", "gsrcl"])
def test_trained_reference_holds_half_precision_weights_and_predicts_as_saved(tiny_references, tiny_refdir,
                                                                              method):
    import gsrcl
    from gsrcl.methods.encoding import as_csr

    ref = tiny_references[method]
    weights = [k for k in ref.arrays if k.endswith(".weight") and ".linear" in f".{k}"]
    assert weights and all(ref.arrays[k].dtype == np.float16 for k in weights)
    others = [k for k in ref.arrays if k not in weights and ref.arrays[k].dtype.kind == "f"]
    assert others and all(ref.arrays[k].dtype != np.float16 for k in others)  # biases, SVMs, novelty: as trained
    assert all(ref.arrays[k].dtype == np.float32 for k in ref.arrays if k.endswith("support_vectors"))
    loaded = Reference.load(tiny_refdir / f"pbmc68k_{method}")
    assert all(loaded.arrays[k].dtype == np.float16 for k in weights)
    X = as_csr(np.log1p(np.abs(np.random.default_rng(0).normal(size=(50, len(ref.genes))))).astype(np.float32))
    # the in-memory reference's model is the saved one's: the same numbers
    assert np.array_equal(ref.model.predict_scores(X), loaded.model.predict_scores(X))
    exact = gsrcl.Reference(manifest=ref.manifest, arrays={k: v.astype(np.float32) if k in weights else v
                                                           for k, v in ref.arrays.items()})
    assert np.array_equal(exact.model.predict_scores(X), ref.model.predict_scores(X))  # float16 read as float32


def test_half_precision_keeps_what_float16_cannot_hold():
    from gsrcl.reference import half_precision

    arrays = {"encoder.linear0.weight": np.full((3, 4), 0.5, np.float32),
              "encoder.linear1.weight": np.array([[1e5, 0.0]], np.float32),
              "encoder.linear0.bias": np.zeros(3, np.float32), "svc.support_vectors": np.ones((2, 4))}
    out = half_precision(arrays)
    assert out["encoder.linear0.weight"].dtype == np.float16
    assert out["encoder.linear1.weight"].dtype == np.float32  # 1e5 is beyond float16
    assert out["encoder.linear0.bias"].dtype == np.float32
    assert out["svc.support_vectors"].dtype == np.float32  # float32 values: exact
    inexact = half_precision({"svc.support_vectors": np.array([[0.1, 1.0]])})["svc.support_vectors"]
    assert inexact.dtype == np.float64 and inexact[0, 0] == 0.1
    assert arrays["encoder.linear0.weight"].dtype == np.float32  # its input is not changed
