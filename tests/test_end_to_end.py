"""The whole pipeline on data every clone has (scanpy's bundled pbmc68k_reduced): train, save, load, predict from
a file with the CLI, the four outputs, ``gsrcl verify``, ``gsrcl references``, ``gsrcl train`` from an h5ad, and
bad input. The tiny references of both methods are trained once per session (`tests/conftest.py`)."""

from __future__ import annotations

import hashlib
import xml.etree.ElementTree as ET
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import gsrcl
from gsrcl import errors
from gsrcl.cli import main

METHODS = ("afrcl", "gsrcl")
OUTPUT_FILES = ["annotated.h5ad", "legend.txt", "probabilities.csv", "tsne.svg"]
UNASSIGNED = "Unassigned"
LABELS = "bulk_labels"
SVG = "{http://www.w3.org/2000/svg}"


def name(method: str) -> str:
    return f"pbmc68k_{method}"


def snapshot(folder: Path) -> dict[str, str]:
    """File name -> sha256 of every file under ``folder`` ({} when it does not exist)."""
    if not folder.exists():
        return {}
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def annotated(tiny_refdir, pbmc68k_query):
    """Method -> ``gsrcl.annotate`` of the in-memory query with the reference loaded from disk."""
    return {m: gsrcl.annotate(pbmc68k_query, gsrcl.Reference.load(tiny_refdir / name(m)), p=0.5, plot=False,
                              quiet=True) for m in METHODS}


@pytest.fixture(scope="module")
def predicted(tiny_refdir, pbmc68k_query_file, tmp_path_factory):
    """Method -> OUT of ``gsrcl predict -i query.h5ad -r NAME -mp REFDIR -o OUT`` (exit code checked)."""
    outs = {}
    for m in METHODS:
        out = tmp_path_factory.mktemp(f"predict_{m}") / "out"
        code = main(["predict", "-i", str(pbmc68k_query_file), "-r", name(m), "-mp", str(tiny_refdir), "-o",
                     str(out), "-q"])
        assert code == 0, (m, code)
        outs[m] = out
    return outs


@pytest.mark.parametrize("method", METHODS)
def test_a_saved_reference_loads_and_predicts_as_the_trained_one(method, tiny_references, tiny_refdir,
                                                                  pbmc68k_query, annotated):
    trained = tiny_references[method]
    loaded = gsrcl.Reference.load(tiny_refdir / name(method))
    assert loaded.method == trained.method == method
    assert loaded.genes == trained.genes and loaded.cell_types == trained.cell_types
    fresh = gsrcl.annotate(pbmc68k_query, trained, p=0.5, plot=False, quiet=True)
    np.testing.assert_array_equal(np.asarray(annotated[method].obsm["probabilities"]),
                                  np.asarray(fresh.obsm["probabilities"]))
    assert (annotated[method].obs["predicted_labels"] == fresh.obs["predicted_labels"]).all()
    np.testing.assert_array_equal(annotated[method].obs["novelty_score"], fresh.obs["novelty_score"])


@pytest.mark.parametrize("method", METHODS)
def test_held_out_cells_are_annotated_well_above_chance(method, pbmc68k, annotated):
    ref_part, query = pbmc68k
    truth = query.obs[LABELS].astype(str).to_numpy()
    out = annotated[method]
    assert list(out.obs_names) == list(query.obs_names)
    P = np.asarray(out.obsm["probabilities"])
    types = np.asarray(sorted(ref_part.obs[LABELS].astype(str).unique()))
    assert P.shape == (query.n_obs, len(types))
    majority = pd.Series(truth).value_counts(normalize=True).iloc[0]  # calling every cell the commonest type
    top = np.mean(types[P.argmax(axis=1)] == truth)
    labels = out.obs["predicted_labels"].astype(str).to_numpy()
    assigned = labels != UNASSIGNED
    # the margins sit well below what the tiny settings reach (measured values: docs/decisions.md)
    assert top >= majority + 0.2, (top, majority)
    assert assigned.mean() > 0.4 and np.mean(labels[assigned] == truth[assigned]) >= top


