"""GsRCL on a small real subset, with a tiny network and a few epochs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from sklearn.metrics import f1_score

from gsrcl.methods import get_method
from gsrcl.methods.checkpoints import better
from gsrcl.methods.gsrcl import GENES, GsRCL

TINY = dict(epochs=16, hidden=(64, 64), out=32, head=(32, 16), lr=1e-3, batch_size=64, shuffle=True, val_every=5,
            min_epochs=0, svm_cv=2, threads=1, quiet=True, average_checkpoints=True, gene_svm=False)

METHOD = GsRCL  # fitted once with TINY by the ``fitted`` fixture (tests/methods/conftest.py)


@pytest.mark.realdata
def test_learns_one_vs_rest(fitted, split):
    _, _, Xte, yte = split
    assert get_method("gsrcl") is GsRCL and fitted.method_name == "gsrcl"
    assert fitted.validation_["score"] > 0.5  # mean binary MCC over the 5 tasks; chance is 0
    scores = fitted.predict_scores(Xte)
    p = fitted.predict_proba(Xte)
    assert scores.shape == p.shape == (Xte.shape[0], 5)
    assert ((scores >= 0) & (scores <= 1)).all()
    assert not np.allclose(scores.sum(axis=1), 1.0)  # un-normalised one-vs-rest probabilities
    np.testing.assert_allclose(p, scores / scores.sum(axis=1, keepdims=True), rtol=1e-12)
    pred = np.array(fitted.cell_types)[p.argmax(axis=1)]
    assert f1_score(yte, pred, average="macro") > 0.8


@pytest.mark.realdata
def test_one_encoder_run_distinct_checkpoints(fitted):
    # the encoder is trained once; each task points at one of the stored (distinct) checkpoints
    assert len(fitted.history_["loss"]) == fitted.validation_["epochs_run"][0]
    assert "runs" not in fitted.history_
    assert sorted(set(fitted.task_encoder_)) == list(range(len(fitted.encoders_)))
    epochs = [fitted.validation_["tasks"][t]["epoch"] for t in fitted.cell_types]
    assert len(fitted.encoders_) == len(set(epochs))
    config, arrays = fitted.state()
    stored = {k.split(".")[0] for k in arrays if k.startswith("encoder")}
    assert stored == {f"encoder{j}" for j in range(len(fitted.encoders_))}
    counts = np.bincount(fitted.task_encoder_)
    assert counts[fitted.embed_encoder_] == counts.max()


@pytest.mark.realdata
def test_deterministic_and_state_round_trip(fitted, split):
    Xtr, ytr, Xte, _ = split
    again = GsRCL(**TINY).fit(Xtr, ytr)
    assert np.array_equal(again.predict_scores(Xte), fitted.predict_scores(Xte))
    config, arrays = fitted.state()
    back = GsRCL.from_state(config, arrays)
    assert np.array_equal(back.predict_scores(Xte), fitted.predict_scores(Xte))
    assert np.array_equal(back.embed(Xte), fitted.embed(Xte))
    bad = dict(config, tasks=[dict(t, encoder=9) for t in config["tasks"]])
    with pytest.raises(ValueError, match="encoder 9"):
        GsRCL.from_state(bad, arrays)
    with pytest.raises(ValueError):
        GsRCL.from_state(config, {k: v for k, v in arrays.items() if not k.startswith("svc0.")})


@pytest.mark.realdata
def test_gene_svm_replaces_the_encoder_where_it_validates_better(fitted, split, monkeypatch):
    Xtr, ytr, Xte, _ = split
    # the real comparison: a type is on the genes exactly when the gene SVM's validation MCC is higher
    m = GsRCL(**{**TINY, "gene_svm": True}).fit(Xtr, ytr)
    tasks = m.validation_["tasks"]
    for k, t in enumerate(m.cell_types):
        on_genes = tasks[t]["gene_score"] > tasks[t]["encoder_score"]
        assert (tasks[t]["input"] == "genes") == on_genes == (m.task_encoder_[k] == -1)
        assert tasks[t]["score"] == (tasks[t]["gene_score"] if on_genes else tasks[t]["encoder_score"])
    # gene scores that never win leave the model as without them; scores that always win put every type on
    # the genes, with the most chosen checkpoint kept for the embedding
    monkeypatch.setattr(GsRCL, "_score_genes", lambda self, *a: {k: -2.0 for k in range(5)})
    never = GsRCL(**{**TINY, "gene_svm": True}).fit(Xtr, ytr)
    assert np.array_equal(never.predict_scores(Xte), fitted.predict_scores(Xte))
    monkeypatch.setattr(GsRCL, "_score_genes", lambda self, *a: {k: 2.0 for k in range(5)})
    every = GsRCL(**{**TINY, "gene_svm": True}).fit(Xtr, ytr)
    assert every.task_encoder_ == [-1] * 5 and len(every.encoders_) == 1
    assert all(svc.n_features_in_ == Xtr.shape[1] for svc in every.svcs_)
    direct = np.column_stack([svc.predict_proba(Xte)[:, list(svc.classes_).index(1)] for svc in every.svcs_])
    np.testing.assert_allclose(every.predict_scores(Xte), direct, rtol=1e-12)
    config, arrays = every.state()
    assert all(t["encoder"] is None for t in config["tasks"])
    back = GsRCL.from_state(config, arrays)
    assert np.array_equal(back.predict_scores(Xte), every.predict_scores(Xte))
    assert np.array_equal(back.embed(Xte), every.embed(Xte))
    # a reference too large for the gene SVMs' dense copy keeps the encoders' SVMs
    import gsrcl.methods.gsrcl as module

    monkeypatch.setattr(module, "DENSE_GENES_MAX", Xtr.shape[1])
    large = GsRCL(**{**TINY, "gene_svm": True}).fit(Xtr, ytr)
    assert large.validation_["gene_svm"] is False and every.validation_["gene_svm"] is True
    assert np.array_equal(large.predict_scores(Xte), fitted.predict_scores(Xte))
    config, arrays = never.state()  # an embedding's SVM read as a gene SVM
    config["tasks"][0]["encoder"] = None
    with pytest.raises(ValueError, match="gene SVM of .* takes 32 features"):
        GsRCL.from_state(config, arrays)


@pytest.mark.realdata
def test_gene_svm_pool_averages_the_encoder_and_gene_svms(fitted, split, monkeypatch):
    Xtr, ytr, Xte, _ = split
    m = GsRCL(**{**TINY, "gene_svm": "pool"}).fit(Xtr, ytr)
    # the encoders and their SVMs are those of the run without gene SVMs (same seed); every type adds a gene SVM
    assert m.task_encoder_ == fitted.task_encoder_ and GENES not in m.task_encoder_
    assert all(svc.n_features_in_ == Xtr.shape[1] for svc in m.gene_svcs_)
    assert {m.validation_["tasks"][t]["input"] for t in m.cell_types} == {"encoder+genes"}

    def positive(svc, X):
        return svc.predict_proba(X)[:, list(svc.classes_).index(1)]

    genes = np.column_stack([positive(svc, Xte) for svc in m.gene_svcs_])
    np.testing.assert_allclose(m.predict_scores(Xte), (fitted.predict_scores(Xte) + genes) / 2, rtol=1e-10)
    config, arrays = m.state()
    assert all("gene_svc" in t for t in config["tasks"])
    back = GsRCL.from_state(config, arrays)
    assert np.array_equal(back.predict_scores(Xte), m.predict_scores(Xte))
    with pytest.raises(ValueError, match="unexpected arrays"):  # a gene SVM the tasks do not name
        GsRCL.from_state(dict(config, tasks=[{k: v for k, v in t.items() if k != "gene_svc"}
                                             for t in config["tasks"]]), arrays)
    bad = dict(config, tasks=[dict(t, encoder=None) for t in config["tasks"]])
    with pytest.raises(ValueError, match="pools a gene SVM but has no encoder"):
        GsRCL.from_state(bad, arrays)
    with pytest.raises(ValueError, match="gene_svm is one of False, True, 'pool'"):
        GsRCL(gene_svm="both").fit(Xtr, ytr)  # parameters are checked by fit


@pytest.mark.realdata
def test_independent_encoders(split):
    Xtr, ytr, Xte, _ = split
    m = GsRCL(**{**TINY, "epochs": 2, "val_every": 1}, independent_encoders=True).fit(Xtr, ytr)
    assert len(m.history_["runs"]) == 5
    assert {m.validation_["tasks"][t]["run"] for t in m.cell_types} == set(range(5))
    assert len(m.encoders_) == 5 and sorted(m.task_encoder_) == list(range(5))
    assert GsRCL.from_state(*m.state()).predict_scores(Xte).shape == (Xte.shape[0], 5)


@pytest.mark.realdata
def test_batch_norm_rule_of_the_paper(split):
    Xtr, ytr, _, _ = split
    # BN is on only when the training cells outnumber the batch size (docs/methods.md §5.16)
    small = GsRCL(**{**TINY, "epochs": 1, "batch_size": 8192, "batch_norm": "auto"}).fit(Xtr, ytr)
    assert small.validation_["batch_norm"] is False and not small.encoders_[0].norms
    big = GsRCL(**{**TINY, "epochs": 1, "batch_size": 64, "batch_norm": "auto"}).fit(Xtr, ytr)
    assert big.validation_["batch_norm"] is True and len(big.encoders_[0].norms) == 2


def test_checkpoint_ties():
    assert better(0.9, None, "first") and better(0.9, None, "later")
    assert better(0.9, 0.9, "later") and not better(0.9, 0.9, "first")
    assert not better(0.8, 0.9, "later") and better(0.95, 0.9, "first")
    assert not better(math.nan, 0.5, "later")


def test_presets():
    paper = GsRCL(preset="paper").params
    assert paper["hidden"] == (4096, 4096, 4096) and paper["out"] == 2048 and paper["head"] == (512, 128)
    assert paper["lr"] == 1e-4 and paper["batch_size"] == 8192 and not paper["shuffle"]
    assert paper["epochs"] == 3001 and paper["val_every"] == 50 and paper["temperature"] == 0.07
    assert paper["ties"] == "first" and paper["selection"] == "grid" and paper["patience"] is None
    assert paper["svm_ties"] == "first" and not paper["average_checkpoints"]  # the original's rules
    assert GsRCL(epochs=5).params["epochs"] == 5


@pytest.mark.realdata
def test_type_without_validation_cells(split):
    Xtr, ytr, _, _ = split
    # a type with no validation cell (a rare class) takes the checkpoint chosen by most tasks
    rng = np.random.default_rng(0)
    val = rng.random(len(ytr)) < 0.25
    val &= ytr != "NK cell"
    m = GsRCL(**{**TINY, "epochs": 6}).fit(Xtr[~val], ytr[~val], Xtr[val], ytr[val])
    tasks = m.validation_["tasks"]
    assert tasks["NK cell"]["score"] is None
    others = [tasks[t]["encoder"] for t in m.cell_types if t != "NK cell"]
    assert tasks["NK cell"]["encoder"] == max(set(others), key=lambda j: (others.count(j), tasks_epoch(tasks, j)))


def tasks_epoch(tasks, j):
    # the averaged weights ("mean") are keyed epoch 0 in training
    return max(0 if t["epoch"] == "mean" else t["epoch"] for t in tasks.values() if t["encoder"] == j)


@pytest.mark.realdata
def test_checkpoints_spilled_to_disk_give_the_same_model(fitted, split, tmp_path, monkeypatch):
    import tempfile

    from gsrcl.methods.checkpoints import CheckpointStore

    Xtr, ytr, Xte, _ = split
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    # no memory budget: every checkpoint but the first goes to a temporary folder, removed afterwards
    spilled = GsRCL(**TINY, checkpoint_memory_mb=0).fit(Xtr, ytr)
    assert np.array_equal(spilled.predict_scores(Xte), fitted.predict_scores(Xte))
    assert list(tmp_path.iterdir()) == []

    enc = fitted.encoders_[0]
    with CheckpointStore(max_bytes=0) as store:
        store.put("a", enc)
        store.put("b", enc)
        assert "b" in store and list(tmp_path.iterdir())  # on disk
        for key in "ab":
            got = store.get(key)
            assert all(torch.equal(got[k], v) for k, v in enc.state_dict().items())
        store.retain({"a"})
        assert "b" not in store and "a" in store
    assert list(tmp_path.iterdir()) == []


def test_large_references_validate_and_stop_by_steps():
    from gsrcl.methods.schedule import step_schedule

    p = GsRCL().params
    # 640 and 800 training cells (5 and 7 steps of 128): the preset's epochs, as measured
    assert step_schedule(p, 5) == (5, 20) and step_schedule(p, 7) == (5, 20)
    # 8,000 training cells (63 steps): every epoch, and at least 140 steps rather than 20 epochs
    assert step_schedule(p, 63) == (1, 3)
    assert step_schedule(GsRCL(preset="paper").params, 1) == (50, 0)  # the paper's schedule is untouched


@pytest.mark.realdata
def test_averaged_checkpoint_is_a_candidate_for_every_task(fitted, split):
    Xtr, ytr, Xte, _ = split
    # TINY validates after epochs 1, 6, 11, 16: the last three are averaged and scored as one more candidate
    assert fitted.params["average_checkpoints"]
    assert not GsRCL().params["average_checkpoints"]  # off in the default preset (no measured gain)
    mean_entry = fitted.history_["validation"][-1]
    assert mean_entry[0] == "mean" and len(fitted.history_["validation"]) == 5
    for k, t in enumerate(fitted.cell_types):
        task = fitted.validation_["tasks"][t]
        per_epoch = [v[1][str(k)] for v in fitted.history_["validation"]]
        assert task["score"] == max(per_epoch)
        # later on ties: the mean (scored last) is taken whenever it scores at least the best epoch
        assert (task["epoch"] == "mean") == (mean_entry[1][str(k)] >= max(per_epoch[:-1]))
    off = GsRCL(**{**TINY, "epochs": 6, "average_checkpoints": False}).fit(Xtr, ytr)
    assert all(v[0] != "mean" for v in off.history_["validation"])
    assert all(off.validation_["tasks"][t]["epoch"] != "mean" for t in off.cell_types)


@pytest.mark.realdata
def test_classifiers_can_see_unit_length_embeddings(split):
    from gsrcl.methods.encoding import encode

    Xtr, ytr, Xte, _ = split
    model = GsRCL(**dict(TINY, epochs=6, average_checkpoints=False), normalize_embedding=True).fit(Xtr, ytr)
    for svc in model.svcs_:  # each type's SVM was fitted on unit-length rows
        np.testing.assert_allclose(np.linalg.norm(svc.support_vectors_, axis=1), 1.0, rtol=1e-5)
    raw = encode(model.encoders_[model.embed_encoder_], Xte, torch.device("cpu"))
    assert not np.allclose(np.linalg.norm(raw, axis=1), 1.0, rtol=1e-2)
    np.testing.assert_allclose(model.embed(Xte), raw / np.linalg.norm(raw, axis=1, keepdims=True), rtol=1e-5,
                               atol=1e-6)
    k = 0
    unit = encode(model.encoders_[model.task_encoder_[k]], Xte, torch.device("cpu"))
    unit /= np.linalg.norm(unit, axis=1, keepdims=True)
    np.testing.assert_allclose(model.predict_scores(Xte)[:, k],
                               model.svcs_[k].predict_proba(unit)[:, model._pos[k]], rtol=1e-5, atol=1e-7)
    # the setting is saved; a model saved before it existed is classified on the plain output
    config, arrays = model.state()
    assert GsRCL.from_state(config, arrays).params["normalize_embedding"] is True
    older = {key: v for key, v in config["hyperparameters"].items() if key != "normalize_embedding"}
    old = GsRCL.from_state(dict(config, hyperparameters=older), arrays)
    assert old.params["normalize_embedding"] is False
    np.testing.assert_allclose(old.embed(Xte), raw, rtol=1e-6)


@pytest.mark.realdata
def test_gene_scaling_is_learnt_stored_and_applied(split):
    from gsrcl.methods.encoding import encode
    from gsrcl.methods.gene_scale import GENE_SCALE_KEY

    Xtr, ytr, Xte, _ = split
    model = GsRCL(**dict(TINY, epochs=2, val_every=1, average_checkpoints=False), scale_genes=True).fit(Xtr, ytr)
    # the scale comes from the training and validation cells together (fit splits Xtr itself here)
    sd = Xtr.toarray().astype(np.float64).std(axis=0)
    np.testing.assert_allclose(model.gene_scale_, 1.0 / (sd + 0.1), rtol=1e-4)
    assert not GsRCL().params["scale_genes"] and not GsRCL(preset="paper").params["scale_genes"]
    # every query is scaled the same way before the encoder
    scaled = sp.csr_matrix(np.minimum(Xte.toarray() * model.gene_scale_, 10.0))
    expect = model._represent(encode(model.encoders_[model.embed_encoder_], scaled, torch.device("cpu")))
    np.testing.assert_allclose(model.embed(Xte), expect, rtol=1e-4, atol=1e-5)
    config, arrays = model.state()
    assert arrays[GENE_SCALE_KEY].shape == (Xtr.shape[1],)
    back = GsRCL.from_state(config, arrays)
    assert np.array_equal(back.predict_scores(Xte), model.predict_scores(Xte))
    plain = GsRCL.from_state(config, {k: v for k, v in arrays.items() if k != GENE_SCALE_KEY})
    assert plain.gene_scale_ is None and not np.allclose(plain.predict_scores(Xte), model.predict_scores(Xte))
    with pytest.raises(ValueError, match="gene scale"):
        GsRCL.from_state(config, {**arrays, GENE_SCALE_KEY: arrays[GENE_SCALE_KEY][:-1]})
