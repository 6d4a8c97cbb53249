"""``gsrcl import``: original references in both layouts become gsrcl references that predict what the original
tool predicts, and every malformed or unsafe original is refused in one line with nothing written."""

from __future__ import annotations

import json
import os
import shutil
import zipfile
from pathlib import Path

import anndata as ad
import joblib
import numpy as np
import pandas as pd
import pytest
import torch

from gsrcl.cli import main
from gsrcl.errors import CorruptFileError, InvalidReferenceError, UnsafeFileError
from gsrcl.reference import Reference

from .fixtures import GENES, counts, expected_probabilities, make_afrcl_folder, make_gsrcl_folder

TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def originals(tmp_path_factory):
    """Original folders: GsRCL as published (no norms, one type on the genes), GsRCL with norms and dropout, AF-RCL."""
    base = tmp_path_factory.mktemp("originals")
    return {
        "gsrcl": make_gsrcl_folder(base / "gsrcl"),
        "gsrcl_bn": make_gsrcl_folder(base / "gsrcl_bn", batchnorm=True, dropout=True, genes_only=(), seed=3),
        "afrcl": make_afrcl_folder(base / "afrcl"),
    }


@pytest.fixture(scope="module")
def query(tmp_path_factory):
    """Counts of 90 cells over 55 of the 60 reference genes (5 missing, zero-filled) and 10 others, shuffled."""
    rng = np.random.default_rng(11)
    Q, _ = counts(90, GENES, rng)
    Q = np.concatenate([Q[:, 5:], rng.poisson(1.0, (90, 10))], axis=1)
    genes = GENES[5:] + [f"OTHER{i}" for i in range(10)]
    order = rng.permutation(len(genes))
    Q, genes = Q[:, order], [genes[i] for i in order]
    adata = ad.AnnData(Q.astype(np.float32))
    adata.var_names, adata.obs_names = genes, [f"cell{i}" for i in range(90)]
    path = tmp_path_factory.mktemp("query") / "query.h5ad"
    adata.write_h5ad(path)
    return path, Q, genes


def _run(*argv) -> int:
    return main([str(a) for a in argv])


def _predict(refdir: Path, name: str, query_path: Path, out: Path, p: float = 0.5) -> pd.DataFrame:
    assert _run("predict", "-i", query_path, "-r", name, "-mp", refdir, "-o", out, "-p", p, "-q") == 0
    return pd.read_csv(out / "probabilities.csv", index_col=0)


@pytest.mark.parametrize("kind", ["gsrcl", "gsrcl_bn", "afrcl"])
def test_imported_reference_predicts_what_the_original_rules_give(kind, originals, query, tmp_path):
    query_path, Q, genes = query
    refdir = tmp_path / "refs"
    assert _run("import", "-i", originals[kind], "-r", "imported", "-mp", refdir, "-q") == 0
    got = _predict(refdir, "imported", query_path, tmp_path / "out")
    types, expected, labels = expected_probabilities(originals[kind], Q, genes)
    assert sorted(got.columns[: len(types)]) == sorted(types)
    assert np.abs(got[types].to_numpy() - expected).max() < TOLERANCE
    assert list(got["Identified as"]) == list(labels)
    assert len(set(labels)) > 1  # the fixture's cells are not all one type: the comparison means something


@pytest.mark.parametrize("kind", ["gsrcl", "afrcl"])
def test_a_query_of_log1p_values_is_used_as_the_original_uses_logged_values(kind, originals, query, tmp_path):
    _, Q, genes = query
    logged = np.log1p(Q.astype(np.float32))
    adata = ad.AnnData(logged)
    adata.var_names, adata.obs_names = genes, [f"cell{i}" for i in range(len(Q))]
    adata.write_h5ad(tmp_path / "logged.h5ad")
    refdir = tmp_path / "refs"
    assert _run("import", "-i", originals[kind], "-r", "imported", "-mp", refdir, "-q") == 0
    got = _predict(refdir, "imported", tmp_path / "logged.h5ad", tmp_path / "out")
    types, expected, labels = expected_probabilities(originals[kind], logged, genes, log=False)
    assert np.abs(got[types].to_numpy() - expected).max() < TOLERANCE
    assert list(got["Identified as"]) == list(labels)


def test_a_high_cut_off_leaves_the_same_cells_unassigned_as_the_original(originals, query, tmp_path):
    query_path, Q, genes = query
    refdir = tmp_path / "refs"
    assert _run("import", "-i", originals["gsrcl"], "-r", "g", "-mp", refdir, "-q") == 0
    got = _predict(refdir, "g", query_path, tmp_path / "out", p=0.9)
    _, _, labels = expected_probabilities(originals["gsrcl"], Q, genes, p=0.9)
    assert (labels == "Unassigned").any() and (labels != "Unassigned").any()
    assert list(got["Identified as"]) == list(labels)


