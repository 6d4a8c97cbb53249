"""Shared fixtures and the ``realdata`` marker.

Real datasets are read from ``../shared/data`` beside the repository root (the environment variable
``GSRCL_DATA`` names another folder, e.g. ``GSRCL_DATA=/nonexistent`` to run the suite as a clone without it
does). A test that reads that folder carries ``@pytest.mark.realdata``; where the folder is absent,
`pytest_collection_modifyitems` below skips those tests with the reason (and ``-m "not realdata"`` leaves them
out anywhere). A missing marker is an error rather than a silent skip: a test that uses a fixture of
`REALDATA_FIXTURES` without it fails everywhere, and one that calls `dataset` without it fails where the folder is
absent. ``slow`` marks the tests that take more than a few seconds.

The end-to-end fixtures need nothing beyond the test dependencies: scanpy's bundled ``pbmc68k_reduced``, split
as ``gsrcl demo`` splits it, and a tiny reference of each method trained on it once per session.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("GSRCL_DATA") or ROOT.parent / "shared" / "data")

# Tiny settings for both methods (each accepts these overrides): a few epochs of small networks, one model.
TINY_SETTINGS = dict(epochs=6, min_epochs=2, val_every=1, hidden=(32,), out=16, head=(16, 8), ensemble=1, svm_cv=2)
TINY_TOP_GENES = 200
METHODS = ("afrcl", "gsrcl")


# Fixtures that read the data folder (here and in tests/io, tests/methods and tests/benchmarks): a test that uses
# one, directly or through another fixture, must carry the realdata marker.
REALDATA_FIXTURES = frozenset({"data_dir", "mouse_small", "small_adata", "cellbench_refdir", "cellbench_query"})


def pytest_collection_modifyitems(config, items):
    """Skip the ``realdata`` tests, with the reason, where the data folder is absent."""
    if DATA.is_dir():
        return
    skip = pytest.mark.skip(reason=f"realdata: {DATA} is absent (../shared/data beside the repository, or set "
                            "GSRCL_DATA)")
    for item in items:
        if item.get_closest_marker("realdata"):
            item.add_marker(skip)


def pytest_runtest_setup(item):
    """Fail a test that uses a real-data fixture without the ``realdata`` marker, with or without the folder."""
    used = REALDATA_FIXTURES & set(getattr(item, "fixturenames", ()))
    if used and item.get_closest_marker("realdata") is None:
        pytest.fail(f"{item.nodeid} uses real data ({', '.join(sorted(used))}) without @pytest.mark.realdata",
                    pytrace=False)


def dataset(name: str) -> Path:
    """Path of ``<data folder>/<name>``.

    Raises
    ------
    pytest.fail
        The data folder is absent: the calling test lacks the ``realdata`` marker.
    pytest.skip
        The folder is there but this file is not (an older copy of the data).
    """
    if not DATA.is_dir():
        pytest.fail(f"a test read {DATA / name} without the realdata marker: mark it @pytest.mark.realdata")
    path = DATA / name
    if not path.exists():
        pytest.skip(f"{path} is absent from the data folder")
    return path


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The real-data folder (tests that use it carry the ``realdata`` marker)."""
    if not DATA.is_dir():
        pytest.fail(f"a test used {DATA} without the realdata marker: mark it @pytest.mark.realdata")
    return DATA


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The repository's root folder."""
    return ROOT


# --- small real subsets (realdata) ---------------------------------------------------------------------------
@pytest.fixture(scope="session")
def mouse_small():
    """300 cells of mouse_immune_actinn_1k (stratified) and its 2,000 most variable genes, raw counts (CSR) with
    obs['cell_type']. Shared by the session: copy it before changing it."""
    import anndata as ad
    from sklearn.model_selection import train_test_split

    full = ad.read_h5ad(dataset("mouse_immune_actinn_1k.h5ad"))
    y = full.obs["cell_type"].astype(str).to_numpy()
    idx, _ = train_test_split(np.arange(full.n_obs), train_size=300, stratify=y, random_state=0)
    sub = full[np.sort(idx)].copy()
    logx = sub.X.copy()
    logx.data = np.log1p(logx.data)
    var = np.asarray(logx.multiply(logx).mean(axis=0)).ravel() - np.asarray(logx.mean(axis=0)).ravel() ** 2
    genes = np.sort(np.argsort(-var)[:2000])
    return sub[:, genes].copy()


@pytest.fixture(scope="session")
def small_adata(mouse_small):
    """A function returning a fresh copy of `mouse_small` on each call."""
    return mouse_small.copy