@pytest.mark.parametrize("method", METHODS)
def test_predict_from_a_file_writes_four_outputs_that_agree_with_annotate(method, predicted, pbmc68k_query,
                                                                            annotated, tiny_references):
    out, mem = predicted[method], annotated[method]
    types = tiny_references[method].cell_types
    assert sorted(p.name for p in out.iterdir()) == OUTPUT_FILES, "missing outputs or temporary files left"

    csv = pd.read_csv(out / "probabilities.csv")
    assert list(csv.columns) == ["barcode", *types, "Identified as"]
    assert list(csv["barcode"]) == list(pbmc68k_query.obs_names)
    P = csv[types].to_numpy()
    np.testing.assert_allclose(P, np.asarray(mem.obsm["probabilities"]), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(P.sum(axis=1), 1.0, atol=1e-5)  # both methods report rows that sum to 1
    labels = csv["Identified as"].to_numpy(dtype=str)
    assert (labels == mem.obs["predicted_labels"].astype(str).to_numpy()).all()
    rule = np.where(P.max(axis=1) <= 0.5, UNASSIGNED, np.asarray(types)[P.argmax(axis=1)])
    assert (labels == rule).all()

    legend = [line.split("\t") for line in (out / "legend.txt").read_text().splitlines()]
    assert [row[0] for row in legend] == [*types, UNASSIGNED]
    assert [int(row[2]) for row in legend] == [int((labels == t).sum()) for t in [*types, UNASSIGNED]]
    assert all(row[1].startswith("#") for row in legend)

    a = ad.read_h5ad(out / "annotated.h5ad")
    assert list(a.obs_names) == list(pbmc68k_query.obs_names)
    assert (a.obs["predicted_labels"].astype(str).to_numpy() == labels).all()
    assert (a.obs[LABELS].astype(str) == pbmc68k_query.obs[LABELS].astype(str)).all()  # metadata carried over
    for col in ("conf_score", "novelty_score"):
        np.testing.assert_allclose(a.obs[col], mem.obs[col], rtol=1e-4, atol=1e-6, err_msg=col)
    assert (sp.csr_matrix(a.X) != sp.csr_matrix(pbmc68k_query.X)).nnz == 0
    assert a.uns["gsrcl"]["method"] == method

    root = ET.parse(out / "tsne.svg").getroot()
    texts = ["".join(t.itertext()) for t in root.iter(f"{SVG}text")]
    assert root.tag == f"{SVG}svg" and "t-SNE 1" in texts
    tsne = a.uns["gsrcl"]["tsne"]
    assert tsne["drawn"] and tsne["n_cells"] == pbmc68k_query.n_obs


def test_verify_then_predict_without_input_matches_predicting_the_file(tiny_refdir, pbmc68k_query_file, predicted,
                                                                       tiny_references, tmp_path, capsys):
    out = tmp_path / "two_step"
    capsys.readouterr()
    assert main(["verify", "-i", str(pbmc68k_query_file), "-r", name("gsrcl"), "-mp", str(tiny_refdir), "-o",
                 str(out)]) == 0
    assert "verified successfully" in capsys.readouterr().out
    verified = ad.read_h5ad(out / "verified.h5ad")
    assert list(verified.var_names) == tiny_references["gsrcl"].genes  # aligned to the reference genes
    assert main(["predict", "-r", name("gsrcl"), "-mp", str(tiny_refdir), "-o", str(out), "--no-plot", "-q"]) == 0
    a = pd.read_csv(out / "probabilities.csv", index_col=0)
    b = pd.read_csv(predicted["gsrcl"] / "probabilities.csv", index_col=0)
    assert list(a.index) == list(b.index) and (a["Identified as"] == b["Identified as"]).all()
    np.testing.assert_allclose(a.drop(columns="Identified as"), b.drop(columns="Identified as"), rtol=1e-5,
                               atol=1e-6)
    assert not (out / "tsne.svg").exists()


def test_references_lists_both_tiny_references(tiny_refdir, tiny_references, capsys):
    capsys.readouterr()
    assert main(["references", "-mp", str(tiny_refdir)]) == 0
    out = capsys.readouterr().out
    for method in METHODS:
        line = next(line for line in out.splitlines() if line.startswith(name(method)))
        assert method in line and str(len(tiny_references[method].genes)) in line


def _query_with(query: ad.AnnData, *, var_names=None, X=None) -> ad.AnnData:
    bad = ad.AnnData(X=query.X.copy() if X is None else X, obs=query.obs[[]].copy(),
                     var=pd.DataFrame(index=query.var_names if var_names is None else var_names))
    return bad


BAD_QUERIES = {
    # what the query is -> (how to make it from the good one, the error class of its exit code)
    "no gene of the reference": (lambda q: _query_with(q, var_names=[f"NOTAGENE{i}" for i in range(q.n_vars)]),
                                 errors.GeneOverlapError),
    "scaled values": (lambda q: _query_with(q, X=sp.csr_matrix(q.X.toarray() - 1.0)), errors.ValuesError),
    "a missing file": (None, errors.MissingPathError),
}


@pytest.mark.parametrize("case", list(BAD_QUERIES))
def test_bad_input_gives_its_exit_code_one_line_and_writes_nothing(case, tiny_refdir, pbmc68k_query, tmp_path,
                                                                   capsys):
    make, error = BAD_QUERIES[case]
    path = tmp_path / "bad.h5ad"
    if make is not None:
        make(pbmc68k_query).write_h5ad(path)
    out = tmp_path / "out"
    capsys.readouterr()
    code = main(["predict", "-i", str(path), "-r", name("afrcl"), "-mp", str(tiny_refdir), "-o", str(out), "-q"])
    err = capsys.readouterr().err.splitlines()
    assert code == error.exit_code, (case, code, err)
    assert len(err) == 1 and err[0].startswith("gsrcl predict: error:"), err
    assert not out.exists()


def test_an_unknown_reference_or_existing_outputs_change_nothing(tiny_refdir, pbmc68k_query_file, tmp_path):
    out = tmp_path / "out"
    args = ["predict", "-i", str(pbmc68k_query_file), "-mp", str(tiny_refdir), "-o", str(out), "-q"]
    assert main([*args, "-r", "nosuch"]) == errors.InvalidReferenceError.exit_code
    assert not out.exists()
    out.mkdir()
    (out / "probabilities.csv").write_text("mine\n")
    before = snapshot(out)
    assert main([*args, "-r", name("afrcl")]) == errors.OutputError.exit_code
    assert snapshot(out) == before


@pytest.fixture(scope="module")
def reference_file(pbmc68k, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("train_input") / "reference.h5ad"
    pbmc68k[0].write_h5ad(path)
    return path


@pytest.mark.slow
def test_train_command_from_an_h5ad_builds_a_reference_predict_uses(reference_file, pbmc68k, pbmc68k_query_file,
                                                                     tmp_path, capsys):
    refdir = tmp_path / "refs"
    args = ["train", "-i", str(reference_file), "--labels", LABELS, "-r", "cli", "-mp", str(refdir), "--method",
            "afrcl", "--epochs", "2", "--ensemble", "1", "--top-genes", "100", "-q"]
    assert main(args) == 0
    ref = gsrcl.Reference.load(refdir / "cli")
    assert ref.method == "afrcl" and len(ref.genes) == 100 and set(ref.genes) <= set(pbmc68k[0].var_names)
    assert ref.cell_types == sorted(pbmc68k[0].obs[LABELS].astype(str).unique())
    hyper, training = ref.manifest["hyperparameters"], ref.manifest["training"]
    assert hyper["epochs"] == 2 and hyper["ensemble"] == 1 and training["cells"] == pbmc68k[0].n_obs
    before = snapshot(refdir)
    capsys.readouterr()
    assert main(args) == errors.OutputError.exit_code  # the name is taken: nothing is trained or replaced
    assert snapshot(refdir) == before and "--overwrite" in capsys.readouterr().err
    query = tmp_path / "q.h5ad"
    pbmc68k[1][:, ref.genes].copy().write_h5ad(query)
    out = tmp_path / "out"
    assert main(["predict", "-i", str(query), "-r", "cli", "-mp", str(refdir), "-o", str(out), "--no-plot", "-q"]) == 0
    labels = pd.read_csv(out / "probabilities.csv", index_col=0)["Identified as"]
    assert list(labels.index) == list(pbmc68k[1].obs_names)
    assert set(labels) <= set(ref.cell_types) | {UNASSIGNED}


def test_train_command_with_a_missing_labels_column_writes_nothing(reference_file, tmp_path, capsys):
    refdir = tmp_path / "refs"
    capsys.readouterr()
    code = main(["train", "-i", str(reference_file), "--labels", "no_such_column", "-r", "x", "-mp", str(refdir),
                 "-q"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == errors.LabelsError.exit_code and len(err) == 1 and "no_such_column" in err[0]
    assert snapshot(refdir) == {}
