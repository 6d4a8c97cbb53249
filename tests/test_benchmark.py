"""The accuracy benchmark: metrics on hand-computed examples, label mapping, task config and filters, and one
--quick run of a small real task end to end."""

from __future__ import annotations

import json

import anndata as ad
import numpy as np
import pytest

from gsrcl import benchmark as B
from gsrcl.cli import main
from gsrcl.errors import GsrclError, MissingPathError
from tests.conftest import DATA, ROOT, dataset

CONFIG = ROOT / "benchmarks" / "tasks.json"
KNOWN = ["a", "b", "c"]
# a: 2 right, 1 Unassigned, 1 false positive from b; b: 1 right, 1 called a; c: right; d is an unseen type
Y_TRUE = ["a", "a", "a", "b", "b", "c", "d", "d"]
Y_PRED = ["a", "a", "Unassigned", "b", "a", "c", "a", "Unassigned"]


def test_macro_f1_and_accuracy_count_unassigned_as_wrong_and_leave_unseen_cells_out():
    # a: P 2/3, R 2/3; b: P 1, R 1/2; c: 1 -> (2/3 + 2/3 + 1) / 3; the unseen d called a is no false positive of a
    assert B.macro_f1(Y_TRUE, Y_PRED, KNOWN) == pytest.approx(7 / 9)
    assert B.accuracy(Y_TRUE, Y_PRED, KNOWN) == pytest.approx(4 / 6)
    # the same cells without the unseen ones give the same numbers
    assert B.macro_f1(Y_TRUE[:6], Y_PRED[:6], KNOWN) == pytest.approx(7 / 9)


def test_abdelaal_median_f1_drops_unassigned_cells_from_the_table():
    r = B.abdelaal_f1(Y_TRUE, Y_PRED, KNOWN)
    # without the Unassigned a: a P 2/3 R 1 -> 0.8; b P 1 R 1/2 -> 2/3; c 1
    assert r["per_class_f1"] == pytest.approx({"a": 0.8, "b": 2 / 3, "c": 1.0})
    assert r["median_f1"] == pytest.approx(0.8)
    assert r["pct_unassigned"] == pytest.approx(100 / 6)
    assert r["accuracy_assigned"] == pytest.approx(4 / 5)
    # a type whose cells are all Unassigned has F1 0 (not left out)
    assert B.abdelaal_f1(["a", "b"], ["a", "Unassigned"], ["a", "b"])["median_f1"] == pytest.approx(0.5)


def test_unseen_auroc_and_unassigned_share_on_a_hand_example():
    y_true = ["a", "a", "b", "d", "e"]
    conf = [0.9, 0.4, 0.8, 0.5, 0.3]  # known > unseen in 5 of the 6 pairs (0.4 < 0.5)
    assert B.unseen_auroc(y_true, conf, KNOWN) == pytest.approx(5 / 6)
    assert B.unseen_auroc(["a", "b"], [0.1, 0.2], KNOWN) is None
    assert B.unseen_unassigned(y_true, ["a", "a", "b", "Unassigned", "c"], KNOWN) == pytest.approx(0.5)
    r = B.evaluate(y_true, ["a", "a", "b", "Unassigned", "c"], KNOWN, conf, {"raw": np.array([1, 1, 1, 0, 0.0])})
    assert r["unseen_auroc"] == pytest.approx(5 / 6) and r["unseen_auroc_raw"] == pytest.approx(1.0)
    assert (r["n_known"], r["n_unseen"]) == (3, 2)
    c = B.confusion(y_true, ["a", "a", "b", "Unassigned", "c"], KNOWN)
    assert c["rows"] == ["a", "b", "d", "e"] and c["cols"] == ["a", "b", "c", "Unassigned"]
    assert c["counts"][2] == [0, 0, 0, 1] and c["counts"][3] == [0, 0, 1, 0]


