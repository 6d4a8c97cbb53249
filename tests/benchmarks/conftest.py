"""Fixtures of the accuracy harness's tests. The harness lives in ``benchmarks/`` beside the package, not in it:
this folder's tests import it by path (``benchmarks/`` is put first on ``sys.path``, as running a script there
does). Real datasets are the ones ``benchmarks/tasks.json`` names, in the suite's data folder (``data_dir`` of
tests/conftest.py); a test that reads them carries the ``realdata`` marker."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
if str(BENCHMARKS) not in sys.path:
    sys.path.insert(0, str(BENCHMARKS))


@pytest.fixture
def config():
    """The benchmark's task config, ``benchmarks/tasks.json`` (reading it needs no data file)."""
    from harness.tasks import DEFAULT_CONFIG, load_config

    return load_config(DEFAULT_CONFIG)


@pytest.fixture
def real_data(data_dir):
    """A function ``need(*names)``: the real-data folder (the suite's ``data_dir``; tests using it carry the
    ``realdata`` marker), or skip when a file named is not in it."""

    def need(*names: str) -> Path:
        for name in names:
            if not (data_dir / name).exists():
                pytest.skip(f"{data_dir / name} is absent from the data folder")
        return data_dir

    return need


@pytest.fixture
def script():
    """A function ``load(name)``: the module of ``benchmarks/<name>.py``, freshly imported."""

    def load(name: str):
        spec = importlib.util.spec_from_file_location(f"benchmark_script_{name}", BENCHMARKS / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load
