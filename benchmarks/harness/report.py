"""The report of a run: ``accuracy.json``, ``accuracy.md`` (summary tables, one table per task, methods and
notes), ``accuracy.png`` (macro-F1 of every method on every task) and ``confusion_<task>.png`` (the confusion
tables of GsRCL and AF-RCL)."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from .files import atomic_write, write_json, write_text
from .measure import MEMORY_NOTE
from .methods import BASELINES, METHOD_NAMES, OURS
from .tasks import QUICK_MAX_CELLS, Config

#: Ours should reach the best baseline's macro-F1 minus this on every task.
TARGET_MARGIN = 0.005
RESULTS_JSON, RESULTS_MD, FIGURE = "accuracy.json", "accuracy.md", "accuracy.png"


def target_f1(task: dict[str, Any]) -> float | None:
    """The macro-F1 GsRCL and AF-RCL should reach on a task.

    Parameters
    ----------
    task : dict
        One task of the results (``results["tasks"][name]``).

    Returns
    -------
    float or None
        The best baseline's macro-F1 minus `TARGET_MARGIN`; None when no baseline ran.
    """
    scores = [e["metrics"]["macro_f1"] for m, e in task["methods"].items()
              if m in BASELINES and e.get("status") == "ok" and e["metrics"].get("macro_f1") is not None]
    return max(scores) - TARGET_MARGIN if scores else None


def margins(results: dict[str, Any]) -> dict[str, list[tuple[str, float]]]:
    """Each of our methods' macro-F1 less the best baseline's, task by task (tasks where both ran).

    Returns
    -------
    dict
        ``{method: [(task, margin), ...]}`` for GsRCL and AF-RCL.
    """
    out: dict[str, list[tuple[str, float]]] = {}
    for name, t in results["tasks"].items():
        target = target_f1(t)
        if target is None:
            continue
        best = target + TARGET_MARGIN
        for m in OURS:
            e = t["methods"].get(m)
            if e is not None and e.get("status") == "ok" and e["metrics"].get("macro_f1") is not None:
                out.setdefault(m, []).append((name, e["metrics"]["macro_f1"] - best))
    return out


def margin_table(results: dict[str, Any]) -> list[str]:
    """The lines of the table of our methods' mean and worst `margins` (none when no margin is known)."""
    spread = margins(results)
    if not spread:
        return []
    lines = ["", f"Margin to the best baseline (ours less the best baseline's macro-F1; the target is "
                 f"-{TARGET_MARGIN} or more on every task):", "",
             "| method | tasks | mean | worst | worst task |", "|---|---|---|---|---|"]
    for m, rows in spread.items():
        worst = min(rows, key=lambda r: r[1])
        lines.append(f"| {m} | {len(rows)} | {float(np.mean([r[1] for r in rows])):+.3f} | {worst[1]:+.3f} | "
                     f"{worst[0]} |")
    return lines


def fmt(x, digits: int = 3) -> str:
    """``x`` with ``digits`` decimals; a dash for None or a non-finite value."""
    return "–" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:.{digits}f}"


def _seconds(values) -> str:
    if not values:
        return "–"
    mean = float(np.mean(values))
    return f"{mean:.2f}" if mean < 10 else f"{mean:.0f}"


def _mib(mem: dict, step: str) -> str:
    peak, delta = mem.get(f"{step}_peak"), mem.get(f"{step}_delta")
    if peak is None:
        return "–"
    return f"{peak:.0f} (+{max(delta, 0):.0f})" if delta is not None else f"{peak:.0f}"


def _side_text(side: dict | None) -> str:
    if not side:
        return ""
    filt = "; ".join(f"{k} in {', '.join(v)}" for k, v in (side.get("filter") or {}).items())
    return f"`{side['file']}`" + (f" ({filt})" if filt else "")


def _extra_aurocs(metrics: dict, digits: int = 3) -> str:
    """'name AUROC' for each further confidence score of an entry (GsRCL's max_raw_score, our novelty_score,
    unseen_score and unseen_score_cell, the baselines' conf_neighbourhood)."""
    prefix = "unseen_auroc_"
    return ", ".join(f"{k[len(prefix):]} {fmt(v, digits)}" for k, v in metrics.items()
                     if k.startswith(prefix) and v is not None)


