"""A reference's manifest as text a person reads: one line (`one_line`) or a page (`describe`).

Both read the manifest only, never the arrays, so ``gsrcl references`` and ``gsrcl references show`` are quick
and import no model code. Every section is optional: a manifest that lacks one (an older reference) is
described without it. The sections that only describe the reference (training, validation) are not covered by
the manifest's checksum, so what they hold is shown as it is, never trusted to have a type.
"""

from __future__ import annotations

from typing import Any

GENES_SHOWN = 10  # genes named by `describe` unless all are asked for


def one_line(manifest: dict[str, Any]) -> str:
    """Name, method, preset, number of cell types and genes, and creation date, in one line.

    Parameters
    ----------
    manifest : dict
        A reference's manifest (``Reference.manifest`` or ``gsrcl.reference.read_manifest``).

    Returns
    -------
    str
        For example ``Reference('pbmc', method='afrcl', preset='default', 10 cell types, 120 genes,
        created 2026-12-07T06:30:21+00:00)``.
    """
    return (f"Reference({manifest.get('name', '')!r}, method={manifest.get('method', '')!r}, "
            f"preset={manifest.get('preset', '')!r}, {len(manifest.get('cell_types', []))} cell types, "
            f"{len(manifest.get('genes', []))} genes, created {manifest.get('created', 'unknown')})")


def describe(manifest: dict[str, Any], *, all_genes: bool = False) -> str:
    """The reference in detail: training cells per type, validation scores, genes, value handling, novelty
    score, creation and versions.

    Parameters
    ----------
    manifest : dict
        A reference's manifest.
    all_genes : bool
        Name every gene, not only the first `GENES_SHOWN`.

    Returns
    -------
    str
        Several lines, without a trailing newline.
    """
    lines = [_heading(manifest)]
    lines += _imported(_dict(manifest.get("imported")))
    lines += _training(_dict(manifest.get("training")))
    lines += _validation(manifest)
    lines += _cell_types(manifest)
    lines += _genes(manifest, all_genes)
    lines += _values(_dict(manifest.get("values")))
    lines += _novelty(_dict(manifest.get("novelty")))
    return "\n".join(lines)


# --- sections ---------------------------------------------------------------------------------------------
def _heading(m: dict[str, Any]) -> str:
    versions = dict(_dict(m.get("versions")))
    made_by = f"gsrcl {versions.pop('gsrcl')}" if "gsrcl" in versions else "gsrcl"
    others = ", ".join(f"{k} {v}" for k, v in versions.items())
    return (f"{m.get('name', '')}: {m.get('method', '')} ({m.get('preset', '')} preset), created "
            f"{m.get('created', 'unknown')} by {made_by}" + (f" ({others})" if others else ""))


def _imported(i: dict[str, Any]) -> list[str]:
    """Where an imported reference came from (`gsrcl.original.importer`)."""
    if not i:
        return []
    source = _dict(i.get("from"))
    where = source.get("url") or source.get("archive") or source.get("source") or "?"
    lines = [f"imported from the original {i.get('method', '?')} reference {i.get('original_name', '?')!r} ({where})"]
    files = _dict(i.get("files"))
    if files:
        lines.append(f"  {len(files)} original files, SHA-256 recorded: " + ", ".join(list(files)[:4])
                     + (", ..." if len(files) > 4 else ""))
    versions = sorted({str(v) for v in _dict(i.get("svm_versions")).values()})
    if versions:
        lines.append(f"  SVMs pickled by scikit-learn {', '.join(versions)}")
    return lines


def _training(t: dict[str, Any]) -> list[str]:
    if not t:
        return []
    parts = [f"trained on {_n(t.get('cells'))} cells"]
    if "labels" in t:
        parts.append(f"labels {t['labels']}")
    if "cells_train" in t:
        parts.append(f"{_n(t['cells_train'])} for training, {_n(t.get('cells_validation'))} for validation")
    if "seed" in t:
        parts.append(f"seed {t['seed']}")
    lines = ["; ".join(parts)]
    dropped = _dict(t.get("dropped_classes"))
    if dropped:
        lines.append("  left out (too few cells): " + ", ".join(f"{k} ({v})" for k, v in dropped.items()))
    return lines


