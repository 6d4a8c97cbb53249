"""gsrcl.train, the reference it returns on disk, and ``gsrcl train`` end to end (tiny networks, real cells)."""

from __future__ import annotations

import hashlib
import json
import logging

import numpy as np
import pandas as pd
import pytest

from gsrcl.cli import main
from gsrcl.errors import GsrclError, InvalidReferenceError, LabelsError, OutputError
from gsrcl.reference import Reference, manifest_checksum
from gsrcl.training import train
from tests.conftest import TINY_SETTINGS, TINY_TOP_GENES

TINY = dict(epochs=3, hidden=[32, 32], out=16, head=[16, 8], svm_cv=2, threads=1, quiet=True)


def model_input(adata):
    X = adata.X.copy().astype(np.float32)
    X.data = np.log1p(X.data)
    return X


@pytest.fixture(scope="module")
def saved(small_adata, tmp_path_factory):
    adata = small_adata()
    ref = train(adata, "cell_type", "afrcl", name="mouse", **TINY)
    path = ref.save(tmp_path_factory.mktemp("refs"), "mouse")
    return adata, ref, path


@pytest.mark.realdata
def test_train_save_load_same_probabilities(saved):
    adata, ref, path = saved
    X = model_input(adata)
    loaded = Reference.load(path)
    assert np.array_equal(loaded.model.predict_proba(X), ref.model.predict_proba(X))
    m = loaded.manifest
    assert m["method"] == "afrcl" and m["name"] == "mouse" and loaded.genes == list(adata.var_names)
    assert m["values"]["expected"] == "counts" and m["values"]["transform"] == "log1p"
    t = m["training"]
    assert t["cells"] == adata.n_obs == t["cells_train"] + t["cells_validation"]
    assert t["cells_per_type"] == adata.obs["cell_type"].value_counts().sort_index().to_dict()
    assert t["seed"] == 1111 and t["dropped_classes"] == {} and len(t["history"]["loss"]) == 3
    # a stratified 20% of each type for validation
    for k, n in t["cells_per_type"].items():
        assert t["validation_cells_per_type"][k] == round(0.2 * n)
    assert m["hyperparameters"]["hidden"] == [32, 32] and m["validation"]["cells"] == t["cells_validation"]
    # the pipeline settings beside the estimator's; runtime settings are not hyperparameters
    assert m["hyperparameters"]["ensemble"] == 5 and m["hyperparameters"]["pool"] == "mean"
    assert not set(m["hyperparameters"]) & {"threads", "block", "library_size", "quiet", "device"}
    assert m["values"]["library_size"] == 10_000 and loaded.model_input.library_size == 10_000
    assert t["torch_threads"] >= 1 and "input" not in t


@pytest.mark.realdata
def test_train_records_the_provenance_and_checks_settings_first(small_adata):
    adata = small_adata()
    ref = train(adata, adata.obs["cell_type"], "afrcl", ensemble=1, top_genes=50,
                genes_from=list(adata.var_names[:200]),
                provenance={"input": "/data/x.h5ad", "labels": "/data/labels.csv", "genes_from": "/data/q.h5ad"},
                **TINY)
    t = ref.manifest["training"]
    assert t["input"] == "/data/x.h5ad" and t["labels"] == "/data/labels.csv"
    assert t["gene_selection"]["after"]["query"] == "/data/q.h5ad"
    from gsrcl.training import check_settings

    for bad, match in ((dict(hiden=(3,)), "unknown parameter"), (dict(ensemble=0), "ensemble must be"),
                       (dict(validation_size=1), "below 1"), (dict(library_size=-1), "library_size")):
        with pytest.raises(GsrclError, match=match):
            check_settings("afrcl", **bad)
        with pytest.raises(GsrclError, match=match):
            train(adata, "cell_type", "afrcl", **{**TINY, **bad})
    with pytest.raises(GsrclError, match="unknown preset"):
        check_settings("gsrcl", "fast")


def _one_line(exc_info):
    msg = exc_info.value.message
    assert "\n" not in msg and len(msg) < 400
    return msg


def _copy(path, tmp_path):
    import shutil

    dst = tmp_path / "copy"
    shutil.copytree(path, dst)
    return dst


