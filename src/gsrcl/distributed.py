"""`gsrcl predict` on a Dask cluster (``dask.distributed``): the same prediction, its blocks computed by workers.

The client makes every decision that needs the whole query once, as the single-process path does
(`gsrcl.preparation.prepare`: the gene match and the value kind; `gsrcl.predict.Plan`: the t-SNE's cells and the
neighbourhoods' cells), and sends the workers small data only: a worker plugin (`RunPlugin`) carries where the
reference is (a saved reference is loaded by each worker from its folder once and cached by its manifest's
checksum, across runs; one never saved travels with the plugin, as plain arrays), the `Prepared` record and where
the query is. Each task is one block of ``block_size`` rows, the same blocks
`gsrcl.predict.predict` reads (they start at multiples of ``block_size``): a worker reads its rows from the file
itself (h5ad and 10x HDF5 by row range: the path must be one every worker sees), runs
`gsrcl.predict.predict_block` on them and returns its small `BlockResult`. The client adds the results up in the
query's order (`gsrcl.predict.Results`), so every sum is the same sum as in the single-process run. The
neighbourhoods' two passes run as tasks too: per block, the chosen cells' values over the chosen genes (the client
adds their covariance up in order, as `QueryNeighbours.fit` does) and the cells' coordinates (each row on its
own). The outputs are therefore bit for bit those of the single-process run on the same seed, when each worker
runs with the same number of threads as that run (a `LocalCluster` worker runs one).

A query whose format cannot be read by rows (text tables, 10x matrix folders, CSC matrices, transposed input) is
converted once, by the client, into a CSR h5ad in a scratch folder (the staging folder in OUT), removed after.
A query held in memory (``gsrcl.annotate(adata, ..., client=...)``) is scattered to the workers block by block.

A worker that dies mid-run: Dask runs its tasks again elsewhere (a block's result does not depend on where it is
computed), so the run finishes with the same outputs; when Dask gives up (a task that killed
``distributed.scheduler.allowed-failures`` workers) or the scheduler goes away, the run fails with one line
(`SchedulerError`) and writes nothing.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

import numpy as np
import scipy.sparse as sp

from .errors import GsrclError, SchedulerError

try:
    from distributed.diagnostics.plugin import WorkerPlugin
except ImportError:  # an optional dependency: the dask extra
    raise GsrclError("a Dask cluster (--dask, client=) needs dask.distributed: pip install 'gsrcl[dask]'") from None
from .model_input import log1p_cp10k
from .neighbours import QueryNeighbours
from .predict import (Plan, Prediction, Prepared, Results, Settings, needs_neighbours, neighbourhoods_off,
                      note_raw_cutoff, predict_block, progress_bars, rows_in)

log = logging.getLogger("gsrcl.distributed")

LOCAL = "local:"
CONVERTED = ".gsrcl-query.h5ad"  # the converted query, in the scratch folder

__all__ = ["LOCAL", "RunPlugin", "connect", "convert", "predict_on_cluster"]


# --- the cluster ---------------------------------------------------------------------------------------------


@contextlib.contextmanager
def connect(address: str) -> Iterator[Any]:
    """A ``dask.distributed.Client`` of the scheduler at ``address`` (``gsrcl predict --dask``), closed after.

    ``local:N`` starts a ``LocalCluster`` of N worker processes of one thread each, listening on 127.0.0.1 only,
    without a dashboard. Connecting waits ``distributed.comm.timeouts.connect`` (Dask's setting; the environment
    variable ``DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT`` changes it) for the scheduler and as long again for at
    least one worker.

    Raises
    ------
    SchedulerError
        When the scheduler cannot be reached or has no workers, or the local cluster cannot start.
    """
    import dask.config
    from distributed import Client, LocalCluster

    timeout = dask.config.get("distributed.comm.timeouts.connect")
    cluster = client = None
    try:
        if address.startswith(LOCAL):
            n = int(address[len(LOCAL):])
            cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, host="127.0.0.1",
                                   dashboard_address=None)
            client = Client(cluster)
        else:
            client = Client(address, timeout=timeout)
            client.wait_for_workers(1, timeout=timeout)
    except GsrclError:
        raise
    except Exception as exc:  # noqa: BLE001 - whatever Dask raises (OSError, TimeoutError, ValueError): one line
        for c in (client, cluster):
            if c is not None:
                with contextlib.suppress(Exception):
                    c.close()
        what = "start a local Dask cluster" if address.startswith(LOCAL) else f"use the Dask scheduler at {address}"
        hint = "" if address.startswith(LOCAL) else \
            f": start it ('dask scheduler') and a worker ('dask worker {address}'), or check the address"
        raise SchedulerError(f"cannot {what} ({_first_line(exc)}){hint}") from None
    try:
        yield client
    finally:
        with contextlib.suppress(Exception):
            client.close()
        if cluster is not None:
            with contextlib.suppress(Exception):
                cluster.close()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


# --- what the workers hold -----------------------------------------------------------------------------------

_RUNS: dict[str, "RunPlugin"] = {}
_REFERENCES: dict[str, Any] = {}  # checksum -> Reference, the latest few
_KEEP_REFERENCES = 2
_LOCK = threading.Lock()


class RunPlugin(WorkerPlugin):
    """A run's small data, given to every worker (and to any worker that joins later) as a Dask worker plugin.

    Parameters
    ----------
    key : str
        The run's name.
    checksum : str
        Caches the reference on a worker: the manifest's ``manifest_sha256`` (which covers the arrays' checksum)
        for a saved reference, the run's key for one never saved.
    reference : str or tuple of (dict, dict)
        A saved reference's folder (every worker loads it from there once, and checks its checksum), or the
        manifest and plain arrays of one never saved (sent with the plugin).
    prepared : Prepared
    query : tuple of (str, dict) or None
        The query file's absolute path and `gsrcl.io.open_query`'s keyword arguments; None when the blocks come
        with the tasks.
    """

    def __init__(self, key: str, checksum: str, reference: str | tuple[dict, dict], prepared: Prepared,
                 query: tuple[str, dict] | None):
        self.key, self.checksum, self._reference = key, checksum, reference
        self.prepared, self.query = prepared, query
        self._source = None

    @property
    def name(self) -> str:
        return f"gsrcl-{self.key}"

    def setup(self, worker=None) -> None:
        _RUNS[self.key] = self

    def teardown(self, worker=None) -> None:
        _RUNS.pop(self.key, None)

    def reference(self):
        """The reference, loaded or rebuilt once per worker (cached by checksum).

        Raises
        ------
        SchedulerError
            When the worker cannot see a saved reference's folder, or finds another reference there.
        """
        from .manifest import CHECKSUM
        from .reference import Reference

        with _LOCK:
            ref = _REFERENCES.get(self.checksum)
            if ref is None:
                if isinstance(self._reference, str):
                    if not os.path.isdir(self._reference):
                        raise SchedulerError(f"a Dask worker cannot see the reference {self._reference}: put it on "
                                             "storage that every worker sees, under the same path")
                    ref = Reference.load(self._reference)
                    if ref.manifest.get(CHECKSUM) != self.checksum:
                        raise SchedulerError(f"a Dask worker found another reference at {self._reference} (changed "
                                             "during the run?): nothing was written")
                else:
                    ref = Reference(manifest=self._reference[0], arrays=self._reference[1])
                    ref.model, ref.novelty  # noqa: B018 - rebuilt now, once
                while len(_REFERENCES) >= _KEEP_REFERENCES:
                    _REFERENCES.pop(next(iter(_REFERENCES)))
                _REFERENCES[self.checksum] = ref
            return ref

    def rows(self, start: int, stop: int, block_size: int, block) -> sp.csr_matrix:
        """Rows [start, stop) of the query: ``block`` when the task brought it, else read from the file."""
        if block is not None:
            return block
        with _LOCK:
            if self._source is None:
                from .io import open_query

                path, kwargs = self.query
                if not os.path.exists(path):
                    raise SchedulerError(f"a Dask worker cannot see the query {path}: put it on storage that every "
                                         "worker sees, under the same path")
                self._source = open_query(path, **kwargs)
            source = self._source
        (_, X), = source.iter_blocks(block_size, start, stop)
        return X


def _run(key: str) -> RunPlugin:
    run = _RUNS.get(key)
    if run is None:
        raise SchedulerError("a Dask worker lacks this run's plugin (it joined while the plugin was being removed)")
    return run


def _predict_task(key: str, start: int, stop: int, block_size: int, embed_rows: np.ndarray, moments: bool,
                  moment_rows: np.ndarray | None, block=None):
    run = _run(key)
    X = run.rows(start, stop, block_size, block)
    return predict_block(start, X, run.prepared, run.reference(), embed_rows, moments, moment_rows)


def _covariance_task(key: str, start: int, stop: int, block_size: int, rows: np.ndarray | None, genes: np.ndarray,
                     block=None) -> sp.csr_matrix:
    run = _run(key)
    X = run.rows(start, stop, block_size, block)
    return log1p_cp10k(X if rows is None else X[rows], run.prepared.kind)[:, genes]


def _project_task(key: str, start: int, stop: int, block_size: int, graph: QueryNeighbours,
                  block=None) -> np.ndarray:
    run = _run(key)
    X = run.rows(start, stop, block_size, block)
    return graph.project(log1p_cp10k(X, run.prepared.kind))


# --- the client ----------------------------------------------------------------------------------------------


def _cluster_errors() -> tuple[type[BaseException], ...]:
    """What Dask raises when the cluster fails: a task that killed too many workers, futures cancelled (the
    scheduler gone, a scattered block lost with its worker), a connection closed. Not any OSError: a full disk
    while writing annotated.h5ad stays a `DiskFullError`."""
    from concurrent.futures import CancelledError

    from distributed.comm.core import CommClosedError
    from distributed.scheduler import KilledWorker

    return (KilledWorker, CancelledError, CommClosedError)


def _in_order(futures: list, bar, cells: Callable[[int], int]) -> Iterator[Any]:
    """Each future's result in the order given (they run in any order), each released once read; on a failure
    the others are cancelled."""
    try:
        for i, fut in enumerate(futures):
            result = fut.result()
            futures[i] = None
            fut.release()
            bar.update(cells(i))
            yield result
    finally:
        left = [f for f in futures if f is not None]
        if left:
            with contextlib.suppress(Exception):
                left[0].client.cancel(left)


def convert(source, folder: Path, block_size: int, on_block: Callable[[int, sp.csr_matrix], None] | None) -> Path:
    """The query written once as a CSR h5ad into ``folder`` (every worker reads it by rows); ``on_block`` sees
    each block as it is written. Returns the file's path."""
    import pandas as pd

    from .outputs import H5adXWriter

    path = Path(folder) / CONVERTED
    log.info("%s (%s) cannot be read by rows: converting it once into %s for the Dask workers (removed after "
             "the run)", source.path, source.format, path)
    writer = H5adXWriter(path, int(source.n_obs), int(source.n_vars))
    try:
        for start, block in source.iter_blocks(block_size):
            writer.add(start, block)
            if on_block is not None:
                on_block(start, block)
        var = pd.DataFrame(index=pd.Index(source.var.index.astype(str)))
        writer.finish(pd.DataFrame(index=pd.Index(source.obs_names.astype(str))), var, {}, {})
    except BaseException:
        writer.close()
        raise
    return path


