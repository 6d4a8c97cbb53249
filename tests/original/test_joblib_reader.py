"""The restricted reader of the original tool's joblib files (gsrcl.original.joblib_reader).

Fixtures are real scikit-learn SVCs written with ``joblib.dump`` as the original does. Files in the layout of the
published ones (numpy 1.x, joblib < 1.2) cannot be written with the installed versions, so two writer details are
changed while dumping (see `_as_numpy1` and `_without_alignment_key`); each such test also asserts that the bytes
really have that layout. The tests may unpickle their own fixtures (to compare with scikit-learn); gsrcl may not.
"""

from __future__ import annotations

import io
import os
import pickle
import shlex
import struct
import subprocess
import sys
import warnings

import joblib
import numpy as np
import pytest
import scipy.sparse as sp
import sklearn
from joblib.numpy_pickle import NumpyPickler
from sklearn.svm import SVC

from gsrcl.errors import CorruptFileError, GsrclError, InvalidReferenceError, UnsafeFileError
from gsrcl.original.joblib_reader import PickledObject, load_plain, read_cell_type_dict, read_svc
from gsrcl.svm import PortableSVC


def _fit(k=2, gamma="scale", labels=np.int32, n_features=5, seed=0, sparse=False, **kw):
    """An SVC(probability=True) on k well-separated but overlapping Gaussian classes labelled 0..k-1."""
    rng = np.random.default_rng(seed)
    y = np.arange(90) % k
    X = rng.normal(size=(90, n_features)) + 1.5 * np.eye(k, n_features)[y]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # probability=True is deprecated in scikit-learn 1.9
        kw = {"probability": True, **kw}
        return SVC(gamma=gamma, random_state=0, **kw).fit(sp.csr_matrix(X) if sparse else X, y.astype(labels))


def _queries(svc, n=40, seed=1):
    rng = np.random.default_rng(seed)
    near = svc.support_vectors_[:10] + 0.01 * rng.normal(size=(10, svc.n_features_in_))
    return np.vstack([2 * rng.normal(size=(n, svc.n_features_in_)), near])


def _dump(obj, path, **kw):
    joblib.dump(obj, path, **kw)
    return path


def _rename_globals(monkeypatch, renames):
    """Make joblib's pickler write the objects of `renames` under other global names ({object: (module, name)}),
    as an older library would have written them. Mirrors the protocol >= 4 branch of pickle's save_global."""
    original = NumpyPickler.save_global

    def save_global(self, obj, name=None):
        for target, (module, qualname) in renames.items():
            if obj is target:
                self.save(module)
                self.save(qualname)
                self.write(pickle.STACK_GLOBAL)
                self.memoize(obj)
                return
        return original(self, obj, name)

    monkeypatch.setattr(NumpyPickler, "save_global", save_global)


def _as_numpy1(monkeypatch):
    """numpy 1.x (the published files) pickles its scalars through numpy.core.multiarray.scalar."""
    scalar = np.float64(1).__reduce__()[0]  # numpy._core.multiarray.scalar in numpy 2
    _rename_globals(monkeypatch, {scalar: ("numpy.core.multiarray", "scalar")})


def _without_alignment_key(monkeypatch):
    """joblib < 1.2 wrote no alignment key and no padding: an array wrapper without that attribute is pickled
    without the key, and joblib's writer then omits the padding, as the old one did."""
    create = NumpyPickler._create_array_wrapper

    def create_old(self, array):
        wrapper = create(self, array)
        del wrapper.numpy_array_alignment_bytes
        return wrapper

    monkeypatch.setattr(NumpyPickler, "_create_array_wrapper", create_old)


class _Unseekable(io.BytesIO):
    """A file whose position joblib cannot ask: it then writes the alignment key as None and no padding."""

    def tell(self):
        raise io.UnsupportedOperation("tell")


# -- reading real SVMs ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("k, gamma, labels", [(2, "scale", np.int32), (2, 0.05, np.int32), (4, "scale", np.int64),
                                              (3, 0.2, np.int64)])
def test_read_svc_reproduces_sklearn_probabilities(tmp_path, k, gamma, labels):
    svc = _fit(k, gamma, labels)
    path = _dump(svc, tmp_path / "T--svm.joblib")
    model = read_svc(path)
    assert isinstance(model, PortableSVC)
    X = _queries(svc)
    expected = svc.predict_proba(X)
    assert np.abs(model.predict_proba(X) - expected).max() <= 1e-12
    assert np.ptp(expected[:, 0]) > 0.5  # the inputs reach both confident and uncertain regions
    np.testing.assert_array_equal(model.classes_, np.arange(k))
    assert model.n_features_in_ == svc.n_features_in_
    assert model.sklearn_version == sklearn.__version__
    assert model.gamma == svc._gamma


