"""Running the benchmark: one method on every split of one task (in a fresh process by default), its scores, and
the whole run of tasks x methods with its results files."""

from __future__ import annotations

import json
import logging
import os
import time
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from gsrcl.errors import GsrclError, OutputError

from . import PROTOCOL
from .files import write_json
from .inputs import align_to, model_input
from .measure import MEMORY_NOTE, environment, measure, now
from .methods import BASELINES, METHOD_NAMES, OURS, make_method
from .metrics import accuracy, as_text, confusion, evaluate, macro_f1
from .ours import ours_available
from .report import RESULTS_JSON, write_report
from .tasks import DEFAULT_SEED, LABEL, QUICK_MAX_CELLS, Config, Task, task_splits

log = logging.getLogger("harness")


def query_neighbourhoods(query, genes: Sequence[str]):
    """The query neighbourhoods GsRCL and AF-RCL average ``unseen_score`` over.

    Parameters
    ----------
    query : anndata.AnnData
        The query as the benchmark gives it to the methods.
    genes : sequence of str
        The training genes; the query is aligned to them first.

    Returns
    -------
    gsrcl.neighbours.QueryNeighbours or None
        Fitted with default settings; None when the query has too few cells. Its ``smooth(values)`` averages a
        per-cell score over each cell's neighbourhood.
    """
    from gsrcl.neighbours import QueryNeighbours, in_blocks, min_cells
    from gsrcl.model_input import ModelInput

    if query.n_obs < min_cells():
        return None
    return QueryNeighbours().fit(in_blocks(ModelInput("log1p").novelty_input(align_to(model_input(query), query.var, genes))), query.n_obs)


