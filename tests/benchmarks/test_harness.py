"""The accuracy harness (``benchmarks/harness``) and its scripts: metrics on hand-computed examples, the task
config, the report, the command line on synthetic data anywhere, and the real tasks where ../shared/data is."""

from __future__ import annotations

import argparse
import importlib.util
import json

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from gsrcl.errors import GsrclError, MissingPathError
from harness import metrics as M
from harness import report, runner
from harness.methods import BASELINES, METHOD_NAMES, OURS, make_method
from harness.ours import ours_available
from harness.tasks import DEFAULT_CONFIG, LABEL, load_config, map_labels, task_splits

KNOWN = ["a", "b", "c"]
# a: 2 right, 1 Unassigned, 1 false positive from b; b: 1 right, 1 called a; c: right; d is an unseen type
Y_TRUE = ["a", "a", "a", "b", "b", "c", "d", "d"]
Y_PRED = ["a", "a", "Unassigned", "b", "a", "c", "a", "Unassigned"]


# ------------------------------------------------------------------------------------------------ synthetic
def _cells(types: dict[str, int], genes: list[str], rng, batch: str) -> ad.AnnData:
    """Counts of cells of ``types`` (name -> cells): each type has 8 marker genes of its own."""
    labels = np.repeat(list(types), list(types.values()))
    means = np.full((len(labels), len(genes)), 1.0)
    for i, t in enumerate(labels):
        k = "abcdefg".index(t)
        means[i, 8 * k: 8 * k + 8] = 12.0
    obs = pd.DataFrame({"cell_type": labels, "batch": batch}, index=[f"{batch}_{i}" for i in range(len(labels))])
    return ad.AnnData(rng.poisson(means).astype(np.float32), obs=obs, var=pd.DataFrame(index=genes))


@pytest.fixture
def synthetic(tmp_path):
    """A config of two tasks on synthetic counts: ``cross`` (query on fewer genes, in another order, with an unseen
    type ``d``; the reference file's second batch filtered out) and ``cv``."""
    rng = np.random.default_rng(0)
    genes = [f"g{i}" for i in range(40)]
    ref = ad.concat([_cells({"a": 40, "b": 40, "c": 40}, genes, rng, "r1"),
                     _cells({"a": 10, "b": 10, "c": 10}, genes, rng, "r2")])
    query = _cells({"a": 30, "b": 30, "c": 30, "d": 30}, genes, rng, "q")[:, genes[::-1][:36]].copy()
    ref.write_h5ad(tmp_path / "ref.h5ad")
    query.write_h5ad(tmp_path / "query.h5ad")
    cfg = {"data_dir": ".", "genes": "shared", "tasks": [
        {"name": "toy_cross", "kind": "cross", "reference": {"file": "ref.h5ad", "filter": {"batch": ["r1"]}},
         "query": {"file": "query.h5ad"}, "unseen": ["d"], "description": "synthetic"},
        {"name": "toy_cv", "kind": "cv", "folds": 3, "reference": {"file": "ref.h5ad"}},
    ]}
    path = tmp_path / "tasks.json"
    path.write_text(json.dumps(cfg))
    return path


def test_the_package_no_longer_ships_the_harness():
    from gsrcl.cli import COMMANDS, build_parser

    assert importlib.util.find_spec("gsrcl.benchmark") is None
    assert "benchmark" not in COMMANDS
    with pytest.raises(SystemExit):
        build_parser().parse_args(["benchmark", "--list"])


def test_default_config_is_found_beside_the_harness(config):
    assert DEFAULT_CONFIG.parent.name == "benchmarks" and DEFAULT_CONFIG.name == "tasks.json"
    assert config.path == DEFAULT_CONFIG
    assert {"cellbench_celseq2_to_dropseq", "cellbench_5cl_plates", "xin_to_wang_shared", "xin_to_wang_all",
            "pbmc3k_to_kang", "kang_donors", "kang_to_pbmc3k", "mouse_immune_cv"} <= set(config.tasks)
    assert all(t.genes == "shared" for t in config.tasks.values() if t.kind == "cross")


