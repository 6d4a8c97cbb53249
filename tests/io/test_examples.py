"""The original tool's example files.

`psipred_examples_sample{1..4}_error.csv` are negative fixtures for the original web tool's CSV rules
(docs/methods.md §1.2). Only one of them is malformed as a *table*; the others break rules that are not a
reader's business in gsrcl:

| file | shape | original rule broken | our reader |
|---|---|---|---|
| sample1 | 1001 x 1000 | more than 1000 cells (a web-server limit) | reads it: gsrcl has no cell limit |
| sample2 | 200 x 1000 values, no barcode column | barcodes missing (its first column is gene values) | NamesError: the first column holds numbers, not cell ids |
| sample3 | 900 x 300 | more cells than genes (taken as "transposed") | reads it: the names (BarCode*/GeneId*) say cells are rows; the shape alone proves nothing |
| sample4 | 200 x 900 | genes `GeneId*` match no reference | reads it: the gene overlap is judged by `verify` (GeneOverlapError) |

`ibrahimsaggaf_Example_query_values.csv` has no header (its genes are in a separate file); that layout is
not supported, and the reader must say so clearly rather than take a row of counts as gene names.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from gsrcl.errors import NamesError
from gsrcl.io import read_query

pytestmark = pytest.mark.realdata


@pytest.fixture
def example(data_dir):
    """``example(name)``: the path of ``gsrcl_examples/<name>`` in the data folder."""

    def path(name: str):
        found = data_dir / "gsrcl_examples" / name
        if not found.exists():
            pytest.skip(f"{found} is absent from the data folder")
        return found

    return path


@pytest.mark.parametrize("n,shape", [(1, (1001, 1000)), (3, (900, 300)), (4, (200, 900))])
def test_psipred_examples_that_are_valid_tables(example, n, shape):
    path = example(f"psipred_examples_sample{n}_error.csv")
    got = read_query(path)
    want = pd.read_csv(path, index_col=0)
    assert got.shape == shape == want.shape
    assert list(got.obs_names) == list(want.index) and got.obs_names[0] == "BarCode1"
    assert list(got.var_names) == list(want.columns) and got.var_names[0] == "GeneId1"
    assert np.array_equal(got.X.toarray(), want.to_numpy(dtype=np.float32))


def test_psipred_sample2_has_no_barcode_column(example):
    path = example("psipred_examples_sample2_error.csv")
    with pytest.raises(NamesError) as err:
        read_query(path)
    assert "first column holds numbers" in err.value.message and "cell ids" in err.value.message
    assert err.value.exit_code == NamesError.exit_code


def test_gsrcl_example_without_header_is_refused_clearly(example):
    path = example("ibrahimsaggaf_Example_query_values.csv")
    with pytest.raises(NamesError) as err:
        read_query(path)
    assert "header row holds numbers" in err.value.message and "gene names" in err.value.message
