"""Prediction's edge cases (issue 28): a cell type named Unassigned, cells with no or too few counts, the same value
rule in verify and predict, a backed AnnData, the overlap rule on a raw query, labels that break legend.txt,
names that open as formulas in a spreadsheet, repeated cell names in the Python API.

The query is scanpy's bundled pbmc68k_reduced (its 30% part) and the references those of ``tests/data/compat``
(read-only: copied before a command line run)."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import gsrcl
from gsrcl import errors
from gsrcl.cli import main
from gsrcl.cutoff import (BELOW_P, MIN_DETECTED_GENES, NO_COUNTS, REASONS, TOO_FEW_GENES, UNASSIGNED,
                          min_detected_genes, unassigned_reasons)
from gsrcl.methods.labels import RESERVED_LABEL, check_labels

COMPAT = Path(__file__).parent / "data" / "compat"
EXPECTED = COMPAT / "expected_afrcl.csv"


@pytest.fixture(scope="module")
def ref():
    return gsrcl.Reference.load(COMPAT / "references" / "compat_afrcl")


@pytest.fixture(scope="module")
def query_all_genes():
    """The query part of pbmc68k_reduced with all its 765 genes (CSR float32 X, log1p values)."""
    pytest.importorskip("scanpy", reason="the query is scanpy's bundled pbmc68k_reduced")
    from gsrcl.demo import load_pbmc68k, split

    q = split(load_pbmc68k())[1].copy()
    q.X = sp.csr_matrix(q.X, dtype=np.float32)
    return q


@pytest.fixture()
def query(query_all_genes, ref):
    """The compatibility query (`tests/data/compat/make.py`'s ``query_for``): a fresh copy for each test."""
    genes = ref.genes
    others = [g for g in query_all_genes.var_names if g not in set(genes)][:100]
    return query_all_genes[:, list(genes[:-5]) + others].copy()


@pytest.fixture()
def refdir(tmp_path):
    """REFDIR holding a copy of the compat AF-RCL reference as ``compat_afrcl``."""
    d = tmp_path / "refs"
    shutil.copytree(COMPAT / "references" / "compat_afrcl", d / "compat_afrcl")
    return d


# --- item 1: a cell type named Unassigned ---------------------------------------------------------------------


def test_unassigned_is_the_reserved_label():
    assert RESERVED_LABEL == UNASSIGNED


@pytest.mark.parametrize("name", ["Unassigned", " Unassigned ", "unassigned"])
def test_training_refuses_cells_labelled_unassigned_at_once(name):
    rng = np.random.default_rng(0)
    adata = ad.AnnData(sp.csr_matrix(rng.poisson(1.0, (30, 20)).astype(np.float32)))
    adata.obs["cell_type"] = ["A"] * 12 + ["B"] * 15 + [name] * 3
    with pytest.raises(errors.LabelsError) as e:
        gsrcl.train(adata, "cell_type", "afrcl", quiet=True)
    msg = e.value.message
    assert "3 of 30 cells" in msg and "Unassigned" in msg and "relabel" in msg and "\n" not in msg


def test_prediction_refuses_a_reference_with_an_unassigned_type_before_predicting(ref, query, monkeypatch):
    from gsrcl import annotation

    bad = gsrcl.Reference.load(COMPAT / "references" / "compat_afrcl")
    bad.manifest["cell_types"] = [UNASSIGNED, *bad.manifest["cell_types"][1:]]
    ran, run = [], annotation.predict
    monkeypatch.setattr(annotation, "predict", lambda *a, **k: ran.append(1) or run(*a, **k))
    with pytest.raises(errors.InvalidReferenceError, match="named 'Unassigned'.*retrain"):
        gsrcl.annotate(query, bad)
    assert not ran, "the prediction ran before the reference was refused"
    from gsrcl.verify import verify_adata

    with pytest.raises(errors.InvalidReferenceError, match="named 'Unassigned'"):
        verify_adata(query, bad)  # verify refuses it too, rather than write a file predict would refuse


# --- item 3: cells with no counts, or too few genes ------------------------------------------------------------


def test_the_unassigned_reasons_rule():
    labels = np.array(["A", "B", UNASSIGNED, "A", "B"], dtype=object)
    detected = np.array([0, 3, 50, 50, 50])
    novelty = np.array([0.0, 0.0, 9.0, 9.0, 0.0])
    out, reasons = unassigned_reasons(labels, detected, 2000, novelty, 5.0)
    assert list(out) == [UNASSIGNED] * 4 + ["B"]
    assert list(reasons) == [NO_COUNTS, TOO_FEW_GENES, BELOW_P, "novelty above the cut-off", ""]
    assert labels[0] == "A", "the input labels were changed"
    assert min_detected_genes(2000) == MIN_DETECTED_GENES and min_detected_genes(50) == 5
    assert min_detected_genes(5) == 1  # a tiny reference: only cells with no counts


def test_cells_without_counts_or_with_too_few_genes_are_unassigned_with_the_reason(ref, query, gsrcl_log):
    X = query.X.toarray()
    ref_cols = np.flatnonzero(query.var_names.isin(ref.genes))
    X[0, ref_cols] = 0  # counts only in genes the reference lacks
    X[1, :] = 0  # no counts at all
    X[2, ref_cols[min_detected_genes(len(ref.genes)) - 1:]] = 0  # one gene fewer than needed
    query.X = sp.csr_matrix(X)
    out = gsrcl.annotate(query, ref, p=0.5)
    reason = out.obs["unassigned_reason"].astype(str).to_numpy()
    labels = out.obs["predicted_labels"].astype(str).to_numpy()
    assert list(reason[:3]) == [NO_COUNTS, NO_COUNTS, TOO_FEW_GENES]
    assert (labels[:3] == UNASSIGNED).all()
    assert list(out.obs["unassigned_reason"].cat.categories) == list(REASONS)
    # every other cell keeps the label the compatibility fixture recorded; its reason follows that label
    expected = pd.read_csv(EXPECTED, index_col=0)["predicted_labels"].to_numpy()
    assert (labels[3:] == expected[3:]).all()
    assert ((reason[3:] == BELOW_P) == (expected[3:] == UNASSIGNED)).all() and set(reason[3:]) <= {"", BELOW_P}
    record = out.uns["gsrcl"]["unassigned"]
    assert record["no_counts"] == 2 and record["too_few_genes"] == 1
    assert "2 with no counts in the reference genes" in gsrcl_log.text and "1 with fewer than" in gsrcl_log.text


def test_the_command_line_says_how_many_cells_had_no_counts(query, refdir, tmp_path, capsys):
    X = query.X.toarray()
    X[4] = 0
    query.X = sp.csr_matrix(X)
    path = tmp_path / "q.h5ad"
    query.write_h5ad(path)
    out = tmp_path / "out"
    assert main(["predict", "-i", str(path), "-r", "compat_afrcl", "-mp", str(refdir), "-o", str(out),
                 "--no-plot"]) == 0
    assert "1 with no counts in the reference genes" in capsys.readouterr().err
    annotated = ad.read_h5ad(out / "annotated.h5ad")
    assert annotated.obs["unassigned_reason"].astype(str).iloc[4] == NO_COUNTS
    assert annotated.obs["predicted_labels"].astype(str).iloc[4] == UNASSIGNED


# --- item 8: the same value rule in verify and predict ---------------------------------------------------------


def _negative(query, row=7):
    X = query.X.toarray()
    X[row, np.flatnonzero(X[row])[0]] = -0.5
    query.X = sp.csr_matrix(X)
    return query


def test_verify_refuses_negative_values_as_predict_does(ref, query):
    from gsrcl.verify import verify_adata

    query = _negative(query)
    with pytest.raises(errors.ValuesError) as v:
        verify_adata(query, ref)
    with pytest.raises(errors.ValuesError) as p:
        gsrcl.annotate(query, ref)
    assert v.value.message == p.value.message and type(v.value) is type(p.value)


def test_verify_and_predict_exit_with_the_same_code_on_negative_values(query, refdir, tmp_path):
    path = tmp_path / "q.h5ad"
    _negative(query).write_h5ad(path)
    code = errors.ValuesError.exit_code
    assert main(["verify", "-i", str(path), "-r", "compat_afrcl", "-mp", str(refdir), "-o", str(tmp_path / "v"),
                 "-q"]) == code
    assert not (tmp_path / "v" / "verified.h5ad").exists()
    assert main(["predict", "-i", str(path), "-r", "compat_afrcl", "-mp", str(refdir), "-o", str(tmp_path / "p"),
                 "-q"]) == code


@pytest.mark.parametrize("log", ["1", "0"])
def test_forcing_the_value_kind_does_not_let_negative_values_through(ref, query, log):
    with pytest.raises(errors.ValuesError, match="negative"):
        gsrcl.annotate(_negative(query), ref, log=log)


def test_a_negative_value_after_the_rows_looked_at_first_is_refused(ref, query, monkeypatch):
    from gsrcl import preparation as predict_module

    monkeypatch.setattr(predict_module, "VALUE_SAMPLE_CELLS", 10)
    with pytest.raises(errors.ValuesError, match="negative"):
        gsrcl.annotate(_negative(query, row=150), ref, block_size=32)


# --- item 10: a backed AnnData ---------------------------------------------------------------------------------


@pytest.mark.parametrize("dense", [False, True])
def test_a_backed_anndata_is_annotated_as_the_same_one_in_memory(ref, query, tmp_path, dense):
    if dense:
        query.X = query.X.toarray()
    path = tmp_path / "q.h5ad"
    query.write_h5ad(path)
    backed = ad.read_h5ad(path, backed="r")
    try:
        out = gsrcl.annotate(backed, ref, block_size=64)
        assert backed.isbacked and "predicted_labels" not in backed.obs, "the input was changed"
    finally:
        backed.file.close()
    mem = gsrcl.annotate(query, ref, block_size=64)
    assert not out.isbacked
    assert (out.obs["predicted_labels"] == mem.obs["predicted_labels"]).all()
    np.testing.assert_array_equal(out.obsm["probabilities"], mem.obsm["probabilities"])
    np.testing.assert_array_equal(np.asarray(sp.csr_matrix(out.X).todense()),
                                  np.asarray(sp.csr_matrix(mem.X).todense()))


# --- item 12: the overlap rule on a raw query ------------------------------------------------------------------


def test_a_query_holding_every_reference_gene_among_many_others_is_accepted(ref, query_all_genes, refdir, tmp_path,
                                                                             capsys):
    # 120 of 765 query genes (15.7%) are reference genes, but every reference gene is there
    query = query_all_genes.copy()
    out = gsrcl.annotate(query, ref)
    rec = out.uns["gsrcl"]["genes"]
    assert rec["n_reference_genes_matched"] == rec["n_reference_genes"] == len(ref.genes)
    assert rec["n_query_genes_matched"] / rec["n_query_genes"] < 0.5
    path = tmp_path / "q.h5ad"
    query.write_h5ad(path)
    assert main(["verify", "-i", str(path), "-r", "compat_afrcl", "-mp", str(refdir), "-o", str(tmp_path)]) == 0
    said = capsys.readouterr().out
    assert "query genes (15.7%)" in said and "reference genes (100.0%)" in said


# --- smaller ones ----------------------------------------------------------------------------------------------


def test_training_refuses_a_tab_or_line_break_in_a_label():
    for bad in ("T\tcell", "T\ncell", "T\rcell"):
        with pytest.raises(errors.LabelsError, match="control character") as e:
            check_labels(["A", bad, "B"])
        assert "\n" not in e.value.message.replace(repr(bad), "")


def test_the_legend_keeps_three_fields_per_line_whatever_the_type_names():
    from gsrcl.plot import legend_text, palette

    types = ["A\tB", "C\nD", "E\\F", "G\rH"]
    text = legend_text(types, palette(types), ["A\tB", "C\nD", UNASSIGNED])
    lines = text.split("\n")[:-1]
    assert len(lines) == len(types) + 1
    assert all(len(line.split("\t")) == 3 for line in lines)
    assert [line.split("\t")[0] for line in lines] == ["A\\tB", "C\\nD", "E\\\\F", "G\\rH", UNASSIGNED]


def test_names_that_a_spreadsheet_reads_as_formulas_are_quoted_in_the_csv(tmp_path):
    from gsrcl.outputs import _csv
    from gsrcl.predict import Prediction

    types = ["=SUM(A1)", "B"]
    names = ["=cmd|' /C calc'!A0", "+1", "-2", "@x", "\tt", "AAAC-1"]
    proba = np.tile([[0.9, 0.1]], (len(names), 1))
    labels = np.array(["=SUM(A1)"] * 5 + [UNASSIGNED], dtype=object)
    pred = Prediction(pd.Index(names), types, "afrcl", proba, None, labels, np.arange(0), np.empty((0, 0)))
    _csv(tmp_path / "p.csv", pred)
    rows = list(csv.reader(open(tmp_path / "p.csv", newline="")))
    assert rows[0] == ["barcode", "'=SUM(A1)", "B", "Identified as"]
    assert [r[0] for r in rows[1:]] == ["'=cmd|' /C calc'!A0", "'+1", "'-2", "'@x", "'\tt", "AAAC-1"]
    assert [r[-1] for r in rows[1:]] == ["'=SUM(A1)"] * 5 + [UNASSIGNED]
    assert all(float(r[1]) == 0.9 for r in rows[1:])


def test_annotate_refuses_repeated_cell_names_as_the_command_line_does(ref, query, tmp_path, refdir):
    query.obs_names = ["same"] * 2 + list(query.obs_names[2:])
    with pytest.raises(errors.NamesError) as api:
        gsrcl.annotate(query, ref)
    assert "1 cell barcode occurs more than once (e.g. 'same')" in api.value.message
    path = tmp_path / "q.h5ad"
    query.write_h5ad(path)
    assert main(["predict", "-i", str(path), "-r", "compat_afrcl", "-mp", str(refdir), "-o",
                 str(tmp_path / "out"), "-q"]) == errors.NamesError.exit_code