@pytest.mark.parametrize("layout", ["numpy1", "no_alignment_key", "numpy1+no_alignment_key", "alignment_none",
                                    "pre-0.23 names"])
def test_read_svc_older_layouts(tmp_path, monkeypatch, layout):
    svc = _fit(3, "scale")
    if "numpy1" in layout:
        _as_numpy1(monkeypatch)
    if "no_alignment_key" in layout:
        _without_alignment_key(monkeypatch)
    old_names = {"_n_support": "n_support_", "_probA": "probA_", "_probB": "probB_"}
    if layout == "pre-0.23 names":  # sklearn.svm.classes.SVC with n_support_, probA_, probB_ in its state
        for new, old in old_names.items():
            svc.__dict__[old] = svc.__dict__.pop(new)
        _rename_globals(monkeypatch, {SVC: ("sklearn.svm.classes", "SVC")})
    path = tmp_path / "T--svm.joblib"
    if layout == "alignment_none":
        handle = _Unseekable()
        joblib.dump(svc, handle)
        path.write_bytes(handle.getvalue())
    else:
        _dump(svc, path)
    monkeypatch.undo()
    data = path.read_bytes()
    assert (b"numpy.core.multiarray" in data) == ("numpy1" in layout)
    assert (b"numpy._core.multiarray" in data) == ("numpy1" not in layout)
    assert (b"numpy_array_alignment_bytes" in data) == ("no_alignment_key" not in layout)
    assert (b"sklearn.svm.classes" in data) == (layout == "pre-0.23 names")
    if layout == "pre-0.23 names":  # back to the current names, for scikit-learn's own predict_proba below
        for new, old in old_names.items():
            svc.__dict__[new] = svc.__dict__.pop(old)
    else:
        assert joblib.load(path).__dict__.keys() == svc.__dict__.keys()  # joblib itself reads the fixture
    X = _queries(svc)
    assert np.abs(read_svc(path).predict_proba(X) - svc.predict_proba(X)).max() <= 1e-12


def test_load_plain_gives_plain_data(tmp_path):
    svc = _fit(2, "scale")
    obj = load_plain(_dump(svc, tmp_path / "T--svm.joblib"))
    assert isinstance(obj, PickledObject) and obj.name == "sklearn.svm._classes.SVC"
    assert obj.state.keys() == svc.__getstate__().keys()
    assert isinstance(obj.state["_gamma"], np.float64) and obj.state["_gamma"] == svc._gamma
    np.testing.assert_array_equal(obj.state["support_vectors_"], svc.support_vectors_)
    assert obj.state["classes_"].dtype == np.int32
    assert obj.state["shape_fit_"] == svc.shape_fit_


@pytest.mark.parametrize("protocol", [2, 4, 5])  # joblib's default is 4 (pickle.DEFAULT_PROTOCOL) up to Python 3.13
def test_load_plain_arrays_of_each_layout(tmp_path, protocol):
    arrays = {"f": np.asfortranarray(np.arange(12.0).reshape(3, 4)), "big": np.arange(5, dtype=">i4"),
              "empty": np.zeros((0, 3)), "0d": np.array(2.5), "s": np.array([b"ab", b"c"]),
              "u": np.array(["x", "yz"]), "b": np.array([True, False])}
    obj = load_plain(_dump(arrays, tmp_path / "a.joblib", protocol=protocol))
    assert obj.keys() == arrays.keys()
    for key, value in arrays.items():
        np.testing.assert_array_equal(obj[key], value)
        assert obj[key].shape == value.shape and obj[key].dtype.kind == value.dtype.kind
        assert obj[key].dtype.isnative


# -- the cell-type dict ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("numpy1", [False, True])
def test_read_cell_type_dict(tmp_path, monkeypatch, numpy1):
    names = ["T cell", "B cell", "NK", "a longer name with ünïcode", ""]
    d = {np.str_(n): (np.int64(i) if i % 2 else i) for i, n in enumerate(names)}
    if numpy1:
        _as_numpy1(monkeypatch)
    path = _dump(d, tmp_path / "R_cell_type_dict.joblib")
    monkeypatch.undo()
    assert (b"numpy.core.multiarray" in path.read_bytes()) == numpy1
    out = read_cell_type_dict(path)
    assert list(out.items()) == [(n, i) for i, n in enumerate(names)]
    assert all(type(k) is str and type(v) is int for k, v in out.items())