def test_a_zip_as_published_imports_as_its_folder_and_the_import_is_recorded(originals, query, tmp_path):
    query_path, _, _ = query
    folder = originals["afrcl"]
    archive = tmp_path / "Toy.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:  # as published: the folder Toy/ inside
        for path in sorted(folder.iterdir()):
            zf.write(path, f"Toy/{path.name}")
        zf.writestr("__MACOSX/Toy/._Toy_svm.joblib", b"archiver litter")
    refdir = tmp_path / "refs"
    assert _run("import", "-i", archive, "-r", "from_zip", "-mp", refdir, "-q") == 0
    assert _run("import", "-i", folder, "-r", "from_folder", "-mp", refdir, "-q") == 0
    a = _predict(refdir, "from_zip", query_path, tmp_path / "a")
    b = _predict(refdir, "from_folder", query_path, tmp_path / "b")
    pd.testing.assert_frame_equal(a, b)
    assert sorted(p.name for p in refdir.iterdir()) == ["from_folder", "from_zip"]  # nothing unpacked left behind
    assert sorted(p.name for p in (refdir / "from_zip").iterdir()) == ["arrays.npz", "manifest.json"]
    manifest = json.loads((refdir / "from_zip" / "manifest.json").read_text())
    record = manifest["imported"]
    assert record["method"] == "afrcl" and record["original_name"] == "Toy"
    assert record["from"]["archive"] == "Toy.zip" and len(record["from"]["archive_sha256"]) == 64
    assert set(record["files"]) == {p.name for p in folder.iterdir()}
    assert all(len(h) == 64 for h in record["files"].values())
    ref = Reference.load(refdir / "from_zip")
    assert ref.cell_types == ["B cell", "T cell", "monocyte"] and ref.genes == GENES
    assert "imported from the original afrcl reference 'Toy'" in ref.summary()


def test_the_method_is_recognised_and_a_wrong_method_is_refused(originals, tmp_path, capsys):
    refdir = tmp_path / "refs"
    code = _run("import", "-i", originals["afrcl"], "-r", "x", "-mp", refdir, "--method", "gsrcl", "-q")
    assert code == InvalidReferenceError.exit_code
    assert "AF-RCL reference, not GsRCL" in capsys.readouterr().err
    assert not refdir.exists()


# --- refusals: one line, nothing written ------------------------------------------------------------------------
def _copy(folder: Path, tmp_path: Path) -> Path:
    target = tmp_path / "orig" / folder.name
    shutil.copytree(folder, target)
    return target


class _Exploit:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _refused(tmp_path, capsys, source, exit_code: int, words: str, *extra) -> None:
    refdir = tmp_path / "refs"
    code = _run("import", "-i", source, "-r", "bad", "-mp", refdir, "-q", *extra)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == exit_code, err
    assert len(err) == 1 and err[0].startswith("gsrcl import: error:") and words in err[0], err
    assert not refdir.exists() or not any(refdir.iterdir())


def test_a_joblib_file_that_would_run_code_is_refused_and_nothing_runs(originals, tmp_path, capsys):
    folder = _copy(originals["gsrcl"], tmp_path)
    marker = tmp_path / "MARKER"
    joblib.dump(_Exploit(marker), folder / "T cell--svm.joblib")
    _refused(tmp_path, capsys, folder, UnsafeFileError.exit_code, "T cell--svm.joblib")
    assert not marker.exists()


def test_a_checkpoint_that_would_run_code_is_refused_and_nothing_runs(originals, tmp_path, capsys):
    folder = _copy(originals["afrcl"], tmp_path)
    marker = tmp_path / "MARKER"
    torch.save({"payload": _Exploit(marker)}, folder / "Toy_pretrained_encoder.pt")
    _refused(tmp_path, capsys, folder, UnsafeFileError.exit_code, "Toy_pretrained_encoder.pt")
    assert not marker.exists()


def test_a_checkpoint_with_an_unexpected_key_or_shape_is_refused(originals, tmp_path, capsys):
    folder = _copy(originals["gsrcl"], tmp_path)
    ckpt = torch.load(folder / "B cell--enc.pt", weights_only=True)
    ckpt["forzen_params"]["encoder.9.linear.weight"] = torch.zeros(2, 2)
    torch.save(ckpt, folder / "B cell--enc.pt")
    _refused(tmp_path, capsys, folder, InvalidReferenceError.exit_code, "unexpected encoder.9.linear.weight")

    folder = _copy(originals["afrcl"], tmp_path / "2")
    state = torch.load(folder / "Toy_pretrained_encoder.pt", weights_only=True)
    state["encoder.1.linear.weight"] = state["encoder.1.linear.weight"][:, :1000].clone()
    torch.save(state, folder / "Toy_pretrained_encoder.pt")
    _refused(tmp_path / "2", capsys, folder, InvalidReferenceError.exit_code, "encoder.1.linear.weight has shape")


