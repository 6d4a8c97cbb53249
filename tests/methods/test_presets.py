"""The presets table and the estimators' parameters, scikit-learn style: stored as given, resolved against the
preset, checked by fit, restored from a saved model."""

from __future__ import annotations

import dataclasses
import inspect

import numpy as np
import pytest
from sklearn.base import clone

from gsrcl.methods.afrcl import AFRCL
from gsrcl.methods.gsrcl import GsRCL
from gsrcl.methods.presets import ABSENT_MEANS, PRESETS, RUNTIME, AFRCLParams, GsRCLParams, get_preset
from gsrcl.values import CP10K


def test_the_table_holds_both_methods_with_the_same_preset_names():
    assert set(PRESETS) == {"afrcl", "gsrcl"}
    assert list(PRESETS["afrcl"]) == list(PRESETS["gsrcl"]) == ["paper", "default", "demo"]
    assert isinstance(PRESETS["afrcl"]["default"].params, AFRCLParams)
    assert isinstance(PRESETS["gsrcl"]["default"].params, GsRCLParams)
    for method in PRESETS:
        paper, default, demo = (PRESETS[method][n] for n in ("paper", "default", "demo"))
        assert paper.library_size is None and default.library_size == demo.library_size == CP10K
        # the demo preset is the default with fewer epochs, nothing else
        changed = {k for k, v in dataclasses.asdict(demo.params).items() if v != getattr(default.params, k)}
        assert changed == {"epochs", "min_epochs"} and demo.pipeline() == default.pipeline()
    assert PRESETS["afrcl"]["default"].ensemble == 5 and PRESETS["gsrcl"]["default"].ensemble == 1
    with pytest.raises(ValueError, match="unknown preset 'fast'"):
        get_preset("afrcl", "fast")


def test_pipeline_and_runtime_settings_are_not_estimator_hyperparameters():
    for params in (AFRCLParams, GsRCLParams):
        names = {f.name for f in dataclasses.fields(params)}
        assert not names & {"ensemble", "pool", "library_size", *RUNTIME}
    hp = GsRCL(threads=2, block=10, checkpoint_memory_mb=5).hyperparameters
    assert not set(hp) & {"ensemble", "pool", "library_size", *RUNTIME}
    assert hp["preset"] == "default" and hp["seed"] == 1111


@pytest.mark.parametrize("cls", [AFRCL, GsRCL])
def test_parameters_are_stored_as_given_and_resolved_against_the_preset(cls):
    names = list(inspect.signature(cls).parameters)
    assert names[0] == "preset" and {"epochs", "hidden", "seed", "device", "threads", "block", "quiet"} <= set(names)
    m = cls(preset="paper", epochs=7, hidden=[8, 4])
    assert m.get_params()["epochs"] == 7 and m.get_params()["lr"] is None  # as given: None is "the preset's"
    assert m.params["epochs"] == 7 and m.params["hidden"] == (8, 4)
    assert m.params["lr"] == getattr(get_preset(cls.method_name, "paper").params, "lr")
    m.set_params(lr=0.5, preset="default")
    assert m.params["lr"] == 0.5 and m.params["val_every"] == get_preset(cls.method_name, "default").params.val_every
    again = clone(m)
    assert again is not m and again.get_params() == m.get_params()
    with pytest.raises(TypeError, match="unknown parameter"):
        cls(hiden=(8,))


def test_fit_checks_the_parameters_init_only_stores_them():
    X, y = np.ones((4, 3), dtype=np.float32), np.array(["a", "a", "b", "b"])
    for bad, match in ((dict(preset="fast"), "unknown preset"), (dict(epochs=0), "epochs must be a positive"),
                       (dict(selection="best"), "selection is one of"), (dict(validation_size=1.5), "below 1")):
        model = AFRCL(**bad)  # no error yet
        with pytest.raises(ValueError, match=match):
            model.fit(X, y)


def test_zero_turns_off_a_setting_and_survives_a_saved_model():
    m = GsRCL(patience=0, score_cells=0, val_steps=0)
    assert m.params["patience"] is None and m.params["score_cells"] is None and m.params["val_steps"] is None
    assert GsRCL().params["score_cells"] == 2000  # the default preset's, when left at None
    config = {"method": "gsrcl", "hyperparameters": m.hyperparameters}
    back = GsRCL._from_config(config)
    assert back.params == {**m.params, "quiet": True}


def test_a_saved_model_without_a_newer_setting_gets_the_value_it_was_fitted_with():
    hp = {k: v for k, v in GsRCL().hyperparameters.items() if k not in ABSENT_MEANS}
    old = GsRCL._from_config({"method": "gsrcl", "hyperparameters": {**hp, "threads": 3, "ensemble": 5,
                                                                      "library_size": 10000, "block": 4096}})
    assert old.params["normalize_embedding"] is False and old.params["gene_svm"] is False
    assert old.params["threads"] is None  # a runtime setting old models saved is not restored
