"""Large freed blocks kept for reuse while training (gsrcl.nn.allocator), in the ``gsrcl`` command's process
only: the Python API leaves malloc's settings alone."""

import json
import platform
import resource
import subprocess
import sys
from pathlib import Path

import pytest
import scipy.sparse as sp
import torch

from gsrcl.nn import Encoder, allocator, to_torch_sparse
from gsrcl.nn.allocator import allow_malloc_tuning, malloc_tunable, malloc_tuning_allowed, reuse_large_allocations

glibc = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="the setting applies to glibc only"
)


def _faults_of_training_steps(n: int = 5) -> int:
    """The fewest minor page faults of one of ``n`` training steps of a sparse first layer with a 64 MB
    weight: each step's dense weight gradient is allocated afresh and freed by ``zero_grad(set_to_none=True)``,
    as in training (the first steps grow the heap to its working size, hence the fewest)."""
    layer = Encoder(16384, (1024,), 8).linears[0]
    opt = torch.optim.SGD(layer.parameters(), lr=0.1)
    x = to_torch_sparse(sp.random(64, 16384, density=0.05, format="csr", random_state=0))
    faults = []
    for _ in range(n):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        opt.zero_grad(set_to_none=True)
        layer(x).sum().backward()
        opt.step()
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    return min(faults)


def _resident_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def _probe() -> dict:
    """Page faults of training steps with glibc's defaults, then with large blocks kept, and the resident
    size before and after; run in a fresh process, whose heap holds no large free block yet."""
    allow_malloc_tuning()
    default = _faults_of_training_steps()
    before = _resident_mb()
    with reuse_large_allocations() as changed:
        kept = _faults_of_training_steps()
    return {"changed": changed, "default": default, "kept": kept, "before": before, "after": _resident_mb(),
            "depth": allocator._depth}


@glibc
def test_large_blocks_are_reused_without_page_faults(monkeypatch):
    for key in ("GSRCL_KEEP_MALLOC", "GLIBC_TUNABLES"):
        monkeypatch.delenv(key, raising=False)
    if not malloc_tunable():
        pytest.skip("malloc is tuned in this environment")
    code = ("import json, sys; sys.path.insert(0, sys.argv[1]); import test_allocator; "
            "print(json.dumps(test_allocator._probe()))")
    out = subprocess.run([sys.executable, "-c", code, str(Path(__file__).parent)], capture_output=True, text=True,
                         check=True).stdout
    r = json.loads(out.strip().splitlines()[-1])
    assert r["changed"]
    assert r["default"] > 16384 * 0.9  # each 64 MB gradient is mapped afresh: a fault per 4 KB page
    assert r["kept"] < 100
    # the kept blocks are given back on exit (how glibc serves later blocks depends on the heap's layout,
    # so the restored settings are checked with a recording libc below)
    assert r["after"] < r["before"] + 32
    assert r["depth"] == 0


class _RecordingLibc:
    def __init__(self):
        self.calls = []

    def mallopt(self, param, value):
        self.calls.append(("mallopt", param, value))

    def malloc_trim(self, pad):
        self.calls.append(("malloc_trim", pad))


@pytest.fixture
def recording_libc(monkeypatch):
    """A libc that records mallopt/malloc_trim calls, in an environment that leaves malloc to gsrcl."""
    libc = _RecordingLibc()
    monkeypatch.setattr(allocator, "_libc", lambda: libc)
    monkeypatch.setattr(allocator, "malloc_tunable", lambda: True)
    monkeypatch.setattr(allocator, "_allowed", False)
    return libc


def test_glibc_defaults_are_restored_on_exit(recording_libc, monkeypatch):
    libc = recording_libc
    monkeypatch.setattr(allocator, "_allowed", True)
    with reuse_large_allocations() as changed:
        assert changed
        assert libc.calls == [("mallopt", allocator.M_MMAP_MAX, 0),
                              ("mallopt", allocator.M_TRIM_THRESHOLD, allocator.KEEP_TRIM_THRESHOLD)]
    assert libc.calls[2:] == [("mallopt", allocator.M_MMAP_MAX, allocator.DEFAULT_MMAP_MAX),
                              ("mallopt", allocator.M_TRIM_THRESHOLD, allocator.DEFAULT_TRIM_THRESHOLD),
                              ("malloc_trim", 0)]
    assert allocator._depth == 0


