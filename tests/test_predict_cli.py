"""``gsrcl predict`` end to end on real data: a tiny reference trained on CEL-seq2 cells of three cell lines,
Drop-seq cells of the same lines as the query."""

from __future__ import annotations

import hashlib
import xml.etree.ElementTree as ET
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from gsrcl import errors
from gsrcl.annotation import UNASSIGNED, annotate, prob_column, probabilities
from gsrcl.outputs import OUTPUTS
from gsrcl.cli import main
from gsrcl.plot import palette

@pytest.fixture(scope="module")
def refdir(cellbench_refdir):
    return cellbench_refdir


@pytest.fixture(scope="module")
def query(cellbench_query):
    return cellbench_query()


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def snapshot(folder: Path) -> dict[str, str]:
    return {p.name: sha(p) for p in sorted(folder.iterdir())} if folder.exists() else {}


def predict(*args) -> int:
    return main(["predict", *map(str, args), "-q"])


@pytest.mark.realdata
def test_predict_writes_the_four_outputs_consistently(refdir, query, tmp_path):
    before = sha(query)
    out = tmp_path / "out"
    assert predict("-i", query, "-r", "afrcl", "-mp", refdir, "-o", out, "--block-size", 50) == 0
    assert sha(query) == before, "the input was modified"
    assert sorted(p.name for p in out.iterdir()) == sorted(OUTPUTS), "temporary files left behind"
    q = ad.read_h5ad(query)
    types = sorted(q.obs["cell_type"].astype(str).unique())

    csv = pd.read_csv(out / "probabilities.csv")
    assert list(csv.columns) == ["barcode", *types, "Identified as"]
    assert list(csv["barcode"]) == list(q.obs_names)
    P = csv[types].to_numpy()
    np.testing.assert_allclose(P.sum(axis=1), 1.0, atol=1e-6)  # AF-RCL: multi-class probabilities
    labels = csv["Identified as"].to_numpy(dtype=str)
    assert set(labels) <= set(types) | {UNASSIGNED}
    top = P.max(axis=1)
    expected = np.where(top <= 0.5, UNASSIGNED, np.asarray(types)[P.argmax(axis=1)])
    assert (labels == expected).all()
    assert np.mean(labels == q.obs["cell_type"].astype(str).to_numpy()) > 0.5  # same cell lines, other platform

    colours = palette(types)
    legend = [line.split("\t") for line in (out / "legend.txt").read_text().splitlines()]
    assert [row[0] for row in legend] == [*types, UNASSIGNED]
    assert [row[1] for row in legend] == [colours[t] for t in [*types, UNASSIGNED]]
    assert [int(row[2]) for row in legend] == [int((labels == t).sum()) for t in [*types, UNASSIGNED]]

    root = ET.parse(out / "tsne.svg").getroot()
    assert root.tag.endswith("svg")
    texts = ["".join(t.itertext()) for t in root.iter("{http://www.w3.org/2000/svg}text")]
    assert "t-SNE 1" in texts and "t-SNE 2" in texts
    assert "AF-RCL, reference 'afrcl', p = 0.5" in texts  # the title: method, reference, cut-off

    a = ad.read_h5ad(out / "annotated.h5ad")
    assert list(a.obs_names) == list(q.obs_names) and list(a.var_names) == list(q.var_names)
    assert (a.X != q.X).nnz == 0, "annotated.h5ad's X (written block by block) differs from the query"
    assert (a.obs["cell_type"].astype(str) == q.obs["cell_type"].astype(str)).all()  # metadata carried over
    assert (a.obs["predicted_labels"].astype(str).to_numpy() == labels).all()
    assert list(a.obs["predicted_labels"].cat.categories) == [*types, UNASSIGNED]
    np.testing.assert_allclose(a.obs["conf_score"], top, rtol=1e-6)
    assert list(a.uns["gsrcl"]["cell_types"]) == types
    np.testing.assert_allclose(probabilities(a).to_numpy(), P, rtol=1e-7)
    assert list(probabilities(a).columns) == types
    assert "max_raw_score" not in a.obs  # AF-RCL has no un-normalised scores
    rec = a.uns["gsrcl"]
    assert rec["method"] == "afrcl" and rec["reference"]["name"] == "afrcl"
    assert rec["genes"]["n_query_genes"] == q.n_vars
    assert 0.5 * q.n_vars < rec["genes"]["n_query_genes_matched"] <= q.n_vars
    assert rec["values"]["detected"] == "counts"
    assert rec["params"]["p"] == 0.5 and rec["params"]["block_size"] == 50
    assert rec["tsne"]["drawn"] and rec["tsne"]["n_cells"] == q.n_obs
    assert {"gsrcl", "anndata", "torch"} <= set(rec["versions"])

    # blockwise from disk (blocks of 50 cells) == in memory in one block, through the Python API
    mem = annotate(q, Path(refdir) / "afrcl", quiet=True)
    np.testing.assert_allclose(mem.obsm["probabilities"], P, rtol=1e-5, atol=1e-6)
    assert (mem.obs["predicted_labels"].astype(str).to_numpy() == labels).all()
    # the query neighbourhoods too: the streamed PCA reads the file three more times in blocks of 50
    assert rec["neighbours"]["applied"] and rec["params"]["neighbours"] == 15
    np.testing.assert_allclose(a.obs["unseen_score"], mem.obs["unseen_score"], rtol=1e-4)
    np.testing.assert_allclose(a.obs["unseen_score_cell"], a.obs["novelty_score"] / a.obs["conf_score"], rtol=1e-5)


