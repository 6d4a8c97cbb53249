"""``gsrcl demo`` with tiny settings: the split, the outputs of both methods and the scores it prints."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest

pytest.importorskip("scanpy")

from gsrcl.demo import LABELS_KEY, MARKER, format_table, load_pbmc68k, run_demo, scores, split  # noqa: E402
from gsrcl.errors import OutputError  # noqa: E402

TINY = dict(epochs=2, hidden=(64, 64, 64), out=32, head=(32, 16), val_every=1, min_epochs=0, svm_cv=2)


def test_split_is_stratified_seeded_and_uses_the_log_normalised_raw_values():
    adata = load_pbmc68k()
    assert adata.shape == (700, 765) and adata.X.min() >= 0  # .raw, not the scaled .X
    ref, query = split(adata)
    assert ref.n_obs + query.n_obs == 700 and not set(ref.obs_names) & set(query.obs_names)
    share = query.obs[LABELS_KEY].value_counts() / adata.obs[LABELS_KEY].value_counts()
    assert share.between(0.2, 0.4).all()  # every label ~30% in the query
    again = split(adata)[1]
    assert list(again.obs_names) == list(query.obs_names)


def test_scores_count_unassigned_as_wrong():
    s = scores(["a", "a", "b", "b"], ["a", "Unassigned", "b", "a"])
    assert s["accuracy"] == 0.5 and s["unassigned_pct"] == 25.0
    assert 0 < s["macro_f1"] < 1


def test_demo_runs_both_methods_and_reports_scores_of_its_outputs(tmp_path):
    out = tmp_path / "demo"
    rows = run_demo(out, settings={"afrcl": TINY, "gsrcl": TINY}, quiet=True)
    query = ad.read_h5ad(out / "query.h5ad")
    assert [r["method"] for r in rows] == ["afrcl", "gsrcl"]
    for row in rows:
        folder = out / row["method"]
        assert sorted(p.name for p in folder.iterdir()) == sorted(
            ["probabilities.csv", "tsne.svg", "legend.txt", "annotated.h5ad"])
        assert (out / "references" / f"pbmc68k_{row['method']}" / "manifest.json").is_file()
        csv = pd.read_csv(folder / "probabilities.csv", index_col=0)
        assert list(csv.index) == list(query.obs_names)
        truth = query.obs[LABELS_KEY].astype(str).to_numpy()
        predicted = csv["Identified as"].to_numpy(dtype=str)
        assert row["accuracy"] == pytest.approx(np.mean(truth == predicted))
        assert row["unassigned_pct"] == pytest.approx(100 * np.mean(predicted == "Unassigned"))
        assert row["seconds_train"] > 0 and row["seconds_predict"] > 0
    table = format_table(rows).splitlines()
    assert "accuracy" in table[0] and "macro-F1" in table[0] and len(table) == 4
    # a second run replaces the demo's own outputs and leaves anything else in the folder alone
    (out / "my_run").mkdir()
    (out / "my_run" / "notes.txt").write_text("mine")
    before = (out / "afrcl" / "probabilities.csv").stat().st_mtime_ns
    again = run_demo(out, settings={"afrcl": TINY}, methods=("afrcl",), quiet=True)
    assert again[0]["accuracy"] == rows[0]["accuracy"]  # deterministic for the fixed seed
    assert (out / "afrcl" / "probabilities.csv").stat().st_mtime_ns > before
    assert (out / "my_run" / "notes.txt").read_text() == "mine"


def test_demo_refuses_a_folder_it_did_not_write_unless_overwrite(tmp_path):
    out = tmp_path / "demo"
    out.mkdir()
    (out / "query.h5ad").write_text("not the demo's")
    with pytest.raises(OutputError, match="--overwrite"):
        run_demo(out, settings={"afrcl": TINY}, methods=("afrcl",), quiet=True)
    assert (out / "query.h5ad").read_text() == "not the demo's" and not (out / MARKER).exists()