def test_label_mapping_and_the_pbmc_table_covers_the_files():
    config = B.load_config(CONFIG)
    table = config.label_maps["pbmc"]
    mapped = B.map_labels(["Naive CD4 T", "Memory CD4 T", "B", "not in table"], table)
    assert list(mapped) == ["CD4 T cells", "CD4 T cells", "B cells", "not in table"]
    pbmc3k = ad.read_h5ad(dataset("pbmc3k_seurat_clustifyr.h5ad"), backed="r")
    kang = ad.read_h5ad(dataset("pbmc_kang_ctrl_muscat.h5ad"), backed="r")
    assert set(pbmc3k.obs["cell_type"].astype(str)) <= set(table)  # every pbmc3k name is harmonised
    kang_types = set(kang.obs["cell_type"].astype(str))
    shared = set(B.map_labels(pbmc3k.obs["cell_type"], table)) & kang_types
    assert shared == kang_types  # pbmc3k -> Kang covers every Kang type after mapping


@pytest.mark.filterwarnings("ignore:Observation names are not unique")
def test_task_config_filters_and_unseen_check(tmp_path):
    config = B.load_config(CONFIG)
    assert {"cellbench_celseq2_to_dropseq", "cellbench_5cl_plates", "xin_to_wang_shared", "xin_to_wang_all",
            "pbmc3k_to_kang", "kang_donors", "kang_to_pbmc3k", "mouse_immune_cv"} <= set(config.tasks)
    assert config.data_dir.resolve() == DATA.resolve()
    task = config.tasks["cellbench_5cl_plates"]
    dataset(task.reference.file)
    [(ref, query)] = B.task_splits(task, config.data_dir)
    raw = ad.read_h5ad(DATA / task.reference.file, backed="r").obs
    sng = raw["demuxlet_cls"] == "SNG"
    assert ref.n_obs == int((sng & raw["plate"].isin(["p1", "p2"])).sum())
    assert query.n_obs == int((sng & (raw["plate"] == "p3")).sum())
    assert set(ref.obs["plate"]) == {"p1", "p2"} and set(query.obs["plate"]) == {"p3"}
    assert set(ref.obs["demuxlet_cls"]) == {"SNG"}

    # the unseen list is checked against the data
    raw_cfg = json.loads(CONFIG.read_text())
    raw_cfg["data_dir"] = str(DATA)
    bad = next(t for t in raw_cfg["tasks"] if t["name"] == "xin_to_wang_all")
    bad["unseen"] = ["acinar"]
    path = tmp_path / "tasks.json"
    path.write_text(json.dumps(raw_cfg))
    with pytest.raises(GsrclError, match="unseen"):
        B.task_splits(B.load_config(path).tasks["xin_to_wang_all"], DATA)
    bad["kind"] = "loo"
    path.write_text(json.dumps(raw_cfg))
    with pytest.raises(GsrclError, match="kind"):
        B.load_config(path)
    with pytest.raises(MissingPathError):
        B.load_config(tmp_path / "absent.json")