def markdown(results: dict[str, Any]) -> str:
    """The text of ``accuracy.md``.

    Parameters
    ----------
    results : dict
        As `harness.runner.run_benchmark` returns (or an ``accuracy.json`` read back).

    Returns
    -------
    str
        Commands, summary tables of macro-F1 (with and without rejection) and of the unseen-type AUROC, one table
        per task, the methods and notes.
    """
    tasks = results["tasks"]
    methods = [m for m in METHOD_NAMES if any(m in t["methods"] for t in tasks.values())]
    entries = [e for t in tasks.values() for e in t["methods"].values()]
    commands = sorted({e.get("command", "") for e in entries} - {""})
    quick = any(e.get("quick") for e in entries)
    moved = any("gsrcl benchmark" in c for c in commands + [results.get("command", "")])
    lines = ["# Accuracy benchmark: GsRCL and AF-RCL against the usual alternatives", ""]
    lines += ["Made with:", "", "```", *(commands or [results.get("command", "")]), "```", ""]
    env = results.get("environment", {})
    lines += [f"Last run {results.get('created', '')} with gsrcl {env.get('gsrcl', '')}, scikit-learn "
              f"{env.get('scikit-learn', '')}, torch {env.get('torch', '–')}, on {env.get('cpus_available', env.get('cpu_count'))} "
              f"CPU core(s) ({env.get('platform', '')})."
              + (" Commands recorded as `gsrcl benchmark` ran this harness before it moved out of the package "
                 "into `benchmarks/`; `python benchmarks/accuracy.py` takes the same flags." if moved else "")
              + (" **Entries made with --quick (tiny models, at most "
                 f"{QUICK_MAX_CELLS} cells per side) are not a measurement.**" if quick else ""), ""]
    lines += ["## Macro-F1 over the reference's types present in the query", "",
              f"`target`: the best baseline's macro-F1 minus {TARGET_MARGIN}, what GsRCL and AF-RCL should reach; "
              "an entry of ours below it is marked with *.", "",
              "| task | " + " | ".join(methods) + " | target |", "|---" * (len(methods) + 2) + "|"]
    for name, t in tasks.items():
        cells = []
        target = target_f1(t)
        for m in methods:
            e = t["methods"].get(m)
            if e is None or e["status"] != "ok":
                cells.append("" if e is None else e["status"])
                continue
            f1 = e["metrics"]["macro_f1"]
            short = m in OURS and target is not None and f1 is not None and f1 < target
            cells.append(fmt(f1) + (" *" if short else ""))
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {fmt(target)} |")
    lines += margin_table(results)
    lines += ["", "## Macro-F1 without rejection", "",
              "Every cell labelled with its top-scoring type (no Unassigned), which is what svm and celltypist "
              "always do; ours and svm_rejection above reject at their default cut-offs (p = 0.5, 0.7). Blank: an "
              "entry made before this was recorded.", "",
              "| task | " + " | ".join(methods) + " |", "|---" * (len(methods) + 1) + "|"]
    for name, t in tasks.items():
        cells = []
        for m in methods:
            e = t["methods"].get(m)
            ok = e is not None and e["status"] == "ok" and "macro_f1_best" in e["metrics"]
            cells.append(fmt(e["metrics"]["macro_f1_best"]) if ok else "")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    unseen_tasks = [(n, t) for n, t in tasks.items() if t.get("task", {}).get("unseen")]
    if unseen_tasks:
        lines += ["", "## Unseen-type AUROC", "",
                  "AUROC of each method's confidence for telling the query's cells of known types from those of "
                  "types the reference lacks; in brackets further scores (ours: `novelty_score`, how unlike "
                  "every reference type a cell is, `gsrcl.novelty`; `unseen_score_cell`: novelty_score / "
                  "conf_score; `unseen_score`: that averaged over each cell's 15 nearest query cells in the "
                  "query's own principal components, `gsrcl.neighbours`; the baselines' `conf_neighbourhood`: "
                  "their confidence averaged over the same neighbourhoods); four decimals, as several lie "
                  "within 0.001 of each other.", "",
                  "| task | " + " | ".join(methods) + " |", "|---" * (len(methods) + 1) + "|"]
        for name, t in unseen_tasks:
            cells = []
            for m in methods:
                e = t["methods"].get(m)
                ok = e is not None and e["status"] == "ok"
                extra = _extra_aurocs(e["metrics"], 4) if ok else ""
                cells.append(fmt(e["metrics"].get("unseen_auroc"), 4) + (f" ({extra})" if extra else "") if ok else "")
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "## Per task", "",
              "Columns: macro-F1 and accuracy over the known cells (Unassigned counts as wrong); median F1 / % "
              "unassigned as Abdelaal et al. (F1 per type on the assigned known cells); for tasks with unseen "
              "types, the AUROC of the confidence score for known vs unseen cells and the share of unseen cells "
              "called Unassigned; train / predict seconds (per fold for cross-validation); peak memory of the "
              "step in MiB (+ its increase over the start of the step).", ""]
    for name, t in tasks.items():
        spec = t.get("task", {})
        lines.append(f"### {name}")
        lines.append("")
        if spec.get("description"):
            lines += [spec["description"] + ".", ""]
        if spec.get("kind") == "cv":
            lines.append(f"{spec.get('folds')}-fold stratified cross-validation (seed {spec.get('seed')}) on "
                         f"{_side_text(spec.get('reference'))}")
        else:
            lines.append(f"Reference {_side_text(spec.get('reference'))} → query {_side_text(spec.get('query'))}")
        done = next((e for e in t["methods"].values() if e.get("status") == "ok"), None)
        if done:
            n_ref, n_query = round(float(np.mean(done["n_ref"]))), sum(done["n_query"])
            cells = (f"{n_query} cells, each predicted once by a model of ~{n_ref} cells"
                     if spec.get("kind") == "cv" else f"{n_ref} reference / {n_query} query cells")
            lines[-1] += f": {cells}, reference types {', '.join(done['reference_types'])}"
        if done and spec.get("kind") == "cross" and (done.get("n_genes") or [None])[0]:
            which = "the reference genes the query has" if spec.get("genes") == "shared" else "the reference's genes"
            lines[-1] += f"; every method trained on {which} ({done['n_genes'][0]:,})"
        if spec.get("unseen"):
            lines[-1] += f"; unseen in the query: {', '.join(spec['unseen'])}"
        if spec.get("label_map_name"):
            lines[-1] += f"; labels harmonised with the `{spec['label_map_name']}` table"
        lines[-1] += "."
        lines.append("")
        unseen = bool(spec.get("unseen"))
        head = ["method", "macro-F1", "accuracy", "median F1 / % unassigned"]
        head += ["unseen AUROC", "unseen → Unassigned"] if unseen else []
        head += ["train s", "predict s", "train MiB", "predict MiB"]
        lines += ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
        for m in methods:
            e = t["methods"].get(m)
            if e is None:
                continue
            if e["status"] != "ok":
                lines.append(f"| {m} | {e['status']}: {e.get('note', '')} |" + " |" * (len(head) - 2))
                continue
            r = e["metrics"]
            row = [m, fmt(r["macro_f1"]), fmt(r["accuracy"]),
                   f"{fmt(r['median_f1'])} / {fmt(r['pct_unassigned'], 1)}%"]
            if unseen:
                auc = fmt(r.get("unseen_auroc"), 4)
                extra = _extra_aurocs(r, 4)
                if extra:
                    auc += f" ({extra})"
                row += [auc, "never rejects" if m == "celltypist" else
                        f"{fmt(100 * r['unseen_unassigned'], 1)}%" if r.get("unseen_unassigned") is not None else "–"]
            mem = e.get("memory_mib", {})
            row += [_seconds(e["fit_seconds"]), _seconds(e["predict_seconds"]), _mib(mem, "fit"), _mib(mem, "predict")]
            lines.append("| " + " | ".join(row) + " |")
        if spec.get("kind") == "cv":
            folds = {m: e["per_fold"] for m, e in t["methods"].items() if e.get("status") == "ok" and "per_fold" in e}
            if folds:
                lines += ["", "Per-fold macro-F1: " + "; ".join(
                    f"{m} {', '.join(fmt(f['macro_f1']) for f in v)}" for m, v in folds.items())]
        pics = [m for m in OURS if t["methods"].get(m, {}).get("status") == "ok"]
        if pics:
            lines += ["", f"Confusion of {' and '.join(pics)}: `confusion_{name}.png`."]
        for m in pics:
            splits = t["methods"][m].get("svm_inputs") or []
            on_genes = [", ".join(k for k, v in (f or {}).items() if v == "genes") or "no type" for f in splits]
            if len(on_genes) > 1:
                on_genes = [f"fold {i + 1}: {g}" for i, g in enumerate(on_genes)]
            inputs = [v for f in splits for v in (f or {}).values()]
            if inputs and all(v == "encoder+genes" for v in inputs):
                lines += ["", f"{m}'s every type pools an SVM on its encoder's output and one on the genes "
                          "(`gene_svm='pool'`)."]
            elif on_genes:
                lines += ["", f"{m}'s SVM on the genes (`gene_svm`) for: {'; '.join(on_genes)} (the others on the "
                          "encoder)."]
        lines.append("")
    lines += ["## Methods", ""]
    impl = {}
    for t in tasks.values():
        for m, e in t["methods"].items():
            if e.get("implementation"):
                impl.setdefault(m, e["implementation"])
            elif e.get("status") == "not available":
                impl.setdefault(m, f"not available: {e.get('note', '')}")
    lines += [f"- **{m}**: {impl[m]}" for m in methods if m in impl]
    lines += ["- Confidence scores for the AUROC: ours `conf_score` (GsRCL also `max_raw_score`, the highest "
              "un-normalised one-vs-rest probability; both also `novelty_score`, `unseen_score_cell` = novelty_score / "
              "conf_score and `unseen_score`, its mean over each cell's 15 nearest query cells, negated); svm the "
              "highest decision value; svm_rejection the highest calibrated probability; celltypist the highest "
              "one-vs-rest probability; for the baselines also that confidence averaged over the same query "
              "neighbourhoods (`conf_neighbourhood`).",
              "- Cut-offs: ours p = 0.5 (Unassigned when the reported probability is <= p); svm_rejection 0.7; "
              "svm and celltypist (best match) never reject.", ""]
    lines += ["## Notes", "",
              f"- Memory: {results.get('memory', MEMORY_NOTE)}.",
              "- Timings are wall-clock seconds of one process on a machine shared with other work; compare them "
              "within a run, not across machines.",
              "- Protocol: Abdelaal et al. 2019 (Genome Biol 20:194). Every method is trained on the reference's "
              "genes and the query is aligned to them (absent genes are zero; celltypist leaves them out of its "
              "decision, as celltypist.annotate does). Cross-validation scores pool the "
              "folds' predictions.", ""]
    return "\n".join(lines)