# ------------------------------------------------------------------------------------------------ metrics
def test_macro_f1_and_accuracy_count_unassigned_as_wrong_and_leave_unseen_cells_out():
    # a: P 2/3, R 2/3; b: P 1, R 1/2; c: 1 -> (2/3 + 2/3 + 1) / 3; the unseen d called a is no false positive of a
    assert M.macro_f1(Y_TRUE, Y_PRED, KNOWN) == pytest.approx(7 / 9)
    assert M.accuracy(Y_TRUE, Y_PRED, KNOWN) == pytest.approx(4 / 6)
    # the same cells without the unseen ones give the same numbers
    assert M.macro_f1(Y_TRUE[:6], Y_PRED[:6], KNOWN) == pytest.approx(7 / 9)


def test_abdelaal_median_f1_drops_unassigned_cells_from_the_table():
    r = M.abdelaal_f1(Y_TRUE, Y_PRED, KNOWN)
    # without the Unassigned a: a P 2/3 R 1 -> 0.8; b P 1 R 1/2 -> 2/3; c 1
    assert r["per_class_f1"] == pytest.approx({"a": 0.8, "b": 2 / 3, "c": 1.0})
    assert r["median_f1"] == pytest.approx(0.8)
    assert r["pct_unassigned"] == pytest.approx(100 / 6)
    assert r["accuracy_assigned"] == pytest.approx(4 / 5)
    # a type whose cells are all Unassigned has F1 0 (not left out)
    assert M.abdelaal_f1(["a", "b"], ["a", "Unassigned"], ["a", "b"])["median_f1"] == pytest.approx(0.5)


def test_unseen_auroc_and_unassigned_share_on_a_hand_example():
    y_true = ["a", "a", "b", "d", "e"]
    conf = [0.9, 0.4, 0.8, 0.5, 0.3]  # known > unseen in 5 of the 6 pairs (0.4 < 0.5)
    assert M.unseen_auroc(y_true, conf, KNOWN) == pytest.approx(5 / 6)
    assert M.unseen_auroc(["a", "b"], [0.1, 0.2], KNOWN) is None
    assert M.unseen_unassigned(y_true, ["a", "a", "b", "Unassigned", "c"], KNOWN) == pytest.approx(0.5)
    r = M.evaluate(y_true, ["a", "a", "b", "Unassigned", "c"], KNOWN, conf, {"raw": np.array([1, 1, 1, 0, 0.0])})
    assert r["unseen_auroc"] == pytest.approx(5 / 6) and r["unseen_auroc_raw"] == pytest.approx(1.0)
    assert (r["n_known"], r["n_unseen"]) == (3, 2)
    c = M.confusion(y_true, ["a", "a", "b", "Unassigned", "c"], KNOWN)
    assert c["rows"] == ["a", "b", "d", "e"] and c["cols"] == ["a", "b", "c", "Unassigned"]
    assert c["counts"][2] == [0, 0, 0, 1] and c["counts"][3] == [0, 0, 1, 0]


# ------------------------------------------------------------------------------------------------ config
def test_label_mapping_renames_through_the_table_and_keeps_other_names(config):
    mapped = map_labels(["Naive CD4 T", "Memory CD4 T", "B", "not in table"], config.label_maps["pbmc"])
    assert list(mapped) == ["CD4 T cells", "CD4 T cells", "B cells", "not in table"]


def test_config_errors_are_one_line_gsrcl_errors(tmp_path):
    raw = json.loads(DEFAULT_CONFIG.read_text())
    path = tmp_path / "tasks.json"
    bad = json.loads(json.dumps(raw))
    next(t for t in bad["tasks"] if t["name"] == "xin_to_wang_all")["kind"] = "loo"
    path.write_text(json.dumps(bad))
    with pytest.raises(GsrclError, match="kind"):
        load_config(path)
    bad = json.loads(json.dumps(raw))
    bad["genes"] = "union"
    path.write_text(json.dumps(bad))
    with pytest.raises(GsrclError, match="genes must be one of"):
        load_config(path)
    path.write_text("{not json")
    with pytest.raises(GsrclError, match="not valid JSON"):
        load_config(path)
    with pytest.raises(MissingPathError):
        load_config(tmp_path / "absent.json")