@pytest.mark.realdata
def test_tampered_references_fail_clearly(saved, tmp_path):
    _, _, path = saved
    # an extra pickle
    ref = _copy(path, tmp_path / "a")
    (ref / "model.pkl").write_bytes(b"\x80\x04K\x01.")
    with pytest.raises(InvalidReferenceError) as e:
        Reference.load(ref)
    assert "model.pkl" in _one_line(e)

    # wrong array shapes, with a checksum that matches, so that the shape check is what fails; in the second of
    # the default preset's five models, so that every member is checked
    key = "member1.encoder.linear1.weight"
    ref = _copy(path, tmp_path / "b")
    with np.load(ref / "arrays.npz") as npz:
        arrays = {k: npz[k] for k in npz.files}
    arrays[key] = arrays[key][:, :-1].copy()
    np.savez(ref / "arrays.npz", **arrays)
    manifest = json.loads((ref / "manifest.json").read_text())
    manifest["files"]["arrays.npz"]["sha256"] = hashlib.sha256((ref / "arrays.npz").read_bytes()).hexdigest()
    manifest["manifest_sha256"] = manifest_checksum(manifest)  # the manifest made to agree, its checksum too
    (ref / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(InvalidReferenceError) as e:
        Reference.load(ref)
    assert key in _one_line(e)
    # ... and where the manifest is made to agree, rebuilding the model catches the inconsistency
    manifest["arrays"][key]["shape"] = list(arrays[key].shape)
    manifest["manifest_sha256"] = manifest_checksum(manifest)  # the manifest made to agree, its checksum too
    (ref / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(InvalidReferenceError) as e:
        Reference.load(ref)
    assert "rebuilt" in _one_line(e)

    # a missing file
    ref = _copy(path, tmp_path / "c")
    (ref / "arrays.npz").unlink()
    with pytest.raises(InvalidReferenceError) as e:
        Reference.load(ref)
    assert "arrays.npz" in _one_line(e)

    # a newer format
    ref = _copy(path, tmp_path / "d")
    manifest = json.loads((ref / "manifest.json").read_text())
    manifest["format_version"] += 1
    (ref / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(InvalidReferenceError) as e:
        Reference.load(ref)
    assert "newer" in _one_line(e)


@pytest.mark.realdata
def test_already_logged_values_are_not_logged_twice(saved):
    adata, ref, _ = saved
    logged = adata.copy()
    logged.X = model_input(adata)
    ref2 = train(logged, "cell_type", "afrcl", **TINY)
    assert ref2.values["expected"] == "log1p" and ref2.values["transform"] == "none"
    X = model_input(adata)
    # the same model input, so the same seed gives the same model
    assert np.array_equal(ref2.model.predict_proba(X), ref.model.predict_proba(X))


@pytest.mark.realdata
def test_rare_classes(small_adata, caplog):
    adata = small_adata()
    y = adata.obs["cell_type"].astype(str).to_numpy().copy()
    y[:3] = "Rare"  # 3 cells: dropped, with a warning naming it
    y[3:10] = "Few"  # 7 cells: training only
    with caplog.at_level(logging.WARNING, logger="gsrcl"):
        ref = train(adata, y, "afrcl", **TINY)
    assert any("Rare (3)" in r.getMessage() for r in caplog.records)
    t = ref.manifest["training"]
    assert t["dropped_classes"] == {"Rare": 3} and "Rare" not in ref.cell_types
    assert t["cells"] == adata.n_obs - 3 and t["cells_per_type"]["Few"] == 7
    assert "Few" in ref.cell_types and "Few" not in t["validation_cells_per_type"]

    two = np.where(np.arange(adata.n_obs) < 4, "a", "b")
    with pytest.raises(LabelsError, match="at least two"):
        train(adata, two, "afrcl", **TINY)


@pytest.mark.realdata
def test_bad_labels(small_adata):
    adata = small_adata()
    y = adata.obs["cell_type"].astype(object).to_numpy().copy()
    y[5] = np.nan
    with pytest.raises(LabelsError) as e:
        train(adata, y, "afrcl", **TINY)
    assert "no label" in _one_line(e)
    y[5] = "  "
    with pytest.raises(LabelsError):
        train(adata, y, "afrcl", **TINY)
    with pytest.raises(LabelsError, match="celltype"):
        train(adata, "celltype", "afrcl", **TINY)
    with pytest.raises(LabelsError, match="labels were given"):
        train(adata, y[:-1], "afrcl", **TINY)


@pytest.mark.realdata
def test_labels_series_by_cell_id_and_top_genes(small_adata):
    adata = small_adata()
    series = adata.obs["cell_type"].astype(str).sample(frac=1.0, random_state=0)  # shuffled order, same ids
    ref = train(adata, series, "afrcl", top_genes=300, **TINY)
    X = model_input(adata)
    Xlog = X.toarray()
    var = Xlog.var(axis=0)
    top = set(np.argsort(-var)[:300])
    assert ref.genes == [g for i, g in enumerate(adata.var_names) if i in top]
    assert ref.manifest["training"]["gene_selection"]["n"] == 300
    assert ref.manifest["training"]["cells_per_type"] == adata.obs["cell_type"].value_counts().sort_index().to_dict()


@pytest.mark.realdata
def test_default_preset_trains_on_log1p_cp10k_of_the_selected_genes(small_adata, monkeypatch):
    from gsrcl.methods.afrcl import AFRCL

    seen = {}
    fit = AFRCL.fit

    def spy(self, X, y, X_val=None, y_val=None):
        seen["X"] = X
        return fit(self, X, y, X_val, y_val)

    monkeypatch.setattr(AFRCL, "fit", spy)
    adata = small_adata()
    ref = train(adata, "cell_type", "afrcl", top_genes=300, **TINY)
    totals = np.expm1(seen["X"].toarray().astype(np.float64)).sum(axis=1)
    assert seen["X"].shape[1] == 300 and np.allclose(totals[totals > 0], 1e4, rtol=1e-3)
    assert ref.values["library_size"] == 10_000
    # the paper preset takes log1p of the counts, as the papers
    paper = train(adata, "cell_type", "afrcl", preset="paper", **TINY)
    assert paper.values["library_size"] is None
    counts = np.expm1(seen["X"].tocsr().data.astype(np.float64))  # the member's cells: rows of the model input
    assert np.allclose(counts, np.rint(counts), atol=1e-3) and counts.max() > 1e2  # log1p of the counts


# --- the command line ------------------------------------------------------------------------------------
CONFIG = json.dumps({k: v for k, v in TINY.items() if k not in ("quiet", "epochs")})


@pytest.fixture(scope="module")
def h5ad(small_adata, tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "ref.h5ad"
    small_adata().write_h5ad(path)
    return path


@pytest.mark.realdata
def test_cli_train_end_to_end_and_refuses_existing_name(h5ad, tmp_path, capsys, monkeypatch):
    refdir = tmp_path / "refs"
    code = main(["train", "-i", str(h5ad), "--labels", "cell_type", "-r", "mouse", "-mp", str(refdir),
                 "--method", "gsrcl", "--epochs", "2", "--config", CONFIG])
    assert code == 0
    out = capsys.readouterr().out
    assert str(refdir / "mouse") in out and "validation MCC" in out
    ref = Reference.load(refdir / "mouse")
    assert ref.method == "gsrcl" and len(ref.cell_types) == 5
    assert ref.manifest["training"]["labels"] == "obs['cell_type']"
    assert ref.manifest["training"]["input"] == str(h5ad.resolve())

    before = {p.name: p.read_bytes() for p in (refdir / "mouse").iterdir()}

    def no_training(*a, **k):
        raise AssertionError("trained although the reference exists")

    monkeypatch.setattr("gsrcl.training.train", no_training)
    code = main(["train", "-i", str(h5ad), "--labels", "cell_type", "-r", "mouse", "-mp", str(refdir),
                 "--config", CONFIG])
    assert code == OutputError.exit_code
    assert "--overwrite" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in (refdir / "mouse").iterdir()} == before


@pytest.mark.realdata
def test_cli_labels_csv(h5ad, tmp_path, capsys):
    import anndata as ad

    adata = ad.read_h5ad(h5ad)
    labels = pd.DataFrame({"cell": adata.obs_names, "label": adata.obs["cell_type"].astype(str)})
    labels = labels.sample(frac=1.0, random_state=1)
    csv = tmp_path / "labels.csv"
    labels.to_csv(csv, index=False)
    refdir = tmp_path / "refs"
    args = ["train", "-i", str(h5ad), "--labels", str(csv), "-r", "r1", "-mp", str(refdir), "--epochs", "1",
            "--config", CONFIG, "--quiet"]
    assert main(args) == 0
    ref = Reference.load(refdir / "r1")
    assert ref.manifest["training"]["labels"] == str(csv.resolve())
    assert ref.manifest["training"]["cells_per_type"] == adata.obs["cell_type"].value_counts().sort_index().to_dict()

    labels.iloc[:-2].to_csv(csv, index=False)  # two cells without a label
    assert main(args[:5] + ["-r", "r2"] + args[7:]) == LabelsError.exit_code
    err = capsys.readouterr().err
    assert "2 of 300 cells" in err and "Traceback" not in err
    assert not (refdir / "r2").exists()


@pytest.mark.realdata
def test_cli_cuda_without_cuda(h5ad, tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    code = main(["train", "-i", str(h5ad), "--labels", "cell_type", "-r", "x", "-mp", str(tmp_path),
                 "--device", "cuda"])
    assert code != 0 and "no CUDA device" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


@pytest.mark.realdata
def test_genes_from_a_query_keeps_the_shared_genes_in_reference_order(small_adata):
    adata = small_adata()
    genes = list(adata.var_names)
    query_genes = genes[::3][::-1] + ["NOT_A_GENE"]  # a third of the genes, reversed, plus one the reference lacks
    ref = train(adata, "cell_type", "afrcl", genes_from=query_genes, **TINY)
    assert ref.genes == genes[::3]
    sel = ref.manifest["training"]["gene_selection"]
    assert (sel["method"], sel["n"], sel["of"], sel["query_genes"]) == ("shared with the query", len(genes[::3]),
                                                                       len(genes), len(query_genes))
    both = train(adata, "cell_type", "afrcl", genes_from=pd.DataFrame(index=query_genes), top_genes=50, **TINY)
    assert len(both.genes) == 50 and set(both.genes) <= set(genes[::3])
    assert both.manifest["training"]["gene_selection"]["after"]["method"] == "shared with the query"


@pytest.mark.realdata
def test_genes_from_sharing_no_gene_is_refused(small_adata):
    from gsrcl.errors import GeneOverlapError

    with pytest.raises(GeneOverlapError, match="shares none"):
        train(small_adata(), "cell_type", "afrcl", genes_from=["X1", "X2"], **TINY)


@pytest.mark.realdata
def test_cli_genes_from_file_and_query(h5ad, tmp_path, capsys):
    import anndata as ad

    from gsrcl.errors import MissingPathError

    adata = ad.read_h5ad(h5ad)
    names = list(adata.var_names[:200])
    listing = tmp_path / "genes.txt"
    listing.write_text("\n".join(names) + "\n\n")
    query = tmp_path / "query.h5ad"
    adata[:20, names[:100]].copy().write_h5ad(query)
    refdir = tmp_path / "refs"
    base = ["train", "-i", str(h5ad), "--labels", "cell_type", "-mp", str(refdir), "--epochs", "1",
            "--config", CONFIG]
    assert main(base + ["-r", "from_list", "--genes-from", str(listing)]) == 0
    assert "genes shared with the query: 200 of" in capsys.readouterr().out
    assert Reference.load(refdir / "from_list").genes == names
    assert main(base + ["-r", "from_query", "--genes-from", str(query), "--quiet"]) == 0
    ref = Reference.load(refdir / "from_query")
    assert ref.genes == names[:100]
    assert ref.manifest["training"]["gene_selection"]["query"] == str(query)
    assert main(base + ["-r", "missing", "--genes-from", str(tmp_path / "nope.h5ad")]) == MissingPathError.exit_code
    assert "--genes-from" in capsys.readouterr().err
    assert not (refdir / "missing").exists()


@pytest.mark.realdata
def test_saved_reference_folder_follows_the_umask(saved, tmp_path):
    import os
    import stat

    _, ref, _ = saved
    old = os.umask(0o022)
    try:
        path = ref.save(tmp_path / "refs", "shared")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o755  # readable by the group and others, as a plain mkdir
    assert stat.S_IMODE((path / "manifest.json").stat().st_mode) == 0o644


@pytest.mark.realdata
def test_cli_ensemble_flag_sets_the_number_of_models(h5ad, tmp_path, capsys):
    refdir = tmp_path / "refs"
    code = main(["train", "-i", str(h5ad), "--labels", "cell_type", "-r", "two", "-mp", str(refdir),
                 "--epochs", "2", "--ensemble", "2", "--config", CONFIG])
    assert code == 0
    assert "models: 2 (seeds 1111, " in capsys.readouterr().out
    ref = Reference.load(refdir / "two")
    assert len(ref.model.members) == 2 and ref.manifest["hyperparameters"]["ensemble"] == 2
    with pytest.raises(SystemExit) as e:  # argparse's usage error
        main(["train", "-i", str(h5ad), "--labels", "cell_type", "-r", "none", "-mp", str(refdir),
              "--ensemble", "0", "--config", CONFIG])
    assert e.value.code == 2 and "--ensemble" in capsys.readouterr().err and not (refdir / "none").exists()


def test_members_fit_on_rows_of_one_matrix_not_copies(pbmc68k, monkeypatch):
    from gsrcl.methods.afrcl import AFRCL
    from gsrcl.methods.encoding import Rows

    seen = []
    fit = AFRCL.fit

    def spy(self, X, y, X_val=None, y_val=None):
        seen.append((X, X_val))
        return fit(self, X, y, X_val, y_val)

    monkeypatch.setattr(AFRCL, "fit", spy)
    settings = {**TINY_SETTINGS, "ensemble": 2}
    train(pbmc68k[0], "bulk_labels", "afrcl", top_genes=TINY_TOP_GENES, quiet=True, **settings)
    assert len(seen) == 2
    bases = {id(M.base) for pair in seen for M in pair if isinstance(M, Rows)}
    assert all(isinstance(M, Rows) for pair in seen for M in pair) and len(bases) == 1
    for X, X_val in seen:  # each member's own split of all the cells
        assert sorted(np.r_[X.rows, X_val.rows]) == list(range(X.base.shape[0]))