def test_unknown_task_is_one_line_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(["benchmark", "--config", str(CONFIG), "--tasks", "no_such_task", "--out", str(out), "-q"])
    err = capsys.readouterr().err
    assert rc == GsrclError.exit_code and "unknown task(s) no_such_task" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()
    rc = main(["benchmark", "--config", str(CONFIG), "--data", str(tmp_path / "none"), "--tasks", "xin_to_wang_all",
               "--out", str(out), "-q"])
    err = capsys.readouterr().err
    assert rc == MissingPathError.exit_code and "does not exist" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_quick_run_writes_the_report_and_the_svm_is_well_above_chance(tmp_path):
    dataset("pancreas_xin_scclassify_subset.h5ad")
    dataset("pancreas_wang_scclassify_subset.h5ad")
    ours = B.ours_available() is None
    methods = ["svm", "svm_rejection", "celltypist"] + (["gsrcl", "afrcl"] if ours else [])
    rc = main(["benchmark", "--config", str(CONFIG), "--quick", "--tasks", "xin_to_wang_all", "--in-process",
               "--methods", ",".join(methods), "--out", str(tmp_path), "-q"])
    assert rc == 0
    results = json.loads((tmp_path / "accuracy.json").read_text())
    task = results["tasks"]["xin_to_wang_all"]
    assert set(task["methods"]) == set(methods)
    for m in methods:
        e = task["methods"][m]
        assert e["status"] == "ok", (m, e.get("note"))
        assert {"macro_f1", "accuracy", "median_f1", "pct_unassigned", "unseen_auroc",
                "unseen_unassigned"} <= set(e["metrics"])
        assert e["fit_seconds"][0] > 0 and e["memory_mib"]["fit_peak"] > 0
        assert sum(map(sum, e["confusion"]["counts"])) == task["n_query"]
        if m in B.BASELINES:  # their confidence over the query neighbourhoods our unseen_score reads, scored too
            assert 0.5 < e["metrics"]["unseen_auroc_conf_neighbourhood"] <= 1
    # 4 known types: chance macro-F1 is about 0.25
    assert task["methods"]["svm"]["metrics"]["macro_f1"] > 0.8
    # without rejection: the svm never rejects, svm_rejection's top types include the cells it left Unassigned
    svm, rej = task["methods"]["svm"]["metrics"], task["methods"]["svm_rejection"]["metrics"]
    assert svm["macro_f1_best"] == svm["macro_f1"]
    assert rej["pct_unassigned"] == 0 or rej["macro_f1_best"] != rej["macro_f1"]
    assert set(task["query_types"]) == {"alpha", "beta", "gamma", "delta", "acinar", "ductal", "stellate"}
    md = (tmp_path / "accuracy.md").read_text()
    assert results["command"] in md and "--quick" in results["command"]
    for m in methods:
        assert f"| {m} | " in md
    assert "## Macro-F1 without rejection" in md
    # the summary row ends with the target, and marks exactly those of ours below it
    target = B.target_f1(task)
    assert target == pytest.approx(max(task["methods"][m]["metrics"]["macro_f1"] for m in B.BASELINES)
                                   - B.TARGET_MARGIN)
    row = next(line for line in md.splitlines() if line.startswith("| xin_to_wang_all | ")).split(" | ")
    assert row[-1] == f"{B._fmt(target)} |"
    for m, cell in zip([m for m in B.METHOD_NAMES if m in methods], row[1:-1]):
        short = m in B.OURS and task["methods"][m]["metrics"]["macro_f1"] < target
        assert cell.endswith(" *") == short, (m, cell)
    assert (tmp_path / "accuracy.png").stat().st_size > 0
    assert (tmp_path / "confusion_xin_to_wang_all.png").exists() == ours
    if ours:
        assert "unseen_auroc_max_raw_score" in task["methods"]["gsrcl"]["metrics"]
        # which input each GsRCL type's SVM took is recorded and reported; AF-RCL has no such choice
        inputs = task["methods"]["gsrcl"]["svm_inputs"][0]
        # the default pools both SVMs for every type (gene_svm="pool")
        assert inputs == {t: "encoder+genes" for t in ["alpha", "beta", "delta", "gamma"]}
        assert "svm_inputs" not in task["methods"]["afrcl"]
        assert "gsrcl's every type pools an SVM on its encoder's output and one on the genes" in md
        assert "gsrcl's SVM on the genes (`gene_svm`) for:" not in md
        chosen = {"alpha": "genes", "beta": "encoder", "delta": "genes", "gamma": "encoder"}  # as gene_svm=True
        task["methods"]["gsrcl"]["svm_inputs"] = [chosen]
        assert "gsrcl's SVM on the genes (`gene_svm`) for: alpha, delta (the others" in B.markdown(results)
        for m in ("gsrcl", "afrcl"):  # novelty / conf ranks the unseen cells first better than conf alone
            got = task["methods"][m]["metrics"]  # (measured 0.991 / 0.999 against 0.919 / 0.993 here)
            assert got["unseen_auroc_unseen_score"] > max(0.95, got["unseen_auroc"])
            assert got["unseen_auroc_unseen_score_cell"] > 0.9