def test_synthetic_task_filters_aligns_shared_genes_and_checks_unseen(synthetic):
    config = load_config(synthetic)
    [(ref, query)] = task_splits(config.tasks["toy_cross"], config.data_dir)
    assert ref.n_obs == 120 and set(ref.obs["batch"]) == {"r1"}  # the filter dropped batch r2
    assert list(ref.var_names) == [f"g{i}" for i in range(4, 40)]  # the reference genes the query has, in order
    assert set(query.obs[LABEL]) == {"a", "b", "c", "d"}
    folds = task_splits(config.tasks["toy_cv"], config.data_dir)
    assert len(folds) == 3 and sum(q.n_obs for _, q in folds) == 150
    raw = json.loads(synthetic.read_text())
    raw["tasks"][0]["unseen"] = []
    synthetic.write_text(json.dumps(raw))
    with pytest.raises(GsrclError, match="unseen"):
        task_splits(load_config(synthetic).tasks["toy_cross"], config.data_dir)


# ------------------------------------------------------------------------------------------------ command line
def test_unknown_task_or_data_folder_is_one_line_and_writes_nothing(tmp_path, capsys, script):
    accuracy = script("accuracy")
    out = tmp_path / "out"
    rc = accuracy.main(["--tasks", "no_such_task", "--out", str(out), "-q"])
    err = capsys.readouterr().err
    assert rc == GsrclError.exit_code and "unknown task(s) no_such_task" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()
    rc = accuracy.main(["--data", str(tmp_path / "none"), "--tasks", "xin_to_wang_all", "--out", str(out), "-q"])
    err = capsys.readouterr().err
    assert rc == MissingPathError.exit_code and "does not exist" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()
    rc = accuracy.main(["--methods", "svm,knn", "--out", str(out), "-q"])
    assert rc == GsrclError.exit_code and "unknown method(s) knn" in capsys.readouterr().err


def test_list_names_the_tasks_and_methods(capsys, script):
    assert script("accuracy").main(["--list"]) == 0
    out = capsys.readouterr().out
    assert "xin_to_wang_all\tcross\t" in out and out.strip().endswith("methods: " + ", ".join(METHOD_NAMES))


def test_recorded_command_names_the_script_and_the_thread_variables(monkeypatch, script):
    accuracy = script("accuracy")
    args = argparse.Namespace(config=None, data=None, tasks="kang_donors", methods="afrcl", out=None, quick=False,
                              merge=True, in_process=False, seed=1111)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    assert accuracy.command_line(args) == "python benchmarks/accuracy.py --tasks kang_donors --methods afrcl --merge"
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    args.seed = 7
    assert accuracy.command_line(args) == ("OMP_NUM_THREADS=1 python benchmarks/accuracy.py --tasks kang_donors "
                                           "--methods afrcl --merge --seed 7")


def test_baselines_on_synthetic_tasks_write_the_report(synthetic, tmp_path, script):
    out = tmp_path / "out"
    rc = script("accuracy").main(["--config", str(synthetic), "--tasks", "toy_cross", "--methods",
                                  ",".join(BASELINES), "--in-process", "--out", str(out), "-q"])
    assert rc == 0
    results = json.loads((out / "accuracy.json").read_text())
    assert "python benchmarks/accuracy.py --config " in results["command"]
    cross = results["tasks"]["toy_cross"]
    for m in BASELINES:
        e = cross["methods"][m]
        assert e["status"] == "ok", e.get("note")
        assert e["metrics"]["macro_f1"] > 0.9  # the markers separate the types: chance is about 1/3
        assert e["n_genes"] == [36] and e["metrics"]["n_unseen"] == 30
        assert sum(map(sum, e["confusion"]["counts"])) == 120
        # their confidence over the query neighbourhoods our unseen_score reads is scored too
        assert "unseen_auroc_conf_neighbourhood" in e["metrics"]
    assert cross["query_types"] == ["a", "b", "c", "d"]
    md = (out / "accuracy.md").read_text()
    assert results["command"] in md and "| toy_cross | " in md and "## Unseen-type AUROC" in md
    assert "`gsrcl benchmark`" not in md  # no command of the old home was recorded
    assert (out / "accuracy.png").stat().st_size > 0
    assert not (out / "confusion_toy_cross.png").exists()  # only ours get confusion pictures
    # --merge keeps the other tasks and methods of the earlier run; cross-validation pools the folds
    rc = script("accuracy").main(["--config", str(synthetic), "--tasks", "toy_cv", "--methods", "svm",
                                  "--in-process", "--merge", "--out", str(out), "-q"])
    merged = json.loads((out / "accuracy.json").read_text())
    assert rc == 0 and set(merged["tasks"]["toy_cross"]["methods"]) == set(BASELINES)
    cv = merged["tasks"]["toy_cv"]["methods"]["svm"]
    assert len(cv["per_fold"]) == 3 and sum(cv["n_query"]) == 150 and "| toy_cv | " in (out / "accuracy.md").read_text()