@pytest.fixture(scope="session")
def cellbench_refdir(tmp_path_factory) -> Path:
    """REFDIR with tiny ``afrcl`` and ``gsrcl`` references trained on 180 CEL-seq2 cells of three cell lines."""
    import anndata as ad

    import gsrcl

    tiny = dict(epochs=3, hidden=(64, 64, 64), out=32, head=(32, 16), val_every=1, min_epochs=0, svm_cv=2,
                quiet=True)
    ref_data = ad.read_h5ad(dataset("cellbench_celseq2_3cl.h5ad"))
    keep = np.flatnonzero(ref_data.obs["demuxlet_cls"].astype(str).to_numpy() == "SNG")
    keep = np.sort(np.random.default_rng(0).choice(keep, 180, replace=False))
    ref_data = ref_data[keep].copy()
    refdir = tmp_path_factory.mktemp("refs")
    for method in METHODS:
        gsrcl.train(ref_data, labels_key="cell_type", method=method, name=method, **tiny).save(refdir, method)
    return refdir


@pytest.fixture(scope="session")
def cellbench_query(tmp_path_factory):
    """A function ``(n=120) -> Path``: an h5ad of n Drop-seq cells of the same three cell lines (written once per n)."""
    import anndata as ad

    written: dict[int, Path] = {}

    def query(n: int = 120) -> Path:
        if n not in written:
            q = ad.read_h5ad(dataset("cellbench_dropseq_3cl.h5ad"))
            idx = np.sort(np.random.default_rng(1).choice(q.n_obs, n, replace=False))
            path = tmp_path_factory.mktemp("query") / f"query{n}.h5ad"
            q[idx].copy().write_h5ad(path)
            written[n] = path
        return written[n]

    return query


# --- data every clone has: scanpy's pbmc68k_reduced ----------------------------------------------------------
@pytest.fixture(scope="session")
def pbmc68k():
    """(reference, query): scanpy's pbmc68k_reduced (log-normalised .raw values, 765 genes, obs['bulk_labels']),
    split 70/30 as ``gsrcl demo`` splits it. Shared by the session: copy before changing."""
    pytest.importorskip("scanpy", reason="pbmc68k_reduced ships with scanpy (a test dependency)")
    from gsrcl.demo import load_pbmc68k, split

    return split(load_pbmc68k())


@pytest.fixture(scope="session")
def tiny_references(pbmc68k) -> dict:
    """Method -> a tiny `gsrcl.Reference` (not saved) trained with `TINY_SETTINGS` on the `TINY_TOP_GENES` most
    variable genes of the reference part of `pbmc68k`."""
    import gsrcl

    return {method: gsrcl.train(pbmc68k[0], "bulk_labels", method, name=f"pbmc68k_{method}",
                                top_genes=TINY_TOP_GENES, quiet=True, **TINY_SETTINGS) for method in METHODS}


@pytest.fixture(scope="session")
def tiny_refdir(tiny_references, tmp_path_factory) -> Path:
    """REFDIR holding `tiny_references` saved as ``pbmc68k_afrcl`` and ``pbmc68k_gsrcl``."""
    refdir = tmp_path_factory.mktemp("tiny_refs")
    for method, ref in tiny_references.items():
        ref.save(refdir, f"pbmc68k_{method}")
    return refdir


@pytest.fixture(scope="session")
def pbmc68k_query(pbmc68k, tiny_references):
    """The query part of `pbmc68k` with the tiny references' genes but their last five (zero-filled at
    prediction) and 100 genes they lack: a query matches a reference in part. Shared: copy before changing."""
    genes = tiny_references["afrcl"].genes
    assert tiny_references["gsrcl"].genes == genes  # the same most variable genes for both methods
    query = pbmc68k[1]
    others = [g for g in query.var_names if g not in set(genes)][:100]
    return query[:, list(genes[:-5]) + others].copy()


@pytest.fixture(scope="session")
def pbmc68k_query_file(pbmc68k_query, tmp_path_factory) -> Path:
    """`pbmc68k_query` written as an h5ad file."""
    path = tmp_path_factory.mktemp("pbmc68k") / "query.h5ad"
    pbmc68k_query.write_h5ad(path)
    return path


@pytest.fixture()
def gsrcl_log(caplog, monkeypatch):
    """caplog seeing gsrcl's messages at INFO, whatever the ``gsrcl`` logger was left at."""
    monkeypatch.setattr(logging.getLogger("gsrcl"), "propagate", True)
    caplog.set_level(logging.INFO, logger="gsrcl")
    return caplog
