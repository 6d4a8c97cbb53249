"""Ensembles of one method's models (gsrcl.methods.ensemble), trained by gsrcl.train on a small real subset."""

from __future__ import annotations

import json

import numpy as np
import pytest

from gsrcl.errors import GsrclError, InvalidReferenceError
from gsrcl.methods.presets import PRESETS
from gsrcl.methods.ensemble import Ensemble, member_seeds
from gsrcl.reference import Reference, manifest_checksum
from gsrcl.training import train
from gsrcl.values import log1p_normalized

TINY = dict(epochs=3, hidden=[32, 32], out=16, head=[16, 8], svm_cv=2, threads=1, quiet=True)


def model_input(adata):
    X = adata.X.copy().astype(np.float32)
    X.data = np.log1p(X.data)
    return log1p_normalized(X, 10_000)


@pytest.fixture(scope="module")
def pair(small_adata):
    adata = small_adata()
    return adata, train(adata, "cell_type", "afrcl", ensemble=2, **TINY), train(adata, "cell_type", "afrcl",
                                                                                ensemble=1, **TINY)


@pytest.mark.realdata
def test_member_seeds_start_at_the_seed_and_are_distinct(small_adata):
    assert member_seeds(1111, 1) == [1111]
    seeds = member_seeds(1111, 5)
    assert seeds[0] == 1111 and len(set(seeds)) == 5 and seeds == member_seeds(1111, 5)
    assert member_seeds(1112, 5)[1:] != seeds[1:]
    for bad in (0, -1, 2.5):
        with pytest.raises(ValueError):
            member_seeds(1111, bad)
    with pytest.raises(GsrclError, match="ensemble"):
        train(small_adata(), "cell_type", "afrcl", ensemble=0, **TINY)
    assert PRESETS["afrcl"]["default"].ensemble == 5 and PRESETS["afrcl"]["paper"].ensemble == 1


@pytest.mark.realdata
def test_scores_are_the_members_mean_and_the_first_member_is_the_single_model(pair):
    adata, ens, single = pair
    X = model_input(adata)
    model = ens.model
    assert isinstance(model, Ensemble) and not isinstance(single.model, Ensemble)
    a, b = model.members
    assert [a.seed, b.seed] == member_seeds(1111, 2) == ens.manifest["training"]["member_seeds"]
    # the same seed gives the same model: the first member is the model trained alone
    assert np.array_equal(a.predict_scores(X), single.model.predict_scores(X))
    assert not np.allclose(a.predict_scores(X), b.predict_scores(X))
    np.testing.assert_allclose(model.predict_scores(X), (a.predict_scores(X) + b.predict_scores(X)) / 2)
    np.testing.assert_allclose(model.predict_proba(X).sum(axis=1), 1.0, atol=1e-9)
    emb = model.embed(X[:7])
    assert emb.shape == (7, 32) and np.array_equal(emb[:, :16], a.embed(X[:7]))
    assert ens.manifest["hyperparameters"]["member_seeds"] == member_seeds(1111, 2)
    assert len(ens.manifest["validation"]["members"]) == 2


@pytest.mark.realdata
def test_saved_ensemble_loads_to_the_same_scores_and_is_checked(pair, tmp_path):
    adata, ens, _ = pair
    X = model_input(adata)
    path = ens.save(tmp_path, "ens")
    loaded = Reference.load(path)
    assert isinstance(loaded.model, Ensemble)
    assert np.array_equal(loaded.model.predict_scores(X), ens.model.predict_scores(X))
    assert all(k.startswith(("member0.", "member1.", "novelty.", "linear.")) for k in loaded.arrays)

    # a manifest that lists a third member, which has no arrays, is refused in one line
    manifest = json.loads((path / "manifest.json").read_text())
    members = manifest["model"]["members"]
    manifest["model"]["members"] = members + members[:1]
    manifest["manifest_sha256"] = manifest_checksum(manifest)  # the manifest made to agree, its checksum too
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(InvalidReferenceError, match="rebuilt"):
        Reference.load(path)
    # arrays of no member, or members that disagree on the cell types, are refused
    config, arrays = ens.model.state()
    with pytest.raises(ValueError, match="unexpected arrays"):
        Ensemble.from_state(type(ens.model.members[0]), config, {**arrays, "member5.encoder.linear0.weight": arrays[
            "member0.encoder.linear0.weight"]})
    a, b = Ensemble.from_state(type(ens.model.members[0]), config, arrays).members
    b.cell_types = b.cell_types[::-1]
    with pytest.raises(ValueError, match="same cell types"):
        Ensemble([a, b])


@pytest.mark.realdata
def test_geometric_pool_is_the_renormalised_mean_of_the_logs(small_adata, pair):
    adata, ens, _ = pair
    X = model_input(adata)
    config, arrays = ens.model.state()
    model = Ensemble.from_state(type(ens.model.members[0]), config, arrays)
    model.pool = "geometric"
    a, b = (m.predict_scores(X) for m in model.members)
    g = np.sqrt(np.maximum(a, 1e-12) * np.maximum(b, 1e-12))
    np.testing.assert_allclose(model.predict_scores(X), g / g.sum(axis=1, keepdims=True), rtol=1e-9)
    assert not np.allclose(model.predict_scores(X), (a + b) / 2)
    with pytest.raises(ValueError, match="unknown pool"):
        Ensemble(model.members, pool="median")
    with pytest.raises(GsrclError, match="unknown pool"):
        train(small_adata(), "cell_type", "afrcl", ensemble=2, pool="median", **TINY)