@pytest.mark.slow
def test_a_method_in_its_own_process_gives_the_same_predictions(synthetic):
    config = load_config(synthetic)
    task = config.tasks["toy_cross"]
    alone = runner.run_isolated(task, str(config.data_dir), "svm", 1111, True)
    here = runner.run_job(task, str(config.data_dir), "svm", 1111, True)
    assert alone["splits"][0]["y_pred"] == here["splits"][0]["y_pred"]
    assert alone["splits"][0]["fit"]["peak_mib"] > 0 and alone["splits"][0]["fit"]["delta_mib"] >= 0


def test_baselines_confidence_is_averaged_over_the_query_neighbourhoods_of_our_unseen_score(synthetic):
    config = load_config(synthetic)
    split = runner.run_job(config.tasks["toy_cross"], str(config.data_dir), "svm")["splits"][0]
    [(ref, query)] = task_splits(config.tasks["toy_cross"], config.data_dir)
    graph = runner.query_neighbourhoods(query, list(ref.var_names))
    conf = np.asarray(split["confidence"])
    got = np.asarray(split["scores"]["conf_neighbourhood"])
    assert np.allclose(got, graph.smooth(conf)) and not np.allclose(got, conf)
    # tasks without unseen types get no such score
    fold = runner.run_job(config.tasks["toy_cv"], str(config.data_dir), "svm")["splits"][0]
    assert "conf_neighbourhood" not in fold["scores"]


# ------------------------------------------------------------------------------------------------ report
def test_report_marks_our_entries_below_the_best_baseline_less_the_margin(tmp_path):
    ok = lambda f1: {"status": "ok", "metrics": {"macro_f1": f1}}
    task = {"methods": {"afrcl": ok(0.940), "gsrcl": ok(0.946), "svm": ok(0.951), "celltypist": ok(0.90),
                        "svm_rejection": {"status": "failed", "metrics": {}}}}
    # the target comes from the baselines that ran, never from ours
    assert report.target_f1(task) == pytest.approx(0.951 - report.TARGET_MARGIN)
    assert report.target_f1({"methods": {"afrcl": ok(0.99)}}) is None
    report.bar_figure({"tasks": {"t": task}}, tmp_path / "bars.png")
    assert (tmp_path / "bars.png").stat().st_size > 0


def test_report_gives_each_of_our_methods_mean_and_worst_margin_to_the_best_baseline():
    ok = lambda f1: {"status": "ok", "metrics": {"macro_f1": f1}}
    tasks = {"a": {"methods": {"gsrcl": ok(0.90), "afrcl": ok(0.99), "svm": ok(0.95), "celltypist": ok(0.97)}},
             "b": {"methods": {"gsrcl": ok(0.80), "afrcl": ok(0.50), "svm": ok(0.79)}},
             "c": {"methods": {"gsrcl": ok(0.70)}}}  # no baseline ran: no margin
    spread = report.margins({"tasks": tasks})
    assert spread["gsrcl"] == [("a", pytest.approx(-0.07)), ("b", pytest.approx(0.01))]
    assert spread["afrcl"] == [("a", pytest.approx(0.02)), ("b", pytest.approx(-0.29))]
    text = "\n".join(report.margin_table({"tasks": tasks}))
    assert "| afrcl | 2 | -0.135 | -0.290 | b |" in text
    assert "| gsrcl | 2 | -0.030 | -0.070 | a |" in text


