"""Fixtures shared by the method tests: the small real split, and each method fitted once on it."""

from __future__ import annotations

import pytest

from tests.methods.data import small_split


@pytest.fixture(scope="module")
def split():
    return small_split()


@pytest.fixture(scope="module")
def fitted(split, request):
    """The test module's ``METHOD`` fitted with its ``TINY`` parameters on the training part of ``split``."""
    Xtr, ytr, _, _ = split
    return request.module.METHOD(**request.module.TINY).fit(Xtr, ytr)