@pytest.mark.realdata
def test_two_step_verify_then_predict_matches_predicting_the_raw_file(refdir, query, tmp_path):
    out = tmp_path / "two"
    assert main(["verify", "-i", str(query), "-r", "gsrcl", "-mp", str(refdir), "-o", str(out), "-q"]) == 0
    assert predict("-r", "gsrcl", "-mp", refdir, "-o", out) == 0
    direct = tmp_path / "direct"
    assert predict("-i", query, "-r", "gsrcl", "-mp", refdir, "-o", direct, "--no-plot", "--insert-prob") == 0
    a = pd.read_csv(out / "probabilities.csv", index_col=0)
    b = pd.read_csv(direct / "probabilities.csv", index_col=0)
    assert list(a.index) == list(b.index)
    assert (a["Identified as"] == b["Identified as"]).all()
    np.testing.assert_allclose(a.drop(columns="Identified as"), b.drop(columns="Identified as"), rtol=1e-5, atol=1e-6)
    assert not (direct / "tsne.svg").exists()
    inserted = ad.read_h5ad(direct / "annotated.h5ad")
    for t in b.columns.drop("Identified as"):
        np.testing.assert_allclose(inserted.obs[prob_column(t)], b[t], rtol=1e-6)
    ann = ad.read_h5ad(out / "annotated.h5ad")
    assert ann.uns["gsrcl"]["source"]["verified_input"]
    # GsRCL: conf_score is the max of the row-normalised probabilities, max_raw_score that of the raw scores
    raw = ann.obsm["raw_scores"]
    np.testing.assert_allclose(ann.obs["max_raw_score"], raw.max(axis=1), rtol=1e-6)
    from gsrcl.linear import NOVELTY_FROM

    near = ann.obs["novelty_score"].to_numpy() <= NOVELTY_FROM  # beyond, the linear pool mixes in the linear SVM's
    assert near.any()
    np.testing.assert_allclose(ann.obsm["probabilities"][near], (raw / raw.sum(axis=1, keepdims=True))[near],
                               rtol=1e-6)


@pytest.mark.realdata
def test_existing_outputs_are_kept_without_overwrite(refdir, query, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "probabilities.csv").write_text("keep me\n")
    (out / "tsne.svg").write_text("<svg/>")
    before = snapshot(out)
    assert predict("-i", query, "-r", "afrcl", "-mp", refdir, "-o", out) == errors.OutputError.exit_code
    assert snapshot(out) == before
    # with --overwrite and no plot, the stale picture goes too
    assert predict("-i", query, "-r", "afrcl", "-mp", refdir, "-o", out, "--overwrite", "--no-plot") == 0
    assert sorted(p.name for p in out.iterdir()) == ["annotated.h5ad", "legend.txt", "probabilities.csv"]


@pytest.mark.realdata
def test_bad_reference_writes_nothing(refdir, query, tmp_path, capsys):
    bad = tmp_path / "refs"
    (bad / "afrcl").mkdir(parents=True)
    for f in (Path(refdir) / "afrcl").iterdir():
        (bad / "afrcl" / f.name).write_bytes(f.read_bytes())
    npz = bad / "afrcl" / "arrays.npz"
    npz.write_bytes(npz.read_bytes()[:-10] + b"0123456789")  # tampered
    out = tmp_path / "out"
    capsys.readouterr()
    assert predict("-i", query, "-r", "afrcl", "-mp", bad, "-o", out) == errors.InvalidReferenceError.exit_code
    assert not out.exists()
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "checksum" in err[0]
    assert predict("-i", query, "-r", "nosuch", "-mp", refdir, "-o", out) == errors.InvalidReferenceError.exit_code
    assert not out.exists()


@pytest.mark.realdata
def test_unexpected_failure_is_exit_140_one_line_and_leaves_out_unchanged(refdir, query, tmp_path, capsys,
                                                                           monkeypatch):
    from gsrcl.methods.afrcl import AFRCL

    def broken(self, X):
        raise RuntimeError("simulated failure\nsecond line")

    monkeypatch.setattr(AFRCL, "predict_scores", broken)
    monkeypatch.setattr(AFRCL, "predict_scores_and_embed", lambda self, X, rows: broken(self, X))
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    before = snapshot(out)
    capsys.readouterr()
    assert predict("-i", query, "-r", "afrcl", "-mp", refdir, "-o", out, "--block-size", 40) == errors.PredictionError.exit_code
    assert snapshot(out) == before  # no temporary file, no partial output
    err = [line for line in capsys.readouterr().err.strip().splitlines() if not line.startswith("warning:")]
    assert len(err) == 1 and "simulated failure" in err[0] and "Traceback" not in err[0]