def test_report_gives_unseen_aurocs_to_four_decimals():
    # AUROCs near 1 differ in the fourth decimal (0.9995 against 0.9992 reads 1.000 against 0.999 otherwise)
    def entry(**aurocs):
        return {"status": "ok", "n_ref": [10], "n_query": [8], "reference_types": ["a", "b"], "fit_seconds": [1.0],
                "predict_seconds": [0.1], "metrics": {"macro_f1": 1.0, "accuracy": 1.0, "median_f1": 1.0,
                                                      "pct_unassigned": 0.0, "unseen_unassigned": 0.25, **aurocs}}
    task = {"task": {"kind": "cross", "unseen": ["c"]},
            "methods": {"gsrcl": entry(unseen_auroc=0.99533, unseen_auroc_unseen_score=0.99954),
                        "svm_rejection": entry(unseen_auroc=0.99919)}}
    text = report.markdown({"tasks": {"t": task}})
    summary = text.split("## Unseen-type AUROC")[1].split("## Per task")[0]
    assert "| t | 0.9953 (unseen_score 0.9995) | 0.9992 |" in summary
    assert "0.9953 (unseen_score 0.9995) | 25.0%" in text.split("## Per task")[1]


def test_report_says_where_old_gsrcl_benchmark_commands_now_run():
    entry = {"status": "failed", "note": "ValueError: x", "command": "gsrcl benchmark --tasks t"}
    text = report.markdown({"tasks": {"t": {"methods": {"svm": entry}}}})
    assert "gsrcl benchmark --tasks t" in text and "`python benchmarks/accuracy.py` takes the same flags" in text
    entry["command"] = "python benchmarks/accuracy.py --tasks t"
    assert "takes the same flags" not in report.markdown({"tasks": {"t": {"methods": {"svm": entry}}}})


# ------------------------------------------------------------------------------------------------ seeds.py
def test_seed_spread_report_takes_the_target_from_the_baselines_only(script):
    seeds = script("seeds")
    entry = lambda m, s, f1: {"task": "t", "method": m, "seed": s, "metrics": {"macro_f1": f1, "macro_f1_best": f1}}
    results = {"entries": {f"{m}{s}": entry(m, s, f1) for m, s, f1 in [
        ("afrcl", 1, 0.90), ("afrcl", 2, 0.96), ("afrcl_old", 1, 0.99), ("svm", 1, 0.95), ("celltypist", 1, 0.94)]}}
    got = seeds.summary(results)["t"]
    assert got["afrcl"]["seeds"] == [1, 2] and got["afrcl"]["macro_f1"] == [0.90, 0.96]
    md = seeds.markdown(results)
    # needed = the best baseline's mean (0.95) - 0.005; a variant of ours (afrcl_old) is not a baseline
    assert "| afrcl | 1, 2 | 0.9300 ± 0.0424 (min 0.9000) |" in md and "no (needed 0.9450)" in md
    assert "| afrcl_old | 1 | 0.9900" in md and "yes (needed 0.9450)" in md


def test_trial_settings_reach_training_and_name_the_row(monkeypatch, script):
    import gsrcl

    seeds = script("seeds")
    settings = seeds.parse_settings(["scale_genes=true", "min_steps=370", "pool=geometric"])
    assert settings == {"scale_genes": True, "min_steps": 370, "pool": "geometric"}
    assert seeds.label("gsrcl", {"scale_genes": True}) == "gsrcl[scale_genes=true]"
    assert seeds.label("gsrcl", {}) == "gsrcl"
    with pytest.raises(ValueError, match="KEY=VALUE"):
        seeds.parse_settings(["scale_genes"])
    assert seeds.main(["--tasks", "kang_donors", "--methods", "svm", "--set", "min_steps=1"]) == 2

    seen = {}
    monkeypatch.setattr(gsrcl, "train", lambda adata, **kw: seen.update(kw))
    est = make_method("gsrcl", seed=7, quick=True, overrides={"scale_genes": True, "epochs": 2})
    est.fit(ad.AnnData(np.ones((2, 2), dtype=np.float32)), np.array(["a", "b"]))
    # the trial's settings win over --quick's, and epochs goes to its own argument
    assert seen["scale_genes"] is True and seen["epochs"] == 2 and seen["hidden"] == (64,) and seen["seed"] == 7
    assert "scale_genes=True" in est.implementation
    with pytest.raises(GsrclError, match="not the baseline"):
        make_method("svm", overrides={"C": 2})