def run_job(task: Task, data_dir: str, method: str, seed: int = DEFAULT_SEED, quick: bool = False,
            overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train and predict one method on every split of a task, in this process.

    Parameters
    ----------
    task : Task
    data_dir : str
        Folder of the data files.
    method : str
        One of ``METHOD_NAMES``.
    seed : int
        The method's seed.
    quick : bool
        At most ``QUICK_MAX_CELLS`` cells per side; ours with tiny networks.
    overrides : dict, optional
        Ours: hyperparameters other than the preset's.

    Returns
    -------
    dict
        ``implementation`` and ``splits``: per split the cell and gene counts, the reference types, truth,
        labels, top types before rejection, confidence, further scores (``conf_neighbourhood`` for a baseline on
        a task with unseen types), and `measure` records of ``fit`` and ``predict``; plain values only, for
        `score_job`.
    """
    from sklearn.exceptions import ConvergenceWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # the baselines run with their default max_iter
        warnings.simplefilter("ignore", FutureWarning)
        return _run_splits(task, data_dir, method, seed, quick, overrides)


def _run_splits(task: Task, data_dir: str, method: str, seed: int, quick: bool, overrides=None) -> dict[str, Any]:
    out: dict[str, Any] = {"splits": []}
    for ref, query in task_splits(task, data_dir, QUICK_MAX_CELLS if quick else None):
        est = make_method(method, seed=seed, quick=quick, overrides=overrides)
        est.warm_up()  # imports are not the method's memory or time
        with measure() as fit:
            est.fit(ref, ref.obs[LABEL].to_numpy())
        with measure() as pred:
            result = est.predict(query)
        scores = dict(result.scores)
        if method in BASELINES and not np.isin(as_text(query.obs[LABEL]), as_text(ref.obs[LABEL])).all():
            graph = query_neighbourhoods(query, list(ref.var_names.astype(str)))
            if graph is not None:  # the neighbourhoods our unseen_score reads, for a like-for-like comparison
                scores["conf_neighbourhood"] = graph.smooth(result.confidence)
        out["implementation"] = est.implementation
        out["splits"].append({
            "n_ref": int(ref.n_obs), "n_query": int(query.n_obs), "n_genes": int(ref.n_vars),
            "ref_types": sorted(set(ref.obs[LABEL].astype(str))),
            "y_true": list(as_text(query.obs[LABEL])), "y_pred": list(as_text(result.labels)),
            "y_best": list(as_text(result.labels if result.best is None else result.best)),
            "confidence": np.asarray(result.confidence, float).tolist(),
            "scores": {k: np.asarray(v, float).tolist() for k, v in scores.items()},
            "fit": fit, "predict": pred, "svm_inputs": getattr(est, "svm_inputs", None),
        })
    return out


def _child_job(task: Task, data_dir: str, method: str, seed: int, quick: bool, overrides=None) -> dict[str, Any]:
    logging.getLogger("gsrcl").setLevel(logging.ERROR)  # the parent reports failures
    return run_job(task, data_dir, method, seed, quick, overrides)


def run_isolated(task: Task, data_dir: str, method: str, seed: int = DEFAULT_SEED, quick: bool = False,
                 overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """`run_job` in a fresh worker process, so that its time and peak memory are its own.

    Parameters and returns as `run_job`. The worker is started with ``spawn`` and finds this package through
    the parent's ``sys.path``.
    """
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(_child_job, task, data_dir, method, seed, quick, overrides).result()


def score_job(job: dict[str, Any]) -> dict[str, Any]:
    """The results entry of one method on one task.

    Parameters
    ----------
    job : dict
        What `run_job` returned.

    Returns
    -------
    dict
        ``status`` "ok", ``implementation``, ``metrics`` (`harness.metrics.evaluate` on the pooled splits, and
        ``macro_f1_best`` without rejection), ``confusion``, cell and gene counts per split, ``reference_types``,
        seconds and memory of fit and predict; ``svm_inputs`` for GsRCL; ``per_fold`` scores for
        cross-validation.
    """
    splits = job["splits"]
    known = sorted(set().union(*(s["ref_types"] for s in splits)))
    cat = lambda key: np.concatenate([np.asarray(s[key], dtype=object if key != "confidence" else float)
                                      for s in splits])
    scores = {k: np.concatenate([np.asarray(s["scores"][k], float) for s in splits]) for k in splits[0]["scores"]}
    y_true, y_pred = cat("y_true"), cat("y_pred")
    metrics = evaluate(y_true, y_pred, known, cat("confidence"), scores)
    if all("y_best" in s for s in splits):  # entries made before this was recorded lack it
        metrics["macro_f1_best"] = macro_f1(y_true, cat("y_best"), known)
    mem = lambda step, key: (max((s[step][key] for s in splits if s[step][key] is not None), default=None))
    entry = {
        "status": "ok",
        "implementation": job.get("implementation", ""),
        "metrics": metrics,
        "confusion": confusion(y_true, y_pred, known),
        "n_ref": [s["n_ref"] for s in splits],
        "n_query": [s["n_query"] for s in splits],
        "n_genes": [s.get("n_genes") for s in splits],
        "reference_types": known,
        "fit_seconds": [s["fit"]["seconds"] for s in splits],
        "predict_seconds": [s["predict"]["seconds"] for s in splits],
        "memory_mib": {"fit_peak": mem("fit", "peak_mib"), "fit_delta": mem("fit", "delta_mib"),
                       "predict_peak": mem("predict", "peak_mib"), "predict_delta": mem("predict", "delta_mib"),
                       "peak_reset": all(s["fit"]["peak_reset"] for s in splits)},
    }
    if any(s.get("svm_inputs") for s in splits):
        entry["svm_inputs"] = [s.get("svm_inputs") for s in splits]
    if len(splits) > 1:
        entry["per_fold"] = [{"macro_f1": macro_f1(s["y_true"], s["y_pred"], s["ref_types"]),
                              "accuracy": accuracy(s["y_true"], s["y_pred"], s["ref_types"])} for s in splits]
    return entry


def check_names(config: Config, tasks: Sequence[str] | None, methods: Sequence[str] | None) -> tuple[list, list]:
    """The tasks and methods of a run.

    Parameters
    ----------
    config : Config
    tasks, methods : sequence of str, optional
        Names; None or empty means all.

    Returns
    -------
    tasks, methods : list of str

    Raises
    ------
    GsrclError
        A name is not in the config or not a method.
    """
    task_names = list(tasks) if tasks else list(config.tasks)
    unknown = [t for t in task_names if t not in config.tasks]
    if unknown:
        raise GsrclError(f"unknown task(s) {', '.join(unknown)}; choose from {', '.join(config.tasks)}")
    method_names = list(methods) if methods else list(METHOD_NAMES)
    unknown = [m for m in method_names if m not in METHOD_NAMES]
    if unknown:
        raise GsrclError(f"unknown method(s) {', '.join(unknown)}; choose from {', '.join(METHOD_NAMES)}")
    return task_names, method_names


def run_benchmark(
    config: Config,
    tasks: Sequence[str] | None = None,
    methods: Sequence[str] | None = None,
    out: str | os.PathLike | None = None,
    *,
    quick: bool = False,
    seed: int = DEFAULT_SEED,
    isolate: bool = True,
    merge: bool = False,
    command: str = "",
    quiet: bool = False,
) -> dict[str, Any]:
    """Run methods on tasks and write the results.

    Every task is loaded once before any training, so that a bad file, filter or ``unseen`` list stops the run
    before it costs anything. A method that fails on a task is recorded as failed with its one-line error; the
    run goes on.

    Parameters
    ----------
    config : Config
    tasks, methods : sequence of str, optional
        Names (default: all).
    out : path-like, optional
        Output folder (default: ``results/`` beside the config); created if needed.
    quick : bool
        At most ``QUICK_MAX_CELLS`` cells per side and tiny networks for ours: a smoke test, not a measurement.
    seed : int
        Seed of every method.
    isolate : bool
        Each task x method in a fresh process (`run_isolated`), else in this one.
    merge : bool
        Keep the other tasks and methods of an earlier ``accuracy.json`` in ``out``.
    command : str
        The command line, recorded with every entry.
    quiet : bool
        No progress bar.

    Returns
    -------
    dict
        The results, as written to ``out/accuracy.json`` (also ``accuracy.md``, ``accuracy.png`` and one
        ``confusion_<task>.png`` per task where ours ran; see `harness.report.write_report`).

    Raises
    ------
    GsrclError
        Unknown task or method, or what loading a task raises (see `harness.tasks.task_splits`).
    OutputError
        ``out`` cannot be created.
    """
    from tqdm.auto import tqdm

    task_names, method_names = check_names(config, tasks, methods)
    for name in task_names:
        task_splits(config.tasks[name], config.data_dir, QUICK_MAX_CELLS if quick else None)
    out = Path(out) if out is not None else config.path.parent / "results"
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create the output folder {out} ({exc.strerror}): pass another --out") from None

    results = load_results(out / RESULTS_JSON) if merge else None
    if results is None:
        results = {"tasks": {}}
    results.update({"command": command, "created": now(), "quick": quick, "seed": seed,
                    "environment": environment(), "memory": MEMORY_NOTE if isolate else
                    MEMORY_NOTE + " (all methods in one process: freed memory of an earlier method may be reused)",
                    "isolated": isolate, "config": str(config.path), "data_dir": str(config.data_dir),
                    "protocol": PROTOCOL})
    missing_ours = ours_available() if any(m in OURS for m in method_names) else None
    jobs = [(t, m) for t in task_names for m in method_names]
    bar = tqdm(jobs, disable=quiet, desc="benchmark", unit="job")
    for name, method in bar:
        task = config.tasks[name]
        bar.set_postfix_str(f"{name} / {method}")
        slot = results["tasks"].setdefault(name, {"methods": {}})
        slot.update({"task": task.summary()})
        entry: dict[str, Any]
        if method in OURS and missing_ours:
            entry = {"status": "not available", "note": missing_ours}
        else:
            t0 = time.perf_counter()
            try:
                job = (run_isolated if isolate else run_job)(task, str(config.data_dir), method, seed, quick)
                entry = score_job(job)
            except Exception as exc:  # one method failing does not stop the others
                msg = " ".join(f"{type(exc).__name__}: {exc}".split())
                log.warning("%s on %s failed: %s", method, name, msg)
                entry = {"status": "failed", "note": msg[:500]}
            entry["wall_seconds"] = time.perf_counter() - t0
        entry.update({"command": command, "finished": now(), "quick": quick, "seed": seed})
        slot["methods"][method] = entry
        if entry.get("status") == "ok":
            # cross-validation: reference cells per fold (mean); query cells = every cell once
            slot["n_ref"], slot["n_query"] = round(float(np.mean(entry["n_ref"]))), sum(entry["n_query"])
            slot["reference_types"] = entry["reference_types"]
            slot["query_types"] = entry["confusion"]["rows"]
        write_json(out / RESULTS_JSON, results)  # after every job, so that a long run can be followed
    write_report(results, out, config)
    return results


def load_results(path: str | os.PathLike) -> dict[str, Any] | None:
    """An earlier ``accuracy.json``.

    Parameters
    ----------
    path : path-like

    Returns
    -------
    dict or None
        None when the file is absent, unreadable (a warning is logged) or not a results file.
    """
    path = Path(path)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        log.warning("%s cannot be read; starting a fresh results file", path)
        return None
    return data if isinstance(data, dict) and isinstance(data.get("tasks"), dict) else None
