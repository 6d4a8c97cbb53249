"""`gsrcl predict` on a Dask cluster (`gsrcl.distributed`): a LocalCluster of two worker processes gives exactly
the single-process outputs, with both methods, from an h5ad (read by rows on the workers) and from a CSV
(converted once); ``gsrcl.annotate(..., client=...)`` likewise; a worker killed while blocks are in flight changes
nothing, or, when Dask gives up, fails in one line writing nothing; an unreachable scheduler fails in one line
with exit code 89 and writes nothing.

The single-process runs are made with one thread (torch and BLAS), as each worker runs: the bit-for-bit promise
holds for the same threads per worker. Select these tests with ``-m dask``.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest

pytest.importorskip("distributed", reason="dask.distributed is a test dependency (pip install -e .[test])")

import gsrcl  # noqa: E402
from gsrcl import errors  # noqa: E402
from gsrcl.cli import main  # noqa: E402
from gsrcl.outputs import predict_files  # noqa: E402

pytestmark = pytest.mark.dask

METHODS = ("afrcl", "gsrcl")
BLOCK = 16  # the ~210 query cells in 14 blocks
SETTINGS = dict(block_size=BLOCK, tsne_cells=120, seed=3, quiet=True, overwrite=False)


@pytest.fixture(scope="module")
def one_thread():
    """torch and BLAS on one thread in this process, as in each worker; restored after."""
    import torch
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(1):
        yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def client(one_thread):
    from distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                           dashboard_address=None)
    with Client(cluster) as c:
        yield c
    cluster.close()


@pytest.fixture(autouse=True)
def fixed_svg_date(monkeypatch):
    """matplotlib writes the time into an SVG unless SOURCE_DATE_EPOCH fixes it: then tsne.svg is deterministic."""
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "0")


@pytest.fixture
def small_fit(monkeypatch):
    """The neighbourhoods' genes and components from a seeded subset of 100 cells (50,000 by default), so that
    the subset's path is the one compared."""
    import gsrcl.neighbours

    monkeypatch.setattr(gsrcl.neighbours, "FIT_MAX_CELLS", 100)


