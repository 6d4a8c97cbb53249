"""AF-RCL on a small real subset, with a tiny network and a few epochs."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import f1_score

from gsrcl.methods import get_method
from gsrcl.methods.afrcl import AFRCL

TINY = dict(epochs=6, hidden=(64, 64), out=32, head=(32, 16), svm_cv=2, threads=1, quiet=True)

METHOD = AFRCL  # fitted once with TINY by the ``fitted`` fixture (tests/methods/conftest.py)


@pytest.mark.realdata
def test_learns_cell_types(fitted, split):
    _, _, Xte, yte = split
    assert get_method("afrcl") is AFRCL and fitted.method_name == "afrcl"
    assert fitted.cell_types == sorted(set(yte))
    # five types: chance MCC is 0; a tiny network after 6 epochs is already far above it
    assert fitted.validation_["score"] > 0.8
    p = fitted.predict_proba(Xte)
    assert p.shape == (Xte.shape[0], 5)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-6)
    pred = np.array(fitted.cell_types)[p.argmax(axis=1)]
    assert f1_score(yte, pred, average="macro") > 0.85
    assert fitted.embed(Xte).shape == (Xte.shape[0], 32)
    assert len(fitted.history_["loss"]) == 6 and fitted.history_["skipped_steps"] == 0
    assert np.isfinite(fitted.history_["loss"]).all()


@pytest.mark.realdata
def test_same_seed_same_model_other_seed_differs(fitted, split):
    Xtr, ytr, Xte, _ = split
    again = AFRCL(**TINY).fit(Xtr, ytr)
    assert np.array_equal(again.predict_proba(Xte), fitted.predict_proba(Xte))
    other = AFRCL(**{**TINY, "epochs": 1}, seed=7).fit(Xtr, ytr)
    assert not np.array_equal(other.embed(Xte), fitted.embed(Xte))


@pytest.mark.realdata
def test_state_round_trip_and_inconsistent_state(fitted, split):
    _, _, Xte, _ = split
    config, arrays = fitted.state()
    assert all(isinstance(v, np.ndarray) for v in arrays.values())
    back = AFRCL.from_state(config, arrays)
    assert np.array_equal(back.predict_proba(Xte), fitted.predict_proba(Xte))
    assert np.array_equal(back.embed(Xte), fitted.embed(Xte))

    bad = dict(arrays, **{"encoder.linear1.weight": arrays["encoder.linear1.weight"][:, :-1]})
    with pytest.raises(ValueError):
        AFRCL.from_state(config, bad)
    with pytest.raises(ValueError, match="classes"):
        AFRCL.from_state(dict(config, cell_types=["a", "b", "c", "d", "e"]), arrays)
    with pytest.raises(ValueError, match="genes"):
        AFRCL.from_state(dict(config, n_genes=config["n_genes"] + 1), arrays)
    with pytest.raises(ValueError, match="unexpected"):
        AFRCL.from_state(config, dict(arrays, extra=np.zeros(2)))


@pytest.mark.realdata
def test_prediction_in_blocks_matches(fitted, split):
    _, _, Xte, _ = split
    whole = fitted.predict_proba(Xte)
    fitted.set_params(block=7)  # 100 cells in 15 blocks
    try:
        np.testing.assert_allclose(fitted.predict_proba(Xte), whole, rtol=1e-5, atol=1e-6)
    finally:
        fitted.set_params(block=4096)


@pytest.mark.realdata
def test_early_stopping_and_no_validation(split):
    Xtr, ytr, _, _ = split
    m = AFRCL(**{**TINY, "epochs": 40}, val_every=1, patience=2, min_epochs=3).fit(Xtr, ytr)
    assert m.validation_["stopped_early"] and m.validation_["epochs_run"] < 40
    assert m.validation_["best_epoch"] == "mean" or m.validation_["best_epoch"] <= m.validation_["epochs_run"]
    # no validation cells: the last epoch is kept and no score is claimed
    m = AFRCL(**{**TINY, "epochs": 2}).fit(Xtr, ytr, Xtr[:0], ytr[:0])
    assert m.validation_["score"] is None and m.validation_["best_epoch"] == 2


@pytest.mark.realdata
def test_bad_parameters(split):
    Xtr, ytr, _, _ = split
    with pytest.raises(TypeError, match="hiden"):  # an unknown name fails at once
        AFRCL(hiden=(3,))
    with pytest.raises(ValueError, match="preset"):  # values are checked by fit
        AFRCL(preset="fastest").fit(Xtr, ytr)
    with pytest.raises(ValueError, match="epochs"):
        AFRCL(epochs=0).fit(Xtr, ytr)


@pytest.mark.realdata
def test_subsampled_scoring_and_grid(split):
    from gsrcl.methods.labels import stratified_subset

    Xtr, ytr, Xte, yte = split
    sub = stratified_subset(ytr, 60, 0)
    assert 55 <= len(sub) <= 70 and set(ytr[sub]) == set(ytr)  # every type kept, at least 5 cells each
    assert stratified_subset(ytr, 10_000, 0) is None
    # large references: checkpoints scored on 60 training cells, C/gamma searched on 60, the SVM fitted on all
    m = AFRCL(**{**TINY, "epochs": 2}, score_cells=60, svm_grid_cells=60).fit(Xtr, ytr)
    assert set(m.validation_["svm"]) >= {"C", "gamma"}
    pred = np.array(m.cell_types)[m.predict_proba(Xte).argmax(axis=1)]
    assert f1_score(yte, pred, average="macro") > 0.8


@pytest.mark.realdata
def test_averaged_checkpoint_is_a_candidate(split):
    import torch

    from gsrcl.methods.checkpoints import WeightAverage, refresh_batch_norm
    from gsrcl.methods.presets import PRESETS
    from gsrcl.nn import Encoder

    # the mean of three states, kept in memory or in a file read in pieces (CHUNK made small to cut tensors)
    torch.manual_seed(0)
    nets = [Encoder(20, (8,), 4) for _ in range(3)]
    expected = {k: sum(n.state_dict()[k] for n in nets) / 3 for k in nets[0].state_dict()
                if nets[0].state_dict()[k].is_floating_point()}
    assert not torch.equal(nets[0].state_dict()["linears.0.weight"], nets[1].state_dict()["linears.0.weight"])
    for on_disk in (False, True):
        with WeightAverage(on_disk=on_disk) as avg:
            avg.CHUNK = 7
            for n in nets:
                avg.add(n)
            target = Encoder(20, (8,), 4)
            avg.load_into(target)
        for k, v in expected.items():
            torch.testing.assert_close(target.state_dict()[k], v, rtol=1e-6, atol=1e-7)
    with pytest.raises(RuntimeError, match="no weights"):
        WeightAverage().load_into(target)
    # BatchNorm statistics recomputed in one pass: the running mean is the mean pre-normalisation activation
    Xtr, ytr, Xte, yte = split
    enc = Encoder(Xtr.shape[1], (16,), 8)
    refresh_batch_norm(enc, Xtr, Xtr.shape[0], torch.device("cpu"))
    bn = enc.norms[0]
    with torch.no_grad():
        pre = enc.linears[0](torch.from_numpy(Xtr.toarray()))
    np.testing.assert_allclose(bn.running_mean.numpy(), pre.mean(0).numpy(), rtol=1e-4, atol=1e-5)
    assert not enc.training and bn.momentum == 0.1

    # in training: every validation after the first is averaged, and the mean is scored as one more candidate
    m = AFRCL(**{**TINY, "epochs": 5}, val_every=1, patience=0, average_checkpoints=True).fit(Xtr, ytr)
    assert m.history_["averaged_checkpoints"] == 4
    assert m.history_["validation"][-1][0] == "mean"
    scores = [s for _, s in m.history_["validation"]]
    assert m.validation_["score"] == max(scores)
    assert (m.validation_["best_epoch"] == "mean") == (scores[-1] >= max(scores[:-1]))
    off = AFRCL(**{**TINY, "epochs": 5}, val_every=1, patience=0, average_checkpoints=False).fit(Xtr, ytr)
    assert "averaged_checkpoints" not in off.history_ and len(off.history_["validation"]) == 5
    # "always" (the default preset): the mean is the model kept, whatever the single checkpoints score
    always = AFRCL(**{**TINY, "epochs": 5}, val_every=1, patience=0, average_checkpoints="always").fit(Xtr, ytr)
    assert always.validation_["best_epoch"] == "mean"
    assert always.validation_["score"] == always.history_["validation"][-1][1]
    assert m.history_["validation"] == always.history_["validation"]  # the same training up to the choice
    assert PRESETS["afrcl"]["default"].params.average_checkpoints == "always" and not PRESETS["afrcl"]["paper"].params.average_checkpoints


@pytest.mark.realdata
def test_gene_scaling_is_learnt_from_the_reference_stored_and_applied(fitted, split):
    from gsrcl.methods.gene_scale import SCALE_CLIP
    from gsrcl.methods.presets import PRESETS

    Xtr, ytr, Xte, _ = split
    assert fitted.gene_scale_ is None  # the default
    fitted = AFRCL(**dict(TINY, epochs=2), scale_genes=True).fit(Xtr, ytr)
    sd = Xtr.toarray().astype(np.float64).std(axis=0)
    np.testing.assert_allclose(fitted.gene_scale_, 1.0 / (sd + 0.1), rtol=1e-4)
    # off in both presets: it broke the embedding under a chemistry shift (docs/decisions.md)
    assert not PRESETS["afrcl"]["default"].params.scale_genes and not PRESETS["afrcl"]["paper"].params.scale_genes
    # prediction scales the query the same way: without the scale the same weights give other probabilities
    config, arrays = fitted.state()
    plain = AFRCL.from_state(config, {k: v for k, v in arrays.items() if k != "input.scale"})  # an older model
    assert plain.gene_scale_ is None
    assert not np.allclose(plain.predict_proba(Xte), fitted.predict_proba(Xte))
    big = Xte.copy()
    big.data[:] = 1e3
    assert fitted._scaled(big).data.max() == SCALE_CLIP
    assert arrays["input.scale"].shape == (Xtr.shape[1],)
    with pytest.raises(ValueError, match="gene scale"):
        AFRCL.from_state(config, dict(arrays, **{"input.scale": arrays["input.scale"][:-1]}))
    with pytest.raises(ValueError, match="gene scale"):
        AFRCL.from_state(config, dict(arrays, **{"input.scale": -arrays["input.scale"]}))


@pytest.mark.realdata
def test_unexpressed_genes_are_left_out_with_the_same_arithmetic(split):
    import torch

    from gsrcl.methods.presets import PRESETS

    Xtr, ytr, Xte, _ = split
    rng = np.random.default_rng(0)
    unexpressed = np.sort(rng.choice(np.flatnonzero(Xtr.getnnz(axis=0) > 0), 60, replace=False))
    expressed = np.setdiff1d(np.arange(Xtr.shape[1]), unexpressed)
    Xz = Xtr.tolil()
    Xz[:, unexpressed] = 0  # genes that none of the reference cells expresses
    Xz = Xz.tocsr()
    Xz.eliminate_zeros()
    assert PRESETS["afrcl"]["default"].params.skip_unexpressed_genes and not PRESETS["afrcl"]["paper"].params.skip_unexpressed_genes
    fitted = AFRCL(**TINY).fit(Xz, ytr)
    every = AFRCL(**TINY, skip_unexpressed_genes=False).fit(Xz, ytr)
    assert fitted.history_["genes_unexpressed"] == len(unexpressed) and every.history_["genes_unexpressed"] == 0

    w_skip = fitted.encoder_.linears[0].weight.detach().numpy()
    w_every = every.encoder_.linears[0].weight.detach().numpy()
    assert w_skip.shape == w_every.shape == (Xtr.shape[1], 64) and fitted.encoder_.n_inputs == Xtr.shape[1]
    assert not w_skip[unexpressed].any() and w_every[unexpressed].any()
    # the same training otherwise, bit for bit: initial weights, batches, updates, checkpoint, SVM
    np.testing.assert_array_equal(w_skip[expressed], w_every[expressed])
    for key, value in every.encoder_.state_dict().items():
        if key != "linears.0.weight":
            assert torch.equal(fitted.encoder_.state_dict()[key], value), key
    assert fitted.validation_ == every.validation_
    # query cells without those genes get the same probabilities; the genes no reference cell had are ignored
    Xq = Xte.tolil()
    Xq[:, unexpressed] = 0
    Xq = Xq.tocsr()
    np.testing.assert_array_equal(fitted.predict_proba(Xq), every.predict_proba(Xq))
    shifted = Xq.tolil()
    shifted[:, unexpressed[:50]] = 5.0
    np.testing.assert_array_equal(fitted.predict_proba(shifted.tocsr()), fitted.predict_proba(Xq))


def test_restrict_and_expand_inputs_round_trip():
    import torch

    from gsrcl.nn import Encoder

    torch.manual_seed(0)
    enc = Encoder(10, (6,), 3).eval()
    keep = np.array([1, 4, 5, 9])
    x = torch.zeros(2, 10)
    x[:, keep] = torch.randn(2, 4)
    before = enc(x)
    enc.restrict_inputs(keep)
    assert enc.n_inputs == 4 and enc.linears[0].weight.shape == (4, 6)
    torch.testing.assert_close(enc(x[:, keep]), before)
    enc.expand_inputs(keep, 10)
    torch.testing.assert_close(enc(x), before)
    assert not enc.linears[0].weight[[0, 2, 3, 6, 7, 8]].any()
    with pytest.raises(ValueError, match="kept inputs"):
        enc.expand_inputs(keep[:2], 10)


@pytest.mark.realdata
def test_classifiers_see_unit_length_embeddings(fitted, split):
    import torch

    from gsrcl.methods.encoding import encode
    from gsrcl.methods.presets import PRESETS

    Xtr, _, Xte, _ = split
    assert PRESETS["afrcl"]["default"].params.normalize_embedding and not PRESETS["afrcl"]["paper"].params.normalize_embedding
    raw = encode(fitted.encoder_, fitted._scaled(Xte), torch.device("cpu"))
    assert not np.allclose(np.linalg.norm(raw, axis=1), 1.0, rtol=1e-2)
    unit = raw / np.linalg.norm(raw, axis=1, keepdims=True)
    np.testing.assert_allclose(fitted.embed(Xte), unit, rtol=1e-5, atol=1e-6)
    # the final SVM was fitted on unit-length rows, and the query's rows are scaled the same way
    np.testing.assert_allclose(np.linalg.norm(fitted.svc_.support_vectors_, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(fitted.predict_proba(Xte), fitted.svc_.predict_proba(unit)[:, fitted._order],
                               rtol=1e-5, atol=1e-7)
    # a model saved before the setting existed is classified on the plain encoder output, as it was fitted
    config, arrays = fitted.state()
    assert config["hyperparameters"]["normalize_embedding"] is True
    older = {k: v for k, v in config["hyperparameters"].items() if k != "normalize_embedding"}
    old = AFRCL.from_state(dict(config, hyperparameters=older), arrays)
    assert old.params["normalize_embedding"] is False
    np.testing.assert_allclose(old.embed(Xte), raw, rtol=1e-6)
    paper = AFRCL(**TINY, preset="paper")
    assert paper._represent(raw) is raw


def test_expressed_genes_in_chunks_ignore_stored_zeros(monkeypatch):
    import scipy.sparse as sp

    import gsrcl.methods.afrcl as afrcl

    rng = np.random.default_rng(4)
    X = sp.random(200, 80, density=0.05, format="csr", dtype=np.float32, random_state=rng)
    X[:, 10:20] = 0
    X.eliminate_zeros()
    X_val = sp.random(30, 80, density=0.05, format="csr", dtype=np.float32, random_state=rng)
    X_val[:, 10:20] = 0
    X_val.eliminate_zeros()
    X_val.indices[0], X_val.data[0] = 12, 0.0  # a stored zero in an unexpressed gene: still unexpressed
    X_val.sort_indices()
    expected = np.setdiff1d(np.arange(80), np.arange(10, 20))
    monkeypatch.setattr(afrcl, "SEEN_CHUNK", 7)
    np.testing.assert_array_equal(afrcl.expressed_genes(X, X_val), expected)
    monkeypatch.setattr(afrcl, "SEEN_CHUNK", 1 << 24)
    np.testing.assert_array_equal(afrcl.expressed_genes(X, X_val), expected)


@pytest.mark.realdata
def test_only_the_final_svms_cells_are_encoded_above_its_cap(split, monkeypatch):
    """Above the final SVM's cap, the cells it fits on are encoded, and no others; its subset is the one it
    would draw from every cell's embedding."""
    import gsrcl.methods.afrcl as afrcl_module
    from gsrcl.methods import classifiers

    Xtr, ytr = split[0], split[1]
    monkeypatch.setattr(classifiers, "FINAL_SVM_MAX_CELLS", 80)
    calls = []
    fit_final = afrcl_module.fit_final_svc

    def spy(emb, y, *args, **kwargs):
        calls.append((emb, y, kwargs.get("capped")))
        return fit_final(emb, y, *args, **kwargs)

    monkeypatch.setattr(afrcl_module, "fit_final_svc", spy)
    model = AFRCL(**TINY).fit(Xtr, ytr)
    (emb, y, capped), = calls
    assert capped and len(y) == len(emb) < len(ytr) and abs(len(y) - 80) <= 2 * len(np.unique(ytr))
    full = model.embed(Xtr).astype(np.float64)  # every cell, by the final encoder
    d = ((emb[:, None, :] - full[None, :, :]) ** 2).sum(axis=2)
    nearest = d.argmin(axis=1)
    assert d.min(axis=1).max() < 1e-8 and len(set(nearest)) == len(y)  # distinct cells, embedded as all cells are
    assert (np.asarray(ytr)[nearest] == y).all()