@glibc
def test_nested_use_restores_once(monkeypatch):
    monkeypatch.delenv("GSRCL_KEEP_MALLOC", raising=False)
    monkeypatch.setattr(allocator, "_allowed", True)
    if not malloc_tunable():
        pytest.skip("malloc is tuned in this environment")
    with reuse_large_allocations():
        with reuse_large_allocations():
            assert allocator._depth == 2
        assert allocator._depth == 1
        assert _faults_of_training_steps() < 100  # still kept after the inner exit
    assert allocator._depth == 0


@pytest.mark.parametrize("env", [{"GSRCL_KEEP_MALLOC": "1"}, {"MALLOC_ARENA_MAX_": "2"},
                                 {"GLIBC_TUNABLES": "glibc.malloc.mmap_max=0"}])
def test_left_alone_where_the_user_tuned_malloc(monkeypatch, env):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(allocator, "_allowed", True)
    assert not malloc_tunable()
    with reuse_large_allocations() as changed:
        assert not changed


# --- no process-wide side effect for a library user -------------------------------------------------------
def test_nothing_is_changed_until_allowed(recording_libc):
    with reuse_large_allocations() as changed:
        assert not changed
    assert recording_libc.calls == []
    assert allow_malloc_tuning() is False  # returns the previous setting
    assert malloc_tuning_allowed()
    with reuse_large_allocations() as changed:
        assert changed
    assert allow_malloc_tuning(False) is True
    assert len(recording_libc.calls) == 5


def test_importing_gsrcl_does_not_allow_tuning():
    import gsrcl.annotation  # noqa: F401 - a switch turned on at import would stay on
    import gsrcl.training  # noqa: F401

    assert not malloc_tuning_allowed()


def _tiny_adata():
    """90 cells of three types, each with ten marker genes of its own, as counts (synthetic)."""
    import anndata as ad
    import numpy as np

    rng = np.random.default_rng(0)
    types = np.repeat(np.arange(3), 30)
    rate = np.ones((3, 40))
    for t in range(3):
        rate[t, 10 * t:10 * t + 10] = 8.0
    adata = ad.AnnData(sp.csr_matrix(rng.poisson(rate[types]).astype(np.float32)))
    adata.obs_names = [f"c{i}" for i in range(len(types))]
    adata.var_names = [f"g{j}" for j in range(40)]
    adata.obs["cell_type"] = [f"type{t}" for t in types]
    return adata


def test_train_through_the_api_leaves_malloc_alone(recording_libc, monkeypatch):
    import gsrcl

    adata = _tiny_adata()
    tiny = dict(epochs=1, quiet=True, threads=1, novelty=False, hidden=[8], out=4, head=[4], svm_cv=2)
    gsrcl.train(adata, "cell_type", "afrcl", **tiny)
    assert recording_libc.calls == []
    # the same training in a process that allowed it (as the command does) changes and restores the settings
    monkeypatch.setattr(allocator, "_allowed", True)
    gsrcl.train(adata, "cell_type", "afrcl", **tiny)
    assert ("mallopt", allocator.M_MMAP_MAX, 0) in recording_libc.calls
    assert recording_libc.calls[-1] == ("malloc_trim", 0)


def test_the_train_command_allows_tuning_and_restores_the_setting(recording_libc, monkeypatch, tmp_path):
    from gsrcl.cli import main
    from gsrcl.errors import LabelsError

    seen = []

    def fake_train(*args, **kwargs):
        seen.append(malloc_tuning_allowed())
        with reuse_large_allocations() as changed:
            seen.append(changed)
        raise LabelsError("stopped by the test")

    monkeypatch.setattr("gsrcl.training.train", fake_train)
    path = tmp_path / "ref.h5ad"
    _tiny_adata().write_h5ad(path)
    code = main(["train", "-i", str(path), "--labels", "cell_type", "-r", "r", "-mp", str(tmp_path / "refs"), "-q"])
    assert code == LabelsError.exit_code
    assert seen == [True, True]
    assert recording_libc.calls[:2] == [("mallopt", allocator.M_MMAP_MAX, 0),
                                        ("mallopt", allocator.M_TRIM_THRESHOLD, allocator.KEEP_TRIM_THRESHOLD)]
    assert not malloc_tuning_allowed()  # main() leaves the process as it found it


def test_commands_that_do_not_train_leave_malloc_alone(monkeypatch, tmp_path, capsys):
    from gsrcl.cli import main

    calls = []
    monkeypatch.setattr("gsrcl.cli.allow_malloc_tuning", lambda *a: calls.append(a) or False)
    (tmp_path / "refs").mkdir()
    assert main(["references", "-mp", str(tmp_path / "refs")]) == 0
    assert calls == []