def assert_same_outputs(a: Path, b: Path) -> None:
    """The four outputs of two runs: the same bytes (probabilities.csv, legend.txt, tsne.svg), the same arrays
    (annotated.h5ad's X, obs, obsm) and the same records but for the timings and date."""
    for name in ("probabilities.csv", "legend.txt", "tsne.svg"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    x, y = ad.read_h5ad(a / "annotated.h5ad"), ad.read_h5ad(b / "annotated.h5ad")
    assert (x.X != y.X).nnz == 0 and x.X.dtype == y.X.dtype
    pd.testing.assert_frame_equal(x.obs, y.obs, check_exact=True)
    assert sorted(x.obsm) == sorted(y.obsm)
    for key in x.obsm:
        np.testing.assert_array_equal(np.asarray(x.obsm[key]), np.asarray(y.obsm[key]))
    rx, ry = x.uns["gsrcl"], y.uns["gsrcl"]
    for r in (rx, ry):
        r.pop("date"), r["neighbours"].pop("seconds", None), r["tsne"].pop("seconds", None)
    assert repr(rx) == repr(ry)


def single_and_cluster(client, query, refdir, method, tmp_path, **kw) -> tuple[Path, Path]:
    outs = tmp_path / "single", tmp_path / "cluster"
    ref = refdir / f"pbmc68k_{method}"
    predict_files(query, ref, outs[0], **SETTINGS, **kw)
    predict_files(query, ref, outs[1], client=client, **SETTINGS, **kw)
    return outs


@pytest.mark.parametrize("method", METHODS)
def test_a_cluster_of_two_workers_gives_the_single_process_outputs(method, client, tiny_refdir, pbmc68k_query_file,
                                                                   tmp_path, small_fit):
    single, cluster = single_and_cluster(client, pbmc68k_query_file, tiny_refdir, method, tmp_path,
                                         novelty_cutoff=99.0)
    assert_same_outputs(single, cluster)
    neighbours = ad.read_h5ad(cluster / "annotated.h5ad").uns["gsrcl"]["neighbours"]
    assert neighbours["applied"] and neighbours["fitted_on_cells"] == 100  # the subset's path was taken
    assert sorted(p.name for p in cluster.iterdir()) == ["annotated.h5ad", "legend.txt", "probabilities.csv",
                                                         "tsne.svg"]


def test_a_query_that_cannot_be_read_by_rows_is_converted_once_and_removed(client, tiny_refdir, pbmc68k_query,
                                                                           tmp_path, gsrcl_log):
    csv = tmp_path / "query.csv"
    pbmc68k_query.to_df().to_csv(csv)
    single, cluster = single_and_cluster(client, csv, tiny_refdir, "gsrcl", tmp_path)
    assert_same_outputs(single, cluster)
    assert "cannot be read by rows: converting it once" in gsrcl_log.text
    assert sorted(p.name for p in cluster.iterdir()) == ["annotated.h5ad", "legend.txt", "probabilities.csv",
                                                         "tsne.svg"]


def test_a_10x_hdf5_query_is_read_by_rows_on_the_workers(client, tiny_refdir, pbmc68k_query, tmp_path,
                                                         gsrcl_log):
    import scipy.sparse as sp

    from tests.io.conftest import write_10x_v3

    counts = pbmc68k_query.copy()
    counts.X = sp.csr_matrix(np.rint(np.expm1(counts.X.toarray())))  # a 10x file holds counts
    counts.var["gene_ids"] = [f"ID{i}" for i in range(counts.n_vars)]
    query = write_10x_v3(tmp_path / "query.h5", counts, extra_features=3)  # dropped by the reader, on every worker
    single, cluster = single_and_cluster(client, query, tiny_refdir, "afrcl", tmp_path)
    assert_same_outputs(single, cluster)
    assert "cannot be read by rows" not in gsrcl_log.text


def test_annotate_with_a_client_gives_the_same_annotations(client, tiny_references, pbmc68k_query):
    ref = tiny_references["afrcl"]  # never saved: cached on the workers by the run, not by a checksum
    kw = dict(block_size=BLOCK, plot=True, tsne_cells=100, seed=1, quiet=True)
    a = gsrcl.annotate(pbmc68k_query, ref, **kw)
    b = gsrcl.annotate(pbmc68k_query, ref, client=client, **kw)
    pd.testing.assert_frame_equal(a.obs, b.obs, check_exact=True)
    for key in ("probabilities", "X_tsne"):
        np.testing.assert_array_equal(a.obsm[key], b.obsm[key])


class KillOnce:
    """A worker plugin: the worker that starts its second prediction task first kills its own process (once, by a
    flag file), while the other blocks are in flight."""

    name = "gsrcl-test-kill-once"

    def __init__(self, flag: str):
        self.flag = flag
        self.started = 0

    def setup(self, worker):
        self.pid = os.getpid()

    def transition(self, key, start, finish, **kwargs):
        if finish == "executing" and str(key).startswith("gsrcl-predict-"):
            self.started += 1
            if self.started == 2:
                try:
                    os.close(os.open(self.flag, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
                except FileExistsError:
                    return
                os.kill(self.pid, signal.SIGKILL)


@pytest.fixture
def kill_once(client, tmp_path):
    """A `KillOnce` plugin on the workers during the test; the flag file's path."""
    import cloudpickle
    from distributed.diagnostics.plugin import WorkerPlugin

    flag = tmp_path / "killed"
    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers cannot import this test module
    client.register_plugin(type("KillOnceWorkerPlugin", (KillOnce, WorkerPlugin), {})(str(flag)), name=KillOnce.name)
    yield flag
    client.unregister_worker_plugin(KillOnce.name)
    cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    client.wait_for_workers(2, timeout=60)


def test_a_worker_killed_mid_run_changes_nothing(client, kill_once, tiny_refdir, pbmc68k_query_file, tmp_path):
    pids = set(client.run(os.getpid).values())
    single, cluster = single_and_cluster(client, pbmc68k_query_file, tiny_refdir, "afrcl", tmp_path)
    assert kill_once.exists()  # a worker did die
    client.wait_for_workers(2, timeout=60)
    assert set(client.run(os.getpid).values()) != pids  # and was replaced by a new process
    assert_same_outputs(single, cluster)


def test_when_dask_gives_up_on_a_dead_worker_the_run_fails_in_one_line_writing_nothing(
        client, kill_once, tiny_refdir, pbmc68k_query_file, tmp_path):
    scheduler = client.cluster.scheduler  # a LocalCluster's scheduler runs in this process
    before, scheduler.allowed_failures = scheduler.allowed_failures, 0  # no second try for a task a worker died on
    out = tmp_path / "out"
    try:
        with pytest.raises(errors.SchedulerError, match="the Dask cluster failed during prediction") as exc:
            predict_files(pbmc68k_query_file, tiny_refdir / "pbmc68k_afrcl", out, client=client, **SETTINGS)
    finally:
        scheduler.allowed_failures = before
    assert kill_once.exists() and "\n" not in exc.value.message
    assert not out.exists()


def test_an_unreachable_scheduler_fails_in_one_line_writing_nothing(tiny_refdir, pbmc68k_query_file, tmp_path,
                                                                    capsys):
    import dask.config

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "out"
    with dask.config.set({"distributed.comm.timeouts.connect": "2s"}):
        code = main(["predict", "-i", str(pbmc68k_query_file), "-r", "pbmc68k_afrcl", "-mp", str(tiny_refdir),
                     "-o", str(out), "-q", "--dask", f"tcp://127.0.0.1:{port}"])
    assert code == errors.SchedulerError.exit_code == 89
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot use the Dask scheduler" in err[0] and "dask scheduler" in err[0], err
    assert not out.exists()


def test_a_row_range_reads_the_same_blocks_as_a_whole_pass(pbmc68k_query_file, pbmc68k_query, tmp_path):
    from gsrcl.io import open_query

    csv = tmp_path / "query.csv"
    pbmc68k_query[:50].to_df().to_csv(csv)
    assert open_query(pbmc68k_query_file).rows_on_disk and not open_query(csv).rows_on_disk
    source = open_query(pbmc68k_query_file)
    whole = dict(source.iter_blocks(BLOCK))
    part = list(source.iter_blocks(BLOCK, 2 * BLOCK, 5 * BLOCK))
    assert [start for start, _ in part] == [2 * BLOCK, 3 * BLOCK, 4 * BLOCK]
    for start, block in part:
        assert (block != whole[start]).nnz == 0 and block.shape == whole[start].shape


@pytest.mark.parametrize("bad", ["local:0", "local:x", "local:"])
def test_a_bad_local_cluster_size_is_a_usage_error(bad, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["predict", "-r", "x", "-mp", str(tmp_path), "--dask", bad])
    assert exc.value.code == errors.EXIT_USAGE
    assert "local:N needs a positive whole number" in capsys.readouterr().err


def test_importing_gsrcl_does_not_import_dask(tmp_path):
    import subprocess

    code = ("import sys, gsrcl, gsrcl.outputs, gsrcl.annotation, gsrcl.cli.predict; "
            "sys.exit(int(any(m == 'dask' or m.startswith(('dask.', 'distributed')) for m in sys.modules)))")
    assert subprocess.run([sys.executable, "-c", code], env={**os.environ}).returncode == 0


def test_a_scheduler_and_workers_started_from_the_command_line_give_the_single_process_outputs(
        one_thread, tiny_refdir, pbmc68k_query_file, tmp_path):
    """The README's commands (`dask scheduler`, `dask worker`) on loopback, then ``gsrcl predict --dask ADDRESS``."""
    import json
    import subprocess
    import time

    dask_cli = Path(sys.executable).parent / "dask"
    if not dask_cli.exists():
        pytest.skip("the dask command is not installed beside this Python")
    info = tmp_path / "scheduler.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    common = ["--no-dashboard"]
    scheduler = subprocess.Popen([str(dask_cli), "scheduler", "--host", "127.0.0.1", "--port", "0",
                                  "--scheduler-file", str(info), *common], env=env,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    worker = None
    try:
        deadline = time.monotonic() + 60
        while not info.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        address = json.loads(info.read_text())["address"]
        assert address.startswith("tcp://127.0.0.1:")
        worker = subprocess.Popen([str(dask_cli), "worker", address, "--nworkers", "2", "--nthreads", "1",
                                   "--host", "127.0.0.1", *common], env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        from distributed import Client

        with Client(address, timeout=60) as c:
            c.wait_for_workers(2, timeout=120)
        ref = tiny_refdir / "pbmc68k_afrcl"
        single, cluster = tmp_path / "single", tmp_path / "cluster"
        args = ["predict", "-i", str(pbmc68k_query_file), "-mp", str(tiny_refdir), "-r", "pbmc68k_afrcl",
                "--block-size", str(BLOCK), "--tsne-cells", "120", "--seed", "3", "-q"]
        assert ref.exists()
        assert main(args + ["-o", str(single)]) == 0
        assert main(args + ["-o", str(cluster), "--dask", address]) == 0
        assert_same_outputs(single, cluster)
    finally:
        for proc in (worker, scheduler):
            if proc is not None:
                proc.terminate()
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
