"""``gsrcl predict``'s files: ``predict_files`` annotates a query file and writes four outputs into OUT.

``probabilities.csv`` (barcode, one column per reference type, ``Identified as``), ``tsne.svg``, ``legend.txt``
(label, colour, cells) and ``annotated.h5ad`` (the query with the annotations of `gsrcl.annotation.annotations`;
its X is written block by block as prediction reads it). They are written into one hidden staging folder in OUT
(``.gsrcl.stage-PID.HOST-*``) and moved into OUT together, holding a lock on OUT (`gsrcl.atomic.StagedFiles`):
on any failure, a full disk included, the staging folder is removed and OUT is left as it was. Under the lock the
run checks again that OUT holds no outputs (without ``overwrite``): of two runs into one OUT, the second to finish
fails with `OutputError` and writes nothing, instead of replacing the first one's files. OUT then holds the four
files of one run, never a mix; a run killed mid-commit is finished or undone by the next run into OUT.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .annotation import annotations, merge_obs
from .atomic import StagedFiles, clear_stale, disk_full_as_error, held_stderr
from .cutoff import UNASSIGNED, novelty_threshold
from .errors import MissingPathError, OutputError
from .neighbours import N_NEIGHBORS
from .plot import legend_text, palette, plot_tsne, tsne_of, tsne_title
from .predict import DEFAULT_BLOCK_SIZE, TSNE_MAX_CELLS, Prediction, Settings, load_reference, predict, prepare

log = logging.getLogger("gsrcl.outputs")

PROBABILITIES = "probabilities.csv"
TSNE = "tsne.svg"
LEGEND = "legend.txt"
ANNOTATED = "annotated.h5ad"
OUTPUTS = (PROBABILITIES, TSNE, LEGEND, ANNOTATED)

__all__ = ["OUTPUTS", "check_outputs", "output_paths", "predict_files", "write_prediction_files"]


class H5adXWriter:
    """Writes X of ``annotated.h5ad`` as a CSR group block by block (anndata's on-disk encoding)."""

    def __init__(self, path: Path, n_obs: int, n_vars: int):
        import h5py

        self.f = h5py.File(path, "w")
        self.n_obs, self.n_vars = n_obs, n_vars
        g = self.f.create_group("X")
        g.attrs["encoding-type"] = "csr_matrix"
        g.attrs["encoding-version"] = "0.1.0"
        g.attrs["shape"] = np.array([n_obs, n_vars], dtype=np.int64)
        idx = np.int32 if n_vars < 2**31 else np.int64
        self.data = g.create_dataset("data", shape=(0,), maxshape=(None,), dtype=np.float32, chunks=(1 << 18,))
        self.indices = g.create_dataset("indices", shape=(0,), maxshape=(None,), dtype=idx, chunks=(1 << 18,))
        self.indptr = g.create_dataset("indptr", shape=(n_obs + 1,), dtype=np.int64)
        self.indptr[0] = 0
        self.nnz = 0
        self.rows = 0

    def add(self, start: int, block: sp.csr_matrix) -> None:
        with held_stderr():
            self._add(start, block)

    def _add(self, start: int, block: sp.csr_matrix) -> None:
        if start != self.rows:
            raise RuntimeError(f"blocks out of order: expected row {self.rows}, got {start}")
        block = block.tocsr()
        k = int(block.indptr[-1])
        lo, hi = self.nnz, self.nnz + k
        if k:
            self.data.resize((hi,))
            self.indices.resize((hi,))
            self.data[lo:hi] = block.data[:k].astype(np.float32, copy=False)
            self.indices[lo:hi] = block.indices[:k]
        r = block.shape[0]
        self.indptr[self.rows + 1 : self.rows + r + 1] = block.indptr[1:].astype(np.int64) + lo
        self.nnz, self.rows = hi, self.rows + r

    def finish(self, obs: pd.DataFrame, var: pd.DataFrame, obsm: dict, uns: dict) -> None:
        with held_stderr():
            self._finish(obs, var, obsm, uns)

    def _finish(self, obs: pd.DataFrame, var: pd.DataFrame, obsm: dict, uns: dict) -> None:
        from anndata.io import write_elem

        if self.rows != self.n_obs:
            raise RuntimeError(f"wrote {self.rows} rows of {self.n_obs}")
        f = self.f
        f.attrs["encoding-type"] = "anndata"
        f.attrs["encoding-version"] = "0.1.0"
        write_elem(f, "obs", obs)
        write_elem(f, "var", var)
        write_elem(f, "obsm", obsm)
        write_elem(f, "uns", uns)
        for key in ("varm", "obsp", "varp", "layers"):
            write_elem(f, key, {})
        f.close()

    def close(self) -> None:
        try:
            with held_stderr():
                self.f.close()
        except Exception:  # noqa: BLE001 - already closed or broken; the temp file is removed anyway
            pass


def _verify_record(path: Path) -> dict | None:
    """``uns['gsrcl_verify']`` of a verified.h5ad, without reading the matrix; None for any other file."""
    import h5py

    from .verify import UNS_KEY as VERIFY_KEY

    try:
        if path.is_dir() or not h5py.is_hdf5(path):
            return None
        from anndata.io import read_elem

        with h5py.File(path, "r") as f:
            key = f"uns/{VERIFY_KEY}"
            return dict(read_elem(f[key])) if key in f else None
    except (OSError, KeyError, ValueError, TypeError):
        return None


# A text cell starting with one of these opens as a formula in a spreadsheet (CSV injection): OWASP's advice is to
# prefix it with a single quote, which spreadsheets show as text. Only probabilities.csv gets it; annotated.h5ad
# and legend.txt keep the names as they are.
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _cell_text(values) -> list[str]:
    """Names as written to probabilities.csv: one starting with a `FORMULA_START` character gets a leading ``'``."""
    return ["'" + v if v.startswith(FORMULA_START) else v for v in map(str, values)]


def _csv(path: Path, pred: Prediction) -> None:
    """``probabilities.csv``: barcode, one column per reference type, ``Identified as``; barcodes, type names and
    labels that a spreadsheet would read as a formula are prefixed with ``'`` (`FORMULA_START`)."""
    df = pd.DataFrame(pred.proba, index=pd.Index(_cell_text(pred.obs_names), name="barcode"),
                      columns=_cell_text(pred.cell_types))
    df["Identified as"] = _cell_text(pred.labels)
    if pred.majority is not None:
        df["majority_voting"] = _cell_text(pred.majority)
    df.to_csv(path, float_format="%.9g", chunksize=100_000)


def output_paths(out_dir: str | os.PathLike) -> dict[str, Path]:
    """The four outputs' paths in ``out_dir``, by file name."""
    return {name: Path(out_dir) / name for name in OUTPUTS}


def check_outputs(out_dir: str | os.PathLike, overwrite: bool) -> None:
    """Refuse an OUT that holds any of the outputs already, unless ``overwrite``.

    Raises
    ------
    OutputError
        Naming the files found.
    """
    existing = [p for p in output_paths(out_dir).values() if p.exists()]
    if existing and not overwrite:
        names = ", ".join(p.name for p in existing)
        raise OutputError(f"{out_dir} already holds {names}: pass --overwrite to replace them, or choose another -o")


def _query_path(input_path, out_dir: Path) -> Path:
    """The query file: ``input_path``, or ``out_dir/verified.h5ad`` when it is None; never one of the outputs."""
    from .verify import VERIFIED

    if input_path is None:
        input_path = out_dir / VERIFIED
        if not input_path.exists():
            raise MissingPathError(
                f"no -i given and {input_path} does not exist: run 'gsrcl verify -i QUERY -o {out_dir}' first, "
                "or pass the query with -i"
            )
    input_path = Path(input_path)
    if not input_path.exists():
        raise MissingPathError(f"{input_path} does not exist: check the path given with -i")
    if input_path.resolve() in {q.resolve() for q in output_paths(out_dir).values()}:
        raise OutputError(f"the input {input_path} is one of the outputs: write them elsewhere with -o")
    return input_path


def predict_files(
    input_path: str | os.PathLike | None,
    reference,
    out_dir: str | os.PathLike = ".",
    *,
    p: float = 0.5,
    raw_cutoff: bool = False,
    novelty_cutoff: float | None = None,
    neighbours: int = N_NEIGHBORS,
    majority_voting: bool = False,
    log_mode: str = "auto",
    block_size: int = DEFAULT_BLOCK_SIZE,
    overwrite: bool = False,
    plot: bool = True,
    tsne_cells: int = TSNE_MAX_CELLS,
    seed: int = 0,
    quiet: bool = False,
    insert_prob: bool = False,
    reader_kwargs: dict | None = None,
    client=None,
) -> dict[str, Any]:
    """Annotate a query file and write the four outputs into ``out_dir`` (``gsrcl predict``).

    Parameters
    ----------
    input_path : path-like or None
        The query: a raw file in any format ``gsrcl.read_query`` reads, or a verified.h5ad; None:
        ``out_dir/verified.h5ad``.
    reference : Reference or path-like
        Loaded only after ``out_dir`` has been checked.
    out_dir : path-like
        Created when missing.
    p, raw_cutoff, novelty_cutoff, neighbours, majority_voting, block_size, tsne_cells, seed, quiet
        As in ``gsrcl.annotate``; with ``majority_voting`` probabilities.csv has a ``majority_voting`` column.
    log_mode : {"auto", "1", "0"}
        ``log`` of ``gsrcl.annotate``.
    overwrite : bool
        Replace outputs that exist in ``out_dir``.
    plot : bool
        Compute the t-SNE and write ``tsne.svg``.
    insert_prob : bool
        Also write ``obs['prob_<type>']`` into ``annotated.h5ad`` (`gsrcl.annotation.prob_column`).
    reader_kwargs : dict, optional
        For ``gsrcl.io.open_query`` (transpose, mat, obs, var, layer, use_raw).
    client : dask.distributed.Client, optional
        Predict on this Dask cluster (`gsrcl.distributed`): the same outputs, the blocks computed by its
        workers, which read the query and the reference from their paths (and ``out_dir``, where a query that
        cannot be read by rows is converted once): all must be on storage every worker sees.

    Returns
    -------
    dict
        ``paths`` (written files by name), ``n_cells``, ``counts`` (cells per label, Unassigned last),
        ``method``, ``reference``, ``seconds_predict``, ``seconds_tsne``, ``prediction`` (the `Prediction`).

    Raises
    ------
    ValueError
        For a setting out of range.
    OutputError
        When ``out_dir`` holds outputs (without ``overwrite``) or cannot be written.
    MissingPathError, GeneOverlapError, ValuesError, InvalidReferenceError, ...
        As the reader and `gsrcl.predict.prepare` raise them; nothing is written then.
    """
    settings = Settings.checked(p=p, raw_cutoff=raw_cutoff, novelty_cutoff=novelty_cutoff, neighbours=neighbours,
                                log=log_mode, block_size=block_size, tsne_cells=tsne_cells, seed=seed, quiet=quiet,
                                majority_voting=majority_voting)
    return write_prediction_files(input_path, reference, out_dir, settings, overwrite=overwrite, plot=plot,
                                  insert_prob=insert_prob, reader_kwargs=reader_kwargs, client=client)


def write_prediction_files(input_path, reference, out_dir: str | os.PathLike, settings: Settings, *,
                           overwrite: bool = False, plot: bool = True, insert_prob: bool = False,
                           reader_kwargs: dict | None = None, client=None) -> dict[str, Any]:
    """`predict_files` with its settings checked already (the command line checks them as it parses them);
    ``client`` (a ``dask.distributed.Client``) as in `predict_files`.

    Raises
    ------
    DiskFullError
        When the disk holding ``out_dir`` fills up; nothing is left behind.
    SchedulerError
        When the Dask cluster fails; nothing is written.
    """
    from .io import open_query

    out_dir = Path(out_dir)
    clear_stale(out_dir)  # a commit a killed run began is finished or undone before OUT is looked at
    check_outputs(out_dir, overwrite)  # before the reference is even read
    input_path = _query_path(input_path, out_dir)
    t0 = time.perf_counter()
    ref = load_reference(reference)
    novelty_max = novelty_threshold(settings.novelty_cutoff, ref)
    source = open_query(input_path, **(reader_kwargs or {}))
    verify_record = _verify_record(input_path)
    if verify_record is not None:
        from .verify import describe

        log.info("verified file for reference %r: %s", verify_record.get("reference", "?"), describe(verify_record))
    prepared = prepare(source, ref, settings.log, verify_record)  # the checks that need no prediction: no file yet

    def still_free() -> None:  # under OUT's lock: another run may have written there since `check_outputs`
        if not overwrite and any(os.path.lexists(p) for p in output_paths(out_dir).values()):
            raise OutputError(f"another run wrote its outputs to {out_dir} while this one ran, so this run's were "
                              "not written: choose another -o, or pass --overwrite to replace them")

    staging = StagedFiles(out_dir, OUTPUTS)
    writer = None

    def discard() -> None:  # the files first: closing a writer that failed on a full disk may fail again
        staging.discard()
        if writer is not None:
            writer.close()

    with disk_full_as_error(out_dir, cleanup=discard):
        staging.open()
        writer = H5adXWriter(staging[ANNOTATED], int(source.n_obs), len(source.var))
        if client is None:
            pred = predict(source, ref, prepared, settings, novelty_max=novelty_max, embed=plot, on_block=writer.add)
        else:
            from .distributed import predict_on_cluster

            pred = predict_on_cluster(client, source, ref, prepared, settings, novelty_max=novelty_max, embed=plot,
                                      on_block=writer.add, reader_kwargs=reader_kwargs, scratch=staging.dir)
        t_pred = time.perf_counter() - t0
        t1 = time.perf_counter()
        coords, tsne = (tsne_of(pred.embedding, len(pred.proba), seed=settings.seed) if plot
                        else (None, {"drawn": False, "note": "not requested (--no-plot)"}))
        t_tsne = time.perf_counter() - t1
        params = {**settings.record(), "plot": bool(plot), "insert_prob": bool(insert_prob)}
        src = {"path": str(input_path), "format": str(source.format), "verified_input": verify_record is not None}
        if verify_record is not None:
            src["verify"] = verify_record
        obs, obsm, uns = annotations(pred, ref, params=params, tsne=tsne, source=src, insert_prob=insert_prob)
        var = source.var.copy()
        var.index = var.index.astype(str)
        writer.finish(merge_obs(source.obs(), obs), var, obsm, uns)  # the file's own cell columns carried over
        writer = None

        written = {ANNOTATED, PROBABILITIES, LEGEND}
        _csv(staging[PROBABILITIES], pred)
        colours = palette(pred.cell_types)
        staging[LEGEND].write_text(legend_text(pred.cell_types, colours, pred.labels))
        if plot:
            plot_tsne(coords, pred.labels[pred.sample], colours, staging[TSNE], note=tsne.get("note"),
                      title=tsne_title(ref.method, ref.name, settings.p, len(pred.proba), len(pred.sample)))
            written.add(TSNE)
        paths = staging.commit(written, check=still_free)
    counts = pd.Series(pred.labels).value_counts()
    return {
        "paths": paths,
        "n_cells": len(pred.labels),
        "counts": {c: int(counts.get(c, 0)) for c in pred.cell_types + [UNASSIGNED]},
        "method": ref.method,
        "reference": ref.name,
        "seconds_predict": t_pred,
        "seconds_tsne": t_tsne,
        "prediction": pred,
    }