def test_a_genes_file_that_does_not_match_the_encoder_is_refused(originals, tmp_path, capsys):
    folder = _copy(originals["gsrcl"], tmp_path)
    (folder / "Toy-reference-genes.csv").write_text("".join(f"{g}\n" for g in GENES[:-1]))
    _refused(tmp_path, capsys, folder, InvalidReferenceError.exit_code, "takes 60 genes")


def test_a_genes_file_with_a_missing_value_or_a_repeat_is_refused(originals, tmp_path, capsys):
    folder = _copy(originals["gsrcl"], tmp_path)
    (folder / "Toy-reference-genes.csv").write_text("".join(f"{g}\n" for g in [*GENES[:-1], "NA"]))
    _refused(tmp_path, capsys, folder, InvalidReferenceError.exit_code, "missing value")
    (folder / "Toy-reference-genes.csv").write_text("".join(f"{g}\n" for g in [*GENES[:-1], GENES[0]]))
    _refused(tmp_path, capsys, folder, InvalidReferenceError.exit_code, "twice")


def test_a_cell_type_dict_that_does_not_match_the_svm_is_refused(originals, tmp_path, capsys):
    folder = _copy(originals["afrcl"], tmp_path)
    joblib.dump({np.str_("B cell"): 0, np.str_("T cell"): 1}, folder / "Toy_cell_type_dict.joblib")
    _refused(tmp_path, capsys, folder, InvalidReferenceError.exit_code, "Toy_cell_type_dict.joblib maps 2 cell types")


def test_files_that_do_not_pair_by_name_are_refused(originals, tmp_path, capsys):
    folder = _copy(originals["gsrcl"], tmp_path)
    shutil.copy(folder / "B cell--enc.pt", folder / "B cell--enc2.pt")
    _refused(tmp_path, capsys, folder, InvalidReferenceError.exit_code, "has 2 encoders")
    (folder / "B cell--enc2.pt").unlink()
    (folder / "B cell--svm.joblib").rename(folder / "B cell--other.joblib")
    _refused(tmp_path, capsys, folder, InvalidReferenceError.exit_code, "its SVM must be B cell--svm.joblib")
    (folder / "B cell--other.joblib").rename(folder / "B cell--svm.joblib")
    (folder / "README.txt").write_text("notes")
    _refused(tmp_path, capsys, folder, InvalidReferenceError.exit_code, "README.txt")


def test_a_folder_in_neither_layout_names_what_it_found_and_what_was_expected(tmp_path, capsys):
    folder = tmp_path / "orig" / "Nothing"
    folder.mkdir(parents=True)
    (folder / "Nothing-reference-genes.csv").write_text("A\nB\n")
    (folder / "weights.bin").write_bytes(b"\0")
    _refused(tmp_path, capsys, folder, InvalidReferenceError.exit_code, "found Nothing-reference-genes.csv, weights.bin")


def test_a_zip_member_that_escapes_its_folder_is_refused(originals, tmp_path, capsys):
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(originals["afrcl"].iterdir()):
            zf.write(path, f"Toy/{path.name}")
        zf.writestr("../escaped.txt", b"out")
    _refused(tmp_path, capsys, archive, UnsafeFileError.exit_code, "outside the folder")
    assert not (tmp_path / "escaped.txt").exists()


def test_a_truncated_archive_is_refused(originals, tmp_path, capsys):
    archive = tmp_path / "whole.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(originals["afrcl"].iterdir()):
            zf.write(path, f"Toy/{path.name}")
    cut = tmp_path / "cut.zip"
    cut.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    _refused(tmp_path, capsys, cut, CorruptFileError.exit_code, "cut.zip")


def test_an_existing_reference_is_kept_without_overwrite(originals, tmp_path, capsys):
    refdir = tmp_path / "refs"
    assert _run("import", "-i", originals["gsrcl"], "-r", "g", "-mp", refdir, "-q") == 0
    before = (refdir / "g" / "manifest.json").read_bytes()
    assert _run("import", "-i", originals["afrcl"], "-r", "g", "-mp", refdir, "-q") == 82
    assert "already exists" in capsys.readouterr().err
    assert (refdir / "g" / "manifest.json").read_bytes() == before
    assert _run("import", "-i", originals["afrcl"], "-r", "g", "-mp", refdir, "-q", "--overwrite") == 0
    assert Reference.load(refdir / "g").method == "afrcl"