def predict_on_cluster(client, source, ref, prepared: Prepared, settings: Settings, *,
                       novelty_max: float | None = None, embed: bool = True,
                       on_block: Callable[[int, sp.csr_matrix], None] | None = None,
                       reader_kwargs: dict | None = None, scratch: str | os.PathLike | None = None) -> Prediction:
    """`gsrcl.predict.predict` with its blocks computed by the workers of ``client``; the same `Prediction`.

    Parameters
    ----------
    client : dask.distributed.Client
    source : QuerySource
        A query file read by rows (`QuerySource.rows_on_disk`): each worker opens it at the same absolute path
        with ``reader_kwargs``. Another file is converted once into ``scratch`` (`convert`); a query held in
        memory (``scratch`` None) is scattered to the workers block by block.
    ref, prepared, settings, novelty_max, embed
        As for `gsrcl.predict.predict`.
    on_block : callable, optional
        ``on_block(start, block)`` sees each block, in order, read by the client (to copy X into annotated.h5ad):
        one block at a time, never the whole matrix.
    reader_kwargs : dict, optional
        `gsrcl.io.open_query`'s keyword arguments the query was opened with.
    scratch : path-like, optional
        A folder every worker sees, for the converted query.

    Returns
    -------
    Prediction

    Raises
    ------
    SchedulerError
        When the cluster fails (a task that killed too many workers, a scheduler gone, a worker that cannot see
        the query).
    ValuesError
        As the single-process path raises it (from the worker that read the block).
    """
    from .manifest import CHECKSUM

    note_raw_cutoff(ref, settings)
    n, bs = int(source.n_obs), settings.block_size
    plan = Plan.of(n, ref, settings, embed)
    ranges = [(start, min(start + bs, n)) for start in range(0, n, bs)]
    key = uuid.uuid4().hex
    blocks: list = [None] * len(ranges)
    copied = on_block is None
    if source.rows_on_disk and source.path.is_file():
        query = (str(source.path.resolve()), dict(reader_kwargs or {}))
    elif scratch is not None:
        query, copied = (str(convert(source, Path(scratch), bs, on_block).resolve()), {}), True
    else:
        query = None
    saved = ref.path is not None and ref.manifest.get(CHECKSUM)
    plugin = RunPlugin(key, saved or key, str(Path(ref.path).resolve()) if saved else (ref.manifest, ref.arrays),
                       prepared, query)
    try:
        client.register_plugin(plugin, name=plugin.name)
        if query is None:  # held in memory: each block travels once, and stays on a worker for the three passes
            for i, (start, block) in enumerate(source.iter_blocks(bs)):
                blocks[i] = client.scatter(block, hash=False)
                if on_block is not None:
                    on_block(start, block)
            copied = True
        results = Results(plan, ref)
        futures = []
        for i, (start, stop) in enumerate(ranges):
            embed_rows, moment_rows = plan.block_rows(start, stop)
            futures.append(client.submit(_predict_task, key, start, stop, bs, embed_rows, plan.moments, moment_rows,
                                         blocks[i], key=f"gsrcl-predict-{key}-{start}", pure=False))
        if not copied:  # while the workers predict: X for annotated.h5ad, a block at a time
            for start, block in source.iter_blocks(bs):
                on_block(start, block)
        with progress_bars(settings.quiet)("predict", n) as bar:
            for r in _in_order(futures, bar, lambda i: ranges[i][1] - ranges[i][0]):
                results.add(r)
        results.check_count()
        graph, graph_record = _neighbourhoods(client, key, ranges, blocks, plan, results, settings,
                                              needs_neighbours(ref, settings))
    except GsrclError:
        raise
    except _cluster_errors() as exc:
        raise SchedulerError(f"the Dask cluster failed during prediction ({_first_line(exc)}); nothing was "
                             "written") from None
    finally:
        with contextlib.suppress(Exception):
            client.unregister_worker_plugin(plugin.name)
        for b in blocks:
            if b is not None:
                b.release()
    return results.prediction(source.obs_names, ref, prepared, settings, novelty_max, graph, graph_record)