# ------------------------------------------------------------------------------------------------ real data
@pytest.mark.realdata
def test_the_pbmc_table_covers_the_files(config, real_data):
    data = real_data("pbmc3k_seurat_clustifyr.h5ad", "pbmc_kang_ctrl_muscat.h5ad")
    table = config.label_maps["pbmc"]
    pbmc3k = ad.read_h5ad(data / "pbmc3k_seurat_clustifyr.h5ad", backed="r")
    kang = ad.read_h5ad(data / "pbmc_kang_ctrl_muscat.h5ad", backed="r")
    assert set(pbmc3k.obs["cell_type"].astype(str)) <= set(table)  # every pbmc3k name is harmonised
    kang_types = set(kang.obs["cell_type"].astype(str))
    assert set(map_labels(pbmc3k.obs["cell_type"], table)) & kang_types == kang_types


@pytest.mark.realdata
@pytest.mark.filterwarnings("ignore:Observation names are not unique")
def test_real_task_filters_and_shared_genes(config, real_data):
    task = config.tasks["cellbench_5cl_plates"]
    data = real_data(task.reference.file, "pancreas_xin_scclassify_subset.h5ad", "pancreas_wang_scclassify_subset.h5ad")
    [(ref, query)] = task_splits(task, data)
    raw = ad.read_h5ad(data / task.reference.file, backed="r").obs
    sng = raw["demuxlet_cls"] == "SNG"
    assert ref.n_obs == int((sng & raw["plate"].isin(["p1", "p2"])).sum())
    assert query.n_obs == int((sng & (raw["plate"] == "p3")).sum())
    assert set(ref.obs["plate"]) == {"p1", "p2"} and set(ref.obs["demuxlet_cls"]) == {"SNG"}
    task = config.tasks["xin_to_wang_shared"]
    [(ref, query)] = task_splits(task, data)
    full = ad.read_h5ad(data / task.reference.file, backed="r").var_names
    kept = [g for g in full if g in set(query.var_names)]
    assert list(ref.var_names) == kept and 0 < len(kept) < len(full)