@pytest.mark.realdata
def test_five_cells_are_annotated_and_the_plot_is_replaced_by_a_note(refdir, tmp_path, cellbench_query):
    path = cellbench_query(5)
    out = tmp_path / "out"
    assert predict("-i", path, "-r", "gsrcl", "-mp", refdir, "-o", out) == 0
    assert len(pd.read_csv(out / "probabilities.csv")) == 5
    texts = ["".join(t.itertext()) for t in ET.parse(out / "tsne.svg").getroot().iter("{http://www.w3.org/2000/svg}text")]
    assert any("t-SNE not drawn: 5 cells" in t for t in texts)
    tsne = ad.read_h5ad(out / "annotated.h5ad").uns["gsrcl"]["tsne"]
    assert not tsne["drawn"] and "5 cells" in tsne["note"]
    assert sum(int(line.split("\t")[2]) for line in (out / "legend.txt").read_text().splitlines()) == 5


def _with_extra_genes(query: Path, n_extra: int, dest: Path) -> Path:
    q = ad.read_h5ad(query)[:30].copy()
    extra = ad.AnnData(X=sp.csr_matrix((q.n_obs, n_extra), dtype=np.float32),
                       obs=pd.DataFrame(index=q.obs_names), var=pd.DataFrame(index=[f"NOTAGENE{i}" for i in range(n_extra)]))
    both = ad.concat([q, extra], axis=1, merge="first")
    both.write_h5ad(dest)
    return dest


@pytest.mark.realdata
def test_gene_overlap_rule_refuses_half_or_less_of_the_query_genes_and_of_the_reference_genes(refdir, query,
                                                                                             tmp_path, capsys):
    q = ad.read_h5ad(query, backed="r")
    from gsrcl.genes import match_genes
    from gsrcl.reference import Reference

    ref_genes = Reference.load(Path(refdir) / "afrcl").genes
    m = match_genes(q.var, ref_genes)
    matched, n = m.n_query_matched, q.n_vars
    q.file.close()
    assert 0.5 < m.ref_fraction < 0.8  # the query (Drop-seq) has about half of the reference's (CEL-seq2) genes
    over = _with_extra_genes(query, 2 * matched - n - 1, tmp_path / "over.h5ad")  # matched / total just > 0.5
    half = _with_extra_genes(query, 2 * matched - n, tmp_path / "half.h5ad")  # exactly 0.5 of the query genes
    capsys.readouterr()
    assert main(["predict", "-i", str(over), "-r", "afrcl", "-mp", str(refdir), "-o", str(tmp_path / "ok"),
                 "--no-plot"]) == 0
    # under 80% of the reference genes: the warning says what to do
    warning = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning: only")]
    assert len(warning) == 1 and "--genes-from" in warning[0]
    # half of the query genes, but more than half of the reference genes: the model gets most of its input
    assert predict("-i", half, "-r", "afrcl", "-mp", refdir, "-o", tmp_path / "half") == 0
    # half of the query genes and half or fewer of the reference genes: refused
    k = len(ref_genes) // 2
    few = ad.read_h5ad(query)[:30, np.flatnonzero(m.query_matched)[:k]].copy()
    few.write_h5ad(tmp_path / "few.h5ad")
    few = _with_extra_genes(tmp_path / "few.h5ad", k, tmp_path / "few_half.h5ad")
    assert predict("-i", few, "-r", "afrcl", "-mp", refdir, "-o", tmp_path / "fail") == errors.GeneOverlapError.exit_code
    assert "50.0%" in capsys.readouterr().err
    assert not (tmp_path / "fail").exists()


@pytest.mark.realdata
def test_missing_verified_file_without_input(refdir, tmp_path, capsys):
    assert predict("-r", "afrcl", "-mp", refdir, "-o", tmp_path / "empty") == errors.MissingPathError.exit_code
    assert "gsrcl verify" in capsys.readouterr().err


@pytest.mark.realdata
def test_a_neighbourhood_of_one_cell_is_a_usage_error_and_writes_nothing(refdir, query, tmp_path, capsys):
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exc:
        predict("-i", query, "-r", "afrcl", "-mp", refdir, "-o", out, "--neighbours", 1)
    assert exc.value.code == 2 and "must be 0 (off) or at least 2" in capsys.readouterr().err
    assert not out.exists()
    assert predict("-i", query, "-r", "afrcl", "-mp", refdir, "-o", out, "--neighbours", 0, "--no-plot") == 0
    a = ad.read_h5ad(out / "annotated.h5ad")
    np.testing.assert_allclose(a.obs["unseen_score"], a.obs["novelty_score"] / a.obs["conf_score"], rtol=1e-5)
    assert "unseen_score_cell" not in a.obs and not a.uns["gsrcl"]["neighbours"]["applied"]