def _neighbourhoods(client, key: str, ranges: list, blocks: list, plan: Plan, results: Results,
                    settings: Settings, needed: bool) -> tuple[QueryNeighbours | None, dict[str, Any]]:
    """`gsrcl.predict._neighbourhoods` with the covariance and projection passes as tasks, one per block."""
    n, bs = plan.n, settings.block_size
    off = neighbourhoods_off(n, settings, results.moments, needed)
    if off is not None:
        return None, off
    t0 = time.perf_counter()
    graph = QueryNeighbours(settings.neighbours, seed=settings.seed)
    rows = graph.fit_rows(n)
    genes = graph.choose_genes(results.moments, n if rows is None else len(rows))
    progress = progress_bars(settings.quiet)
    futures, counts = [], []
    for i, (start, stop) in enumerate(ranges):
        block_rows = None if rows is None else rows_in(rows, start, stop)
        counts.append(stop - start if block_rows is None else len(block_rows))
        futures.append(client.submit(_covariance_task, key, start, stop, bs, block_rows, genes, blocks[i],
                                     key=f"gsrcl-covariance-{key}-{start}", pure=False))
    with progress("neighbours: covariance", sum(counts)) as bar:
        for G in _in_order(futures, bar, counts.__getitem__):
            graph.add_covariance(G)
    graph.fit_components()
    shipped = client.scatter(graph, broadcast=True, hash=False)
    try:
        futures = [client.submit(_project_task, key, start, stop, bs, shipped, blocks[i],
                                 key=f"gsrcl-project-{key}-{start}", pure=False)
                   for i, (start, stop) in enumerate(ranges)]
        with progress("neighbours: projection", n) as bar:
            P = list(_in_order(futures, bar, lambda i: ranges[i][1] - ranges[i][0]))
    finally:
        shipped.release()
    graph.fit_neighbours(np.concatenate(P) if P else np.empty((0, graph.components_), np.float32))
    return graph, {"applied": True, **graph.record(), "seconds": round(time.perf_counter() - t0, 2)}