@pytest.mark.realdata
@pytest.mark.slow
def test_quick_run_of_a_real_task_writes_the_report_and_the_svm_is_well_above_chance(tmp_path, real_data, script):
    data = real_data("pancreas_xin_scclassify_subset.h5ad", "pancreas_wang_scclassify_subset.h5ad")
    ours = ours_available() is None
    methods = list(BASELINES) + (list(OURS) if ours else [])
    rc = script("accuracy").main(["--quick", "--tasks", "xin_to_wang_all", "--data", str(data), "--in-process",
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
        if m in BASELINES:
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
    # the summary row ends with the target, and marks exactly those of ours below it
    target = report.target_f1(task)
    assert target == pytest.approx(max(task["methods"][m]["metrics"]["macro_f1"] for m in BASELINES)
                                   - report.TARGET_MARGIN)
    row = next(line for line in md.splitlines() if line.startswith("| xin_to_wang_all | ")).split(" | ")
    assert row[-1] == f"{report.fmt(target)} |"
    for m, cell in zip([m for m in METHOD_NAMES if m in methods], row[1:-1]):
        short = m in OURS and task["methods"][m]["metrics"]["macro_f1"] < target
        assert cell.endswith(" *") == short, (m, cell)
    assert (tmp_path / "confusion_xin_to_wang_all.png").exists() == ours
    if ours:
        assert "unseen_auroc_max_raw_score" in task["methods"]["gsrcl"]["metrics"]
        # the default pools both SVMs for every type (gene_svm="pool"); AF-RCL has no such choice
        assert task["methods"]["gsrcl"]["svm_inputs"][0] == {t: "encoder+genes"
                                                             for t in ["alpha", "beta", "delta", "gamma"]}
        assert "svm_inputs" not in task["methods"]["afrcl"]
        assert "gsrcl's every type pools an SVM on its encoder's output and one on the genes" in md
        chosen = {"alpha": "genes", "beta": "encoder", "delta": "genes", "gamma": "encoder"}  # as gene_svm=True
        task["methods"]["gsrcl"]["svm_inputs"] = [chosen]
        assert "gsrcl's SVM on the genes (`gene_svm`) for: alpha, delta (the others" in report.markdown(results)
        for m in OURS:  # novelty / conf over the query neighbourhoods ranks the unseen cells first
            got = task["methods"][m]["metrics"]
            assert got["unseen_auroc_unseen_score"] > max(0.95, got["unseen_auroc"])
            assert got["unseen_auroc_unseen_score_cell"] > 0.9


def test_a_trial_log_keeps_one_entry_per_key_and_rewrites_both_files(tmp_path):
    from harness.trials import TrialLog, trial_parser

    def markdown(results):
        return "\n".join(sorted(f"{k}: {e['score']}" for k, e in results["entries"].items())) + "\n"

    log = TrialLog(tmp_path, "trial", markdown)
    log.add("a|1", {"score": 0.5})
    log.add("b|1", {"score": 0.7})
    log.add("a|1", {"score": 0.9})  # a rerun replaces its entry
    again = TrialLog(tmp_path, "trial", markdown)  # and a new run starts from what was written
    assert sorted(again.results["entries"]) == ["a|1", "b|1"]
    assert again.results["entries"]["a|1"]["score"] == 0.9 and "command" in again.results["entries"]["a|1"]
    assert (tmp_path / "trial.md").read_text() == "a|1: 0.9\nb|1: 0.7\n"
    args = trial_parser("Doc.\n\nMore.", "trial").parse_args(["--tasks", "x,y"])
    assert args.tasks == "x,y" and args.seeds == "1111"


def test_a_shift_trial_names_its_training_settings_and_reports_them_beside_the_default(script):
    shift = script("afrcl_shift")
    assert shift.variant_name({}) == "default"
    assert shift.variant_name(shift.parse_settings(["scale_genes=true", "ensemble=1"])) == "ensemble=1,scale_genes=True"
    rules = {r: {"macro_f1": 0.5} for r in shift.RULES}
    split = {"fit_seconds": 12.0, "rules": {**rules, "default": {"macro_f1": 0.9, "unseen_auroc": 0.8}}}
    results = {"entries": {
        "t|1|ensemble=1": {"task": "t", "seed": 1, "training": "ensemble=1", "splits": [split, split]},
        "t|1": {"task": "t", "seed": 1, "splits": [dict(split, rules=rules)]}}}
    md = shift.markdown(results).splitlines()
    rows = [ln for ln in md if ln.startswith("| t |")]
    # the default first, then the variant; fit seconds summed over the splits, AUROC only where every split has one
    assert rows[0].startswith("| t | default | 1 | 12 | 0.5000 |")
    assert rows[1].startswith("| t | ensemble=1 | 1 | 24 | 0.9000 (0.800) | 0.5000 |")
    # an entry made before a rule existed shows a dash for it
    older = {r: v for r, v in rules.items() if r != "linear"}
    md = shift.markdown({"entries": {"t|2": {"task": "t", "seed": 2, "splits": [dict(split, rules=older)]}}})
    row = next(ln for ln in md.splitlines() if ln.startswith("| t |")).split(" | ")
    assert row[4 + shift.RULES.index("linear")] == "–" and row[4 + shift.RULES.index("pool")] == "0.5000"


def test_the_training_speed_report_gives_the_ratio_of_the_two_revisions(script):
    speed = script("train_speed")
    entry = {"task": "t", "method": "afrcl", "cells": 2638, "genes": 2500, "base": "b215426",
             "base_run": {"seconds": 400.0, "peak_rss": 2e9}, "head_run": {"seconds": 100.0, "peak_rss": 1e9}}
    md = speed.markdown({"entries": {"t|afrcl": entry}})
    assert "| t | afrcl | 2,638 x 2,500 | b215426 | in turn | 400 | 100 | 4.00x | 2.00 | 1.00 | - |" in md
    md = speed.markdown({"entries": {"t|afrcl": {**entry, "run": "together", "load": [2.04, 2.51]}}})
    assert "| b215426 | together | 400 | 100 | 4.00x | 2.00 | 1.00 | 2.0 → 2.5 |" in md
