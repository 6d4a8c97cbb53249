"""The training progress bars: honest epoch counts, a labelled checkpoint score, the SVM fits shown, quiet."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from gsrcl.methods.progress import EpochBar, svm_bar
from gsrcl.methods.schedule import Patience


def test_epoch_bar_with_early_stopping_has_no_total_and_says_why_it_stops():
    patience = Patience(3, min_epochs=4)
    bar = EpochBar("afrcl training", 200, patience, quiet=True)
    assert bar.bar.total is None  # the run may stop at any validation: no count to 200, no ETA
    assert bar.describe(0.5) == "loss 0.5"  # no score before the first validation
    patience.update(0.8, 1)
    bar.update(0.5, 0.8)
    bar.update(0.4)  # no validation after epoch 2: the score stays the one of epoch 1
    assert bar.describe(0.4) == ("loss 0.4, val MCC (checkpoint score) 0.800 after epoch 1, best 0.800, "
                                 "early stop: 0/3 validations without gain")
    patience.update(0.7, 3)
    bar.update(0.3, 0.7)
    assert "val MCC (checkpoint score) 0.700 after epoch 3, best 0.800" in bar.describe(0.3)
    assert "early stop: 1/3 validations without gain" in bar.describe(0.3)
    bar.close()


def test_epoch_bar_without_early_stopping_counts_to_the_epochs():
    bar = EpochBar("gsrcl training", 501, Patience(None, 0), quiet=True, score_name="mean val MCC of 5 types")
    assert bar.bar.total == 501
    bar.update(1.0, 0.25)
    assert bar.describe(1.0).startswith("loss 1, mean val MCC of 5 types (checkpoint score) 0.250 after epoch 1")
    assert "early stop" not in bar.describe(1.0)
    bar.close()
    # no validation cells: nothing can stop the run early, so the bar counts to the maximum
    assert EpochBar("x", 7, Patience(3, 0), quiet=True, validates=False).bar.total == 7


def test_svm_bar_is_silent_when_quiet(capsys):
    with svm_bar("gsrcl SVMs", 2, quiet=True) as bar:
        bar.update(2)
    assert capsys.readouterr().err == ""


def test_gsrcl_shows_its_svm_fits_and_quiet_shows_nothing(capsys):
    from gsrcl.methods.gsrcl import GsRCL

    rng = np.random.default_rng(0)
    y = np.repeat(["a", "b", "c"], 30)
    X = rng.poisson(1.0, size=(90, 12)).astype(np.float32)
    X[:, :3] += 4 * (np.searchsorted(["a", "b", "c"], y)[:, None] == np.arange(3))
    X = sp.csr_matrix(np.log1p(X))
    tiny = dict(epochs=2, hidden=(8,), out=4, head=(4, 4), batch_size=32, val_every=1, min_epochs=0, svm_cv=2,
                threads=1, gene_svm=False, score_cells=None, svm_grid_cells=None)
    GsRCL(**tiny, quiet=False).fit(X, y)
    err = capsys.readouterr().err
    assert "gsrcl training" in err and "mean val MCC of 3 types" in err
    assert "gsrcl SVMs" in err and "3/3" in err  # one SVM per cell type
    GsRCL(**tiny, quiet=True).fit(X, y)
    assert capsys.readouterr().err == ""
