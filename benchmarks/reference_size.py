"""Reference size on disk against the effect of storing its large arrays in lower precision (issue 24, part 4).

For each reference given (a folder saved by ``gsrcl train``, or by ``benchmarks/train_profile.py``, whose folder
names ``TASK_METHOD`` tell the task whose query is used), every storage variant below is applied to its arrays,
the model is rebuilt from them and predicts the task's query (``gsrcl.annotate``, default settings); reported:
the size of ``arrays.npz`` (plain and deflate-compressed), the seconds to read it back, and the largest absolute
difference of any probability and the share of labels changed against the reference as stored in float32.

Variants (what is stored in float16 or float32; everything else is kept as trained):

- ``float32``: the weights as trained, the SVMs' support vectors in float64 (before this change);
- ``weights16``: what ``gsrcl train`` stores (`gsrcl.reference.half_precision`): the networks' weight matrices
  in float16, the support vectors in float32 where that is exact, the rest as trained;
- ``weights16+sv16``: both in float16;
- ``weights8+sv16``: the weight matrices as 8-bit codes with a float32 scale per row (w ≈ code × scale),
  support vectors in float16.

    OMP_NUM_THREADS=1 python benchmarks/reference_size.py benchmarks/scratch/profile_refs/*
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from harness.files import write_json  # noqa: E402  (benchmarks/ is on the path)
RESULT = ROOT / "benchmarks" / "results" / "reference_size.json"


def is_weight(key: str, a: np.ndarray) -> bool:
    return a.ndim == 2 and ".linear" in f".{key}" and key.endswith(".weight")


def is_support(key: str, a: np.ndarray) -> bool:
    return a.ndim == 2 and key.endswith("support_vectors")


def int8_rows(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric 8-bit codes of each row and the row's scale (max |w| / 127)."""
    scale = np.abs(a).max(axis=1, keepdims=True).astype(np.float32) / 127
    scale[scale == 0] = 1
    return np.round(a / scale).astype(np.int8), scale


VARIANTS = {
    "float32": lambda k, a: a,
    "weights16": "adopted",
    "weights16+sv16": lambda k, a: a.astype(np.float16) if is_weight(k, a) or is_support(k, a) else a,
    "weights8+sv16": "int8",  # 8-bit codes with a float32 scale per row; stored as two arrays
}


def stored(name: str, arrays: dict) -> tuple[dict, dict]:
    """(what is written, what the model is rebuilt from) for a variant."""
    convert = VARIANTS[name]
    if convert == "adopted":
        from gsrcl.reference import half_precision

        out = half_precision(arrays)
        return out, out
    if convert != "int8":
        out = {k: convert(k, v) for k, v in arrays.items()}
        return out, out
    written, used = {}, {}
    for k, v in arrays.items():
        if is_weight(k, v):
            q, scale = int8_rows(v)
            written[k + ".q"], written[k + ".scale"] = q, scale
            used[k] = (q * scale).astype(np.float32)
        else:
            written[k] = used[k] = v.astype(np.float16) if is_support(k, v) else v
    return written, used


def npz_bytes(arrays: dict, compressed: bool) -> tuple[int, float]:
    buf = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buf, **arrays)
    size = buf.tell()
    buf.seek(0)
    t0 = time.perf_counter()
    with np.load(buf, allow_pickle=False) as z:
        _ = {k: z[k] for k in z.files}
    return size, time.perf_counter() - t0


def query_for(task_name: str, genes: list[str]):
    from harness.inputs import align_to
    from harness.tasks import load_config, task_splits

    import anndata as ad

    config = load_config()
    _ref, query = task_splits(config.tasks[task_name], config.data_dir)[0]
    X = align_to(query.X, query.var, genes)
    return ad.AnnData(X=X, obs=query.obs[[]].copy(), var={"gene": genes}).copy()


def main(argv: list[str] | None = None) -> int:
    import gsrcl
    from gsrcl import Reference

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("refs", nargs="+", type=Path)
    p.add_argument("--task", help="the task whose query is used for a reference whose name does not say it")
    p.add_argument("--query", type=Path, help="an h5ad query for the references whose name names no task (e.g. the "
                   "query.h5ad that 'gsrcl demo' writes)")
    p.add_argument("--out", type=Path, default=RESULT)
    a = p.parse_args(argv)
    rows = []
    for path in a.refs:
        ref = Reference.load(path)
        task = next((t for t in ("pbmc3k_to_kang", "mouse_immune_cv", "kang_donors") if path.name.startswith(t)), a.task)
        if task:
            query = query_for(task, ref.genes)
            query.var_names = ref.genes
        else:
            import anndata as ad

            query = ad.read_h5ad(a.query) if a.query else None
        base = None
        for name in VARIANTS:
            written, arrays = stored(name, ref.arrays)
            row = {"reference": path.name, "method": ref.method, "variant": name, "task": task}
            row["bytes"], row["seconds_read"] = npz_bytes(written, False)
            row["bytes_compressed"], row["seconds_read_compressed"] = npz_bytes(written, True)
            if query is not None:
                variant = Reference(manifest=ref.manifest, arrays=arrays)
                out = gsrcl.annotate(query, variant, plot=False, quiet=True)
                proba = np.asarray(out.obsm["probabilities"], dtype=np.float64)
                labels = out.obs["predicted_labels"].astype(str).to_numpy()
                if base is None:
                    base = proba, labels
                row["max_abs_diff"] = float(np.abs(proba - base[0]).max())
                row["labels_changed"] = float((labels != base[1]).mean())
                row["cells"] = int(query.n_obs)
            rows.append(row)
            print(json.dumps(row), flush=True)
    lines = ["| reference | variant | MB | MB compressed | read s (compressed) | max abs diff of p | labels changed |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['reference']} | {r['variant']} | {r['bytes'] / 1e6:.0f} | {r['bytes_compressed'] / 1e6:.0f} | "
                     f"{r['seconds_read']:.2f} ({r['seconds_read_compressed']:.2f}) | "
                     f"{r.get('max_abs_diff', float('nan')):.1e} | {r.get('labels_changed', float('nan')):.4f} |")
    md = "\n".join(lines)
    print(md)
    result = {"command": "benchmarks/reference_size.py " + " ".join(map(str, argv or sys.argv[1:])), "rows": rows,
              "table": md}
    write_json(a.out, result)
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