@pytest.mark.parametrize("bad", [{"a": 1.0}, {"a": True}, {1: 0}, ["a"], {}])
def test_read_cell_type_dict_refuses_other_content(tmp_path, bad):
    with pytest.raises(InvalidReferenceError, match="R_cell_type_dict.joblib"):
        read_cell_type_dict(_dump(bad, tmp_path / "R_cell_type_dict.joblib"))


# -- refusals: nothing is ever run --------------------------------------------------------------------------

class _RunsCommand:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {shlex.quote(str(self.marker))}",)


class _Evals:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return eval, (f"open({str(self.marker)!r}, 'w').close()",)


def _assert_refused(path, marker, name):
    with pytest.raises(UnsafeFileError) as err:
        read_svc(path)
    message = err.value.message
    assert path.name in message and name in message and "nothing was run" in message and "\n" not in message
    assert not marker.exists()


def test_fixture_would_run_code_if_unpickled(tmp_path):
    """The payload is live: plain pickle runs it (so the refusals below are meaningful)."""
    marker = tmp_path / "MARKER"
    pickle.loads(pickle.dumps(_RunsCommand(marker)))
    assert marker.exists()


@pytest.mark.parametrize("how", ["joblib", "pickle2", "pickle4", "pickle5"])
def test_os_system_is_refused(tmp_path, how):
    marker, path = tmp_path / "MARKER", tmp_path / "X--svm.joblib"
    if how == "joblib":
        _dump(_RunsCommand(marker), path)
    else:
        path.write_bytes(pickle.dumps(_RunsCommand(marker), protocol=int(how[-1])))
    _assert_refused(path, marker, f"{os.system.__module__}.system")


def test_eval_is_refused(tmp_path):
    marker, path = tmp_path / "MARKER", tmp_path / "X--svm.joblib"
    _assert_refused(_dump(_Evals(marker), path), marker, "builtins.eval")


def test_hand_written_os_system_is_refused(tmp_path):
    marker, path = tmp_path / "MARKER", tmp_path / "X--svm.joblib"
    cmd = f"touch {shlex.quote(str(marker))}".encode()
    path.write_bytes(b"\x80\x02cos\nsystem\nX" + struct.pack("<I", len(cmd)) + cmd + b"\x85R.")
    _assert_refused(path, marker, "os.system")


def test_global_nested_in_svc_state_is_refused(tmp_path):
    svc = _fit()
    svc.callback = os.system
    marker = tmp_path / "MARKER"
    _assert_refused(_dump(svc, tmp_path / "X--svm.joblib"), marker, f"{os.system.__module__}.system")


@pytest.mark.parametrize("data, what", [
    (b"\x80\x04}}b.", "set the state of a dict"),  # BUILD on a dict
    (b"\x80\x04\x8c\x05numpy\x8c\x07ndarray\x93)R.", "call numpy.ndarray"),  # REDUCE on the ndarray marker
    (b"\x80\x04\x8c\x05numpy\x8c\x05dtype\x93)\x81.", "create numpy.dtype"),  # NEWOBJ on a non-object global
    (b"\x80\x04\x8c\x14sklearn.svm._classes\x8c\x03SVC\x93\x8c\x01a\x85\x81.", "with arguments"),
    (b"\x80\x04\x8c\x01xQ.", "persistent id"),
    (b"\x80\x02(cnumpy\nndarray\no.", "INST/OBJ"),
])
def test_structural_refusals(tmp_path, data, what):
    path = tmp_path / "X--svm.joblib"
    path.write_bytes(data)
    with pytest.raises(UnsafeFileError, match=what):
        load_plain(path)