def bar_figure(results: dict, path: Path) -> None:
    """Write ``accuracy.png``: macro-F1 of every method on every task, with each task's target.

    Parameters
    ----------
    results : dict
        The results of a run.
    path : Path
        The PNG file, written atomically.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    tasks = list(results["tasks"])
    methods = [m for m in METHOD_NAMES if any(results["tasks"][t]["methods"].get(m, {}).get("status") == "ok"
                                              for t in tasks)]
    fig, ax = plt.subplots(figsize=(max(6.0, 1.3 * len(tasks) + 2), 4.2))
    width = 0.8 / max(1, len(methods))
    colours = plt.get_cmap("tab10")
    for j, m in enumerate(methods):
        vals = [results["tasks"][t]["methods"].get(m, {}) for t in tasks]
        ys = [v["metrics"]["macro_f1"] if v.get("status") == "ok" and v["metrics"]["macro_f1"] is not None
              else np.nan for v in vals]
        ax.bar(np.arange(len(tasks)) + (j - (len(methods) - 1) / 2) * width, ys, width, label=m,
               color=colours(METHOD_NAMES.index(m)))  # a method keeps its colour whichever ran
    targets = [target_f1(results["tasks"][t]) for t in tasks]
    label = f"target: best baseline - {TARGET_MARGIN}"
    for i, target in enumerate(targets):
        if target is not None:
            ax.hlines(target, i - 0.45, i + 0.45, colors="black", linestyles="--", linewidth=1, label=label)
            label = None  # one legend entry
    ax.set_xticks(np.arange(len(tasks)))
    ax.set_xticklabels(tasks, rotation=30, ha="right", fontsize=8)
    # the axis starts just below the lowest bar: the differences that matter are a few hundredths
    shown = [h.get_height() for h in ax.patches if np.isfinite(h.get_height())] + [t for t in targets if t]
    low = min(shown, default=0.0)
    ax.set_ylim(max(0.0, np.floor((low - 0.02) * 20) / 20), 1.005)
    ax.set_ylabel("macro-F1 over known types")
    ax.legend(fontsize=8, ncol=min(6, max(1, len(methods) + 1)), loc="lower center", bbox_to_anchor=(0.5, 1.0),
              frameon=False)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=130))
    plt.close(fig)


def confusion_figure(name: str, task: dict, path: Path) -> bool:
    """Write the confusion tables of GsRCL and AF-RCL on one task, side by side (row fractions as colour).

    Parameters
    ----------
    name : str
        The task's name (the title).
    task : dict
        One task of the results.
    path : Path
        The PNG file, written atomically.

    Returns
    -------
    bool
        False (nothing written) when neither of ours ran on the task.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    panels = [(m, task["methods"][m]) for m in OURS if task["methods"].get(m, {}).get("status") == "ok"]
    if not panels:
        return False
    first = panels[0][1]["confusion"]
    fig, axes = plt.subplots(1, len(panels), figsize=(0.55 * len(first["cols"]) * len(panels) + 2.5 * len(panels),
                                                       0.45 * len(first["rows"]) + 2.2), squeeze=False)
    for ax, (m, e) in zip(axes[0], panels):
        c = e["confusion"]
        counts = np.asarray(c["counts"], float)
        frac = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
        ax.imshow(frac, cmap="Blues", vmin=0, vmax=1, aspect="auto")
        for i in range(counts.shape[0]):
            for j in range(counts.shape[1]):
                if counts[i, j]:
                    ax.text(j, i, f"{int(counts[i, j])}", ha="center", va="center", fontsize=7,
                            color="white" if frac[i, j] > 0.6 else "black")
        n_known = sum(r in e["reference_types"] for r in c["rows"])
        if n_known < len(c["rows"]):  # rows below the line are the unseen types
            ax.axhline(n_known - 0.5, color="black", lw=0.8)
        ax.set_xticks(range(len(c["cols"])))
        ax.set_xticklabels(c["cols"], rotation=45, ha="right", fontsize=7)
        ax.set_yticks(range(len(c["rows"])))
        ax.set_yticklabels(c["rows"], fontsize=7)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(f"{m}: macro-F1 {fmt(e['metrics']['macro_f1'])}", fontsize=9)
    fig.suptitle(name, fontsize=10)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=130))
    plt.close(fig)
    return True


def write_report(results: dict[str, Any], out: str | os.PathLike, config: Config | None = None) -> None:
    """Write ``accuracy.json``, ``accuracy.md``, ``accuracy.png`` and ``confusion_<task>.png`` in ``out``.

    Parameters
    ----------
    results : dict
        The results of a run.
    out : path-like
        An existing folder; its files of those names are replaced.
    config : Config, optional
        The run's config: a confusion picture left there by an earlier run of one of its tasks, on which neither
        of ours ran now, is removed.
    """
    out = Path(out)
    write_json(out / RESULTS_JSON, results)
    write_text(out / RESULTS_MD, markdown(results))
    bar_figure(results, out / FIGURE)
    names = set(config.tasks) if config else set()
    for name, task in results["tasks"].items():
        if not confusion_figure(name, task, out / f"confusion_{name}.png"):
            names.add(name)
        else:
            names.discard(name)
    for name in names:
        if name not in results["tasks"] or not any(results["tasks"][name]["methods"].get(m, {}).get("status") == "ok"
                                                   for m in OURS):
            (out / f"confusion_{name}.png").unlink(missing_ok=True)