def _validation(m: dict[str, Any]) -> list[str]:
    v = _dict(m.get("validation"))
    if not v:
        return []
    metric = str(v.get("metric", "score")).upper()
    line = f"validation {metric}: {_score(v.get('score'))}"
    if "cells" in v:
        line += f" on {_n(v['cells'])} held-out cells"
    if "selection" in v:
        line += f" (selection: {v['selection']})"
    lines = [line]
    members = v.get("members") if isinstance(v.get("members"), list) else []
    if len(members) > 1:
        lines.append(f"  ensemble of {len(members)} models, each on its own split: {metric} "
                     + ", ".join(_score(_dict(r).get("score")) for r in members) + "; the table shows the first")
    history = _dict(_dict(m.get("training")).get("history")).get("validation")
    checkpoints = [h for h in (history if isinstance(history, list) else []) if isinstance(h, list) and len(h) >= 2]
    if checkpoints:
        per_type = any(isinstance(h[1], dict) for h in checkpoints)  # [epoch, {type: score}, mean]
        what = f"mean {metric} over the types" if per_type else metric
        lines.append(f"  {what} by checkpoint (epoch: score): " + ", ".join(_checkpoint(h) for h in checkpoints))
    if "best_epoch" in v:
        kept = "the mean of the checkpoints" if v["best_epoch"] == "mean" else f"epoch {v['best_epoch']}"
        lines.append(f"  kept: {kept}")
    svm = v.get("svm")
    if isinstance(svm, dict) and "cv_mcc" in svm:
        lines.append(f"  SVM: C {svm.get('C')}, gamma {svm.get('gamma')}, cross-validated MCC {_score(svm['cv_mcc'])}")
    return lines


def _checkpoint(h: list) -> str:
    epoch, score = h[0], h[-1]  # [epoch, score] or [epoch, {task: score}, mean score]
    name = "mean" if epoch == "mean" else str(epoch)
    return f"{name}: {_score(score)}"


def _cell_types(m: dict[str, Any]) -> list[str]:
    types = list(m.get("cell_types") or [])
    t = _dict(m.get("training"))
    train = _dict(t.get("cells_per_type"))
    val = _dict(t.get("validation_cells_per_type"))
    validation = _dict(m.get("validation"))
    tasks = _dict(validation.get("tasks"))
    metric = str(validation.get("metric", "score")).upper()
    if not train and not tasks:  # e.g. an imported reference: no record of its training cells
        return [f"cell types ({len(types)}): " + ", ".join(types)]
    cols = ["cell type", "training", "validation"]
    if tasks:
        cols += [f"validation {metric}", "input", "epoch"]
    rows = []
    for name in types:
        total, held = train.get(name), val.get(name, 0)
        counted = isinstance(total, int) and isinstance(held, int)
        row = [name, _n(total - held) if counted else "", _n(held) if total is not None else ""]
        if tasks:
            task = _dict(tasks.get(name))
            row += [_score(task.get("score")), str(task.get("input", "")), str(task.get("epoch", ""))]
        rows.append(row)
    widths = [max(len(str(r[i])) for r in [cols, *rows]) for i in range(len(cols))]

    def fmt(row: list) -> str:  # the names left-aligned, the rest right-aligned
        cells = (str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in enumerate(zip(row, widths)))
        return ("  " + "  ".join(cells)).rstrip()

    lines = [f"cell types ({len(types)}): cells used for training and held out for validation"
             + (f"; each type's own classifier: its validation {metric} (n/a: no cells held out), its input "
                "and the epoch of its encoder" if tasks else ""), fmt(cols)]
    lines += [fmt(r) for r in rows]
    return lines


def _genes(m: dict[str, Any], all_genes: bool) -> list[str]:
    genes = list(m.get("genes") or [])
    shown = genes if all_genes or len(genes) <= GENES_SHOWN else genes[:GENES_SHOWN]
    more = "" if len(shown) == len(genes) else f", ... ({len(genes) - len(shown)} more)"
    lines = [f"genes ({len(genes)}, in model order): " + ", ".join(shown) + more]
    selection = _dict(m.get("training")).get("gene_selection")
    if isinstance(selection, dict):
        lines.append(f"  chosen by {selection.get('method', '?')}: {_n(selection.get('n'))} "
                     f"of {_n(selection.get('of'))}")
    return lines


def _values(v: dict[str, Any]) -> list[str]:
    if not v:
        return []
    line = f"values: expects {v.get('expected', '?')}"
    if "transform" in v:
        line += f", transform {v['transform']}"
    if "library_size" in v:
        line += f", library size {_n(v['library_size'])}"
    lines = [line]
    if v.get("message"):
        lines.append(f"  {v['message']}")
    return lines


def _novelty(n: dict[str, Any] | None) -> list[str]:
    if not n:
        return ["novelty score: none (made without one)"]
    parts = [f"calibrated {n['calibration']}" if "calibration" in n else "stored"]
    if "n_components" in n:
        parts.append(f"{n['n_components']} components")
    if "input" in n:
        parts.append(f"on {n['input']}")
    return ["novelty score: " + "; ".join(parts)]


# --- numbers --------------------------------------------------------------------------------------------
def _dict(value) -> dict:
    """``value`` when it is a dict, else an empty one (a manifest section of another type is left out)."""
    return value if isinstance(value, dict) else {}


def _n(value) -> str:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else str(value)


def _score(value) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return f"{value:.3f}"
    return str(value)
