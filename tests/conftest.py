"""Shared fixtures. Real datasets are read by path from ../shared/data (beside the repository root); tests that
need them skip with a clear reason where that folder is absent."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
EXAMPLES = DATA / "gsrcl_examples"


def dataset(name: str) -> Path:
    """Path of ``../shared/data/<name>``, or skip the test when it is absent."""
    path = DATA / name
    if not path.exists():
        pytest.skip(f"real dataset {path} is absent (tests read ../shared/data beside the repository)")
    return path


@pytest.fixture
def data_dir() -> Path:
    if not DATA.is_dir():
        pytest.skip(f"{DATA} is absent (tests read ../shared/data beside the repository)")
    return DATA