def test_a_method_in_its_own_process_gives_the_same_predictions(tmp_path):
    dataset("pancreas_xin_scclassify_subset.h5ad")
    config = B.load_config(CONFIG)
    task = config.tasks["xin_to_wang_shared"]
    alone = B._run_isolated(task, str(config.data_dir), "svm", 1111, True)
    here = B.run_job(task, str(config.data_dir), "svm", 1111, True)
    assert alone["splits"][0]["y_pred"] == here["splits"][0]["y_pred"]
    assert alone["splits"][0]["fit"]["peak_mib"] > 0 and alone["splits"][0]["fit"]["delta_mib"] >= 0


def test_shared_genes_setting_trains_on_the_reference_genes_the_query_has(tmp_path):
    config = B.load_config(CONFIG)
    task = config.tasks["xin_to_wang_shared"]
    dataset(task.reference.file)
    assert task.genes == "shared"  # the config's default for every task
    [(ref, query)] = B.task_splits(task, config.data_dir)
    full = ad.read_h5ad(DATA / task.reference.file, backed="r").var_names
    kept = [g for g in full if g in set(query.var_names)]
    assert list(ref.var_names) == kept and 0 < len(kept) < len(full)

    raw_cfg = json.loads(CONFIG.read_text())
    raw_cfg["data_dir"] = str(DATA)
    next(t for t in raw_cfg["tasks"] if t["name"] == "xin_to_wang_shared")["genes"] = "reference"
    path = tmp_path / "tasks.json"
    path.write_text(json.dumps(raw_cfg))
    [(ref_all, _)] = B.task_splits(B.load_config(path).tasks["xin_to_wang_shared"], DATA)
    assert list(ref_all.var_names) == list(full)
    raw_cfg["genes"] = "union"
    path.write_text(json.dumps(raw_cfg))
    with pytest.raises(GsrclError, match="genes must be one of"):
        B.load_config(path)


def test_recorded_command_names_the_thread_variables(monkeypatch):
    import argparse

    from gsrcl.cli.benchmark import command_line

    args = argparse.Namespace(config=None, data=None, tasks="kang_donors", methods="afrcl", out=None, quick=False,
                              merge=True, in_process=False, seed=1111)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    assert command_line(args) == "gsrcl benchmark --tasks kang_donors --methods afrcl --merge"
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert command_line(args) == "OMP_NUM_THREADS=1 gsrcl benchmark --tasks kang_donors --methods afrcl --merge"


def test_seed_spread_report_takes_the_target_from_the_baselines_only():
    import importlib.util

    spec = importlib.util.spec_from_file_location("seeds", CONFIG.parent / "seeds.py")
    seeds = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(seeds)
    entry = lambda m, s, f1: {"task": "t", "method": m, "seed": s, "metrics": {"macro_f1": f1, "macro_f1_best": f1}}
    results = {"entries": {f"{m}{s}": entry(m, s, f1) for m, s, f1 in [
        ("afrcl", 1, 0.90), ("afrcl", 2, 0.96), ("afrcl_old", 1, 0.99), ("svm", 1, 0.95), ("celltypist", 1, 0.94)]}}
    got = seeds.summary(results)["t"]
    assert got["afrcl"]["seeds"] == [1, 2] and got["afrcl"]["macro_f1"] == [0.90, 0.96]
    md = seeds.markdown(results)
    # needed = the best baseline's mean (0.95) - 0.005; a variant of ours (afrcl_old) is not a baseline
    assert "| afrcl | 1, 2 | 0.9300 ± 0.0424 (min 0.9000) |" in md and "no (needed 0.9450)" in md
    assert "| afrcl_old | 1 | 0.9900" in md and "yes (needed 0.9450)" in md


