"""Large freed blocks kept for reuse while training (gsrcl.nn.allocator)."""

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
from gsrcl.nn.allocator import malloc_tunable, reuse_large_allocations

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


def test_glibc_defaults_are_restored_on_exit(monkeypatch):
    libc = _RecordingLibc()
    monkeypatch.setattr(allocator, "_libc", lambda: libc)
    monkeypatch.setattr(allocator, "malloc_tunable", lambda: True)
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
    assert not malloc_tunable()
    with reuse_large_allocations() as changed:
        assert not changed