def test_numpy1_reconstruct_and_object_arrays_are_refused(tmp_path):
    # a plain numpy 1.x array pickle: protocol 2 names globals as text lines, so the module can be renamed in place
    raw = pickle.dumps(np.arange(3), protocol=2)
    assert b"cnumpy._core.multiarray\n_reconstruct\n" in raw
    path = tmp_path / "a.joblib"
    path.write_bytes(raw.replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n"))
    with pytest.raises(UnsafeFileError, match=r"numpy\.core\.multiarray\._reconstruct"):
        load_plain(path)
    with pytest.raises(UnsafeFileError, match="dtype object"):
        load_plain(_dump({"x": np.array([1, "a"], dtype=object)}, tmp_path / "b.joblib"))


def test_sparse_svms_are_refused(tmp_path):
    with pytest.raises(UnsafeFileError, match="scipy.sparse"):  # its arrays are scipy objects, not plain data
        read_svc(_dump(_fit(sparse=True), tmp_path / "a.joblib"))
    svc = _fit()
    svc._sparse = True
    with pytest.raises(InvalidReferenceError, match="sparse"):
        read_svc(_dump(svc, tmp_path / "b.joblib"))


@pytest.mark.parametrize("change, match", [
    ({"kernel": "linear"}, "kernel"),
    ({"probability": False}, "probability"),
    ({"labels": np.float64}, "classes_"),
])
def test_wrong_svms_are_refused(tmp_path, change, match):
    svc = _fit(**change)
    with pytest.raises(InvalidReferenceError, match=match):
        read_svc(_dump(svc, tmp_path / "a.joblib"))


@pytest.mark.parametrize("attr, cut", [("_intercept_", 0), ("_probA", 0), ("support_vectors_", 3),
                                       ("_n_support", 1), ("_dual_coef_", 1)])
def test_inconsistent_svms_are_refused(tmp_path, attr, cut):
    svc = _fit(3)
    svc.__dict__[attr] = svc.__dict__[attr][:cut]
    with pytest.raises(InvalidReferenceError, match="T--svm.joblib: inconsistent SVM"):
        read_svc(_dump(svc, tmp_path / "T--svm.joblib"))


def test_other_objects_are_not_svms(tmp_path):
    with pytest.raises(InvalidReferenceError, match="not a fitted scikit-learn SVC"):
        read_svc(_dump({"C": 1.0}, tmp_path / "a.joblib"))


# -- damaged and unsupported files -------------------------------------------------------------------------

@pytest.mark.parametrize("compress", [3, ("gzip", 3), ("bz2", 3), ("xz", 3), ("lzma", 3)])
def test_compressed_files_are_refused(tmp_path, compress):
    path = _dump(_fit(), tmp_path / "a.joblib", compress=compress)
    with pytest.raises(InvalidReferenceError, match="compressed joblib files are not supported"):
        read_svc(path)


def test_truncated_files_are_corrupt(tmp_path):
    data = _dump(_fit(3), tmp_path / "a.joblib").read_bytes()
    path = tmp_path / "cut.joblib"
    for size in sorted({len(data) // 2, *range(2, len(data), 37), len(data) - 1}):
        path.write_bytes(data[:size])
        with pytest.raises(CorruptFileError):
            read_svc(path)


@pytest.mark.parametrize("data", [b"", b"\x80", b"hello, world\n", b"\x80\x04\x95\xff\xff\xff\xff\x00\x00\x00\x00N."])
def test_not_joblib_files_are_corrupt(tmp_path, data):
    path = tmp_path / "a.joblib"
    path.write_bytes(data)
    with pytest.raises(CorruptFileError, match="a.joblib"):
        load_plain(path)


def test_huge_array_header_is_checked_against_the_file(tmp_path, monkeypatch):
    create = NumpyPickler._create_array_wrapper

    def create_huge(self, array):  # the header claims 2**40 elements; the 4 real ones are written
        wrapper = create(self, array)
        wrapper.shape = (2 ** 40,)
        return wrapper

    monkeypatch.setattr(NumpyPickler, "_create_array_wrapper", create_huge)
    path = _dump({"x": np.arange(4.0)}, tmp_path / "a.joblib")
    with pytest.raises(CorruptFileError, match=f"needs {2 ** 43} bytes"):
        load_plain(path)


def test_damaged_files_raise_only_gsrcl_errors(tmp_path):
    data = bytearray(_dump(_fit(3), tmp_path / "a.joblib").read_bytes())
    rng = np.random.default_rng(0)
    path = tmp_path / "b.joblib"
    outcomes = set()
    for _ in range(300):
        damaged = bytearray(data)
        for i in rng.integers(0, len(data), 2):
            damaged[i] = rng.integers(0, 256)
        path.write_bytes(bytes(damaged))
        try:
            read_svc(path)
            outcomes.add("read")
        except GsrclError as exc:
            outcomes.add(type(exc).__name__)
            assert "\n" not in exc.message
    assert "CorruptFileError" in outcomes


def test_reading_imports_neither_sklearn_nor_joblib(tmp_path):
    path = _dump(_fit(), tmp_path / "a.joblib")
    code = ("import sys; from gsrcl.original.joblib_reader import read_svc; read_svc(sys.argv[1]); "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('sklearn', 'joblib')]; assert not bad, bad")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