def test_trial_settings_reach_training_and_name_the_row(monkeypatch):
    import importlib.util

    import gsrcl.training

    spec = importlib.util.spec_from_file_location("seeds", CONFIG.parent / "seeds.py")
    seeds = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(seeds)
    settings = seeds.parse_settings(["scale_genes=true", "min_steps=370", "pool=geometric"])
    assert settings == {"scale_genes": True, "min_steps": 370, "pool": "geometric"}
    assert seeds.label("gsrcl", {"scale_genes": True}) == "gsrcl[scale_genes=true]"
    assert seeds.label("gsrcl", {}) == "gsrcl"
    with pytest.raises(ValueError, match="KEY=VALUE"):
        seeds.parse_settings(["scale_genes"])
    assert seeds.main(["--tasks", "kang_donors", "--methods", "svm", "--set", "min_steps=1"]) == 2

    seen = {}
    monkeypatch.setattr(gsrcl.training, "train", lambda adata, **kw: seen.update(kw))
    est = B.make_method("gsrcl", seed=7, quick=True, overrides={"scale_genes": True, "epochs": 2})
    est.fit(ad.AnnData(np.ones((2, 2), dtype=np.float32)), np.array(["a", "b"]))
    # the trial's settings win over --quick's, and epochs goes to its own argument
    assert seen["scale_genes"] is True and seen["epochs"] == 2 and seen["hidden"] == (64,) and seen["seed"] == 7
    assert "scale_genes=True" in est.implementation
    with pytest.raises(GsrclError, match="not the baseline"):
        B.make_method("svm", overrides={"C": 2})


def test_report_marks_our_entries_below_the_best_baseline_less_the_margin(tmp_path):
    ok = lambda f1: {"status": "ok", "metrics": {"macro_f1": f1}}
    task = {"methods": {"afrcl": ok(0.940), "gsrcl": ok(0.946), "svm": ok(0.951), "celltypist": ok(0.90),
                        "svm_rejection": {"status": "failed", "metrics": {}}}}
    # the target comes from the baselines that ran, never from ours
    assert B.target_f1(task) == pytest.approx(0.951 - B.TARGET_MARGIN)
    assert B.target_f1({"methods": {"afrcl": ok(0.99)}}) is None
    B._figure_bars({"tasks": {"t": task}}, tmp_path / "bars.png")
    assert (tmp_path / "bars.png").stat().st_size > 0


def test_report_gives_unseen_aurocs_to_four_decimals():
    # AUROCs near 1 differ in the fourth decimal (0.9995 against 0.9992 reads 1.000 against 0.999 otherwise)
    def entry(**aurocs):
        return {"status": "ok", "n_ref": [10], "n_query": [8], "reference_types": ["a", "b"], "fit_seconds": [1.0],
                "predict_seconds": [0.1], "metrics": {"macro_f1": 1.0, "accuracy": 1.0, "median_f1": 1.0,
                                                      "pct_unassigned": 0.0, "unseen_unassigned": 0.25, **aurocs}}
    task = {"task": {"kind": "cross", "unseen": ["c"]},
            "methods": {"gsrcl": entry(unseen_auroc=0.99533, unseen_auroc_unseen_score=0.99954),
                        "svm_rejection": entry(unseen_auroc=0.99919)}}
    text = B.markdown({"tasks": {"t": task}})
    summary = text.split("## Unseen-type AUROC")[1].split("## Per task")[0]
    assert "| t | 0.9953 (unseen_score 0.9995) | 0.9992 |" in summary
    assert "0.9953 (unseen_score 0.9995) | 25.0%" in text.split("## Per task")[1]


def test_baselines_confidence_is_averaged_over_the_query_neighbourhoods_of_our_unseen_score():
    dataset("pancreas_xin_scclassify_subset.h5ad")
    dataset("pancreas_wang_scclassify_subset.h5ad")
    config = B.load_config(CONFIG)
    task = config.tasks["xin_to_wang_all"]
    split = B.run_job(task, str(config.data_dir), "svm")["splits"][0]
    ref, query = B.task_splits(task, config.data_dir)[0]
    graph = B.query_neighbourhoods(query, list(ref.var_names))
    conf = np.asarray(split["confidence"])
    got = np.asarray(split["scores"]["conf_neighbourhood"])
    assert np.allclose(got, graph.smooth(conf)) and not np.allclose(got, conf)
    # tasks without unseen types get no such score
    same = B.run_job(config.tasks["xin_to_wang_shared"], str(config.data_dir), "svm")["splits"][0]
    assert "conf_neighbourhood" not in same["scores"]
