"""A restricted reader of the original tool's ``.joblib`` files (ORIGINAL_FORMAT.md §9): plain data only.

The original tool stores its fitted scikit-learn ``SVC``s and AF-RCL's cell-type dict with ``joblib.dump``: a
pickle in which every numpy array is a ``NumpyArrayWrapper`` followed, outside the opcodes, by the array's raw bytes.
It is read with Python's pure-Python unpickler whose ``find_class`` maps an allow-list of globals to our own
non-callable stand-ins: the estimator becomes a `PickledObject` (its state dict), arrays and numpy scalars are rebuilt
from their bytes, dtypes only from plain type codes. scikit-learn and joblib are never imported, nothing in the file
is called. Errors are one line naming the file: `UnsafeFileError` for anything outside the allow-list,
`CorruptFileError` for a truncated or garbled file, `InvalidReferenceError` for a file holding the wrong thing.
"""

from __future__ import annotations

import io
import logging
import math
import os
import pickle
import re
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gsrcl.errors import CorruptFileError, GsrclError, InvalidReferenceError, MissingPathError, UnsafeFileError
from gsrcl.svm import PortableSVC

__all__ = ["PickledObject", "load_plain", "read_svc", "read_cell_type_dict", "SVC_NAMES"]

log = logging.getLogger("gsrcl.original.joblib_reader")

SVC_NAMES = ("sklearn.svm._classes.SVC", "sklearn.svm.classes.SVC")
"""The estimator's global in files of scikit-learn >= 0.22 and before it."""
_ALLOWED = {**{tuple(n.rsplit(".", 1)): "object" for n in SVC_NAMES},
            ("joblib.numpy_pickle", "NumpyArrayWrapper"): "wrapper",
            ("numpy", "ndarray"): "ndarray",
            ("numpy", "dtype"): "dtype",
            ("numpy.core.multiarray", "scalar"): "scalar",  # written by numpy 1.x
            ("numpy._core.multiarray", "scalar"): "scalar"}  # written by numpy 2.x
_COMPRESSED = {b"\x78": "zlib", b"\x1f\x8b": "gzip", b"BZ": "bz2", b"\xfd7zXZ": "xz", b"\x5d\x00": "lzma",
               b"\x04\x22\x4d\x18": "lz4", b"ZF": "zlib (joblib < 0.9.3)"}
_TYPE_CODE = re.compile(r"[biufc][0-9]{1,2}|[US][0-9]{1,9}")
_WRAPPER_KEYS = {"subclass", "shape", "order", "dtype", "allow_mmap"}
_ALIGNMENT = "numpy_array_alignment_bytes"  # since joblib 1.2: a padding-length byte and padding precede the data
_NOTHING_RUN = "gsrcl reads only plain data from the original's files and refused it (nothing was run)"
_BAD_PICKLE = (pickle.UnpicklingError, EOFError, ValueError, TypeError, KeyError, IndexError, AttributeError,
               struct.error, UnicodeDecodeError, OverflowError, io.UnsupportedOperation)


@dataclass(eq=False)
class PickledObject:
    """An object of the file, never instantiated: its global's dotted `name` and its BUILD's `state` dict."""

    name: str
    state: dict | None = None


@dataclass(eq=False)
class _Global:
    """What `find_class` returns for an allowed global: a non-callable marker with its role."""

    name: str
    role: str


class _Wrapper:
    """Stand-in for joblib's NumpyArrayWrapper until its BUILD, when the array bytes that follow are read."""


@dataclass(eq=False)
class _PendingDtype:
    """A dtype from its type code, waiting for the BUILD state that gives its byte order."""

    dtype: np.dtype
    built: bool = False


class _Source:
    """The open file; a read past its end fails before anything is allocated for it."""

    def __init__(self, fh, size: int):
        self.fh, self.size, self.readline = fh, size, fh.readline

    def left(self) -> int:
        return self.size - self.fh.tell()

    def read(self, n: int = -1) -> bytes:
        if n is not None and n > self.left():
            raise EOFError(f"the file ends {n - self.left()} bytes early")
        return self.fh.read(n)


def _show(text: str) -> str:
    """A name from the file, safe to print on one line."""
    return text if text.isprintable() and len(text) <= 120 else ascii(text[:120])


def _name(obj) -> str:  # what to call an object of the file in a message
    return obj.name if isinstance(obj, (_Global, PickledObject)) else type(obj).__name__


class _Reader(pickle._Unpickler):
    """Pure-Python unpickler restricted to the joblib/SVC allow-list; see the module docstring."""

    dispatch = dict(pickle._Unpickler.dispatch)

    def __init__(self, source: _Source, where: str):
        super().__init__(source)
        self.source, self.where = source, where

    def _refuse(self, what: str):
        raise UnsafeFileError(f"{self.where} asks to {what}, which is not part of a fitted SVM or cell-type dict: "
                              f"{_NOTHING_RUN}")

    def _corrupt(self, what: str):
        raise CorruptFileError(f"{self.where} is truncated or corrupt: {what}")

    def find_class(self, module, name):
        role = _ALLOWED.get((module, name))
        if role is None:
            self._refuse(f"load {_show(str(module))}.{_show(str(name))}")
        return _Global(f"{module}.{name}", role)

    def persistent_load(self, pid):
        self._refuse("load an object by persistent id")

    def load_reduce(self):
        args = self.stack.pop()
        func = self.stack[-1]
        role = func.role if isinstance(func, _Global) else None
        if role not in ("dtype", "scalar"):
            self._refuse(f"call {_name(func)}")
        if not isinstance(args, tuple) or len(args) != (3 if role == "dtype" else 2):
            self._corrupt(f"malformed numpy {role}")
        self.stack[-1] = self._dtype(args[0]) if role == "dtype" else self._scalar(*args)

    def _new(self, cls, args, kwargs):
        if not (isinstance(cls, _Global) and cls.role in ("object", "wrapper")) or args or kwargs:
            self._refuse(f"create {_name(cls)}" + (" with arguments" if args or kwargs else ""))
        self.append(PickledObject(cls.name) if cls.role == "object" else _Wrapper())

    def load_newobj(self):
        args = self.stack.pop()
        self._new(self.stack.pop(), args, None)

    def load_newobj_ex(self):
        kwargs, args = self.stack.pop(), self.stack.pop()
        self._new(self.stack.pop(), args, kwargs)

    def load_inst_or_obj(self):
        self._refuse("create an object the old way (INST/OBJ opcodes)")

    def load_bytearray8(self):  # it would allocate its claimed size first; never part of plain data anyway
        raise InvalidReferenceError(f"{self.where} holds a bytearray where only plain data was expected")

    def load_build(self):
        state = self.stack.pop()
        inst = self.stack[-1]
        if isinstance(inst, PickledObject) and inst.state is None:
            if not (isinstance(state, dict) and all(isinstance(k, str) for k in state)):
                raise InvalidReferenceError(f"{self.where}: the state of {inst.name} is not a dict of attributes")
            inst.state = state
        elif isinstance(inst, _Wrapper):
            self.stack[-1] = self._array(state)
        elif isinstance(inst, _PendingDtype) and not inst.built:
            # numpy's dtype state: (3, byte order, None, None, None, elsize, alignment, flags[, metadata None])
            if not (isinstance(state, tuple) and len(state) in (8, 9) and state[0] == 3 and state[1] in "<>|="
                    and len(state[1]) == 1 and state[2:5] == (None, None, None)
                    and all(type(v) is int for v in state[5:8]) and state[5] in (-1, inst.dtype.itemsize)
                    and state[8:] in ((), (None,))):
                self._corrupt("a numpy dtype with a malformed state")
            inst.dtype = inst.dtype.newbyteorder(state[1]) if state[1] in "<>" else inst.dtype
            inst.built = True
        else:
            self._refuse(f"set the state of a {_name(inst)}")

    for _op, _method in ((pickle.REDUCE, load_reduce), (pickle.NEWOBJ, load_newobj), (pickle.BUILD, load_build),
                         (pickle.NEWOBJ_EX, load_newobj_ex), (pickle.INST, load_inst_or_obj),
                         (pickle.OBJ, load_inst_or_obj), (pickle.BYTEARRAY8, load_bytearray8)):
        dispatch[_op[0]] = _method
    del _op, _method

    def _dtype(self, code) -> _PendingDtype:  # numpy.dtype(code, align, copy), a numeric/bool/str/bytes code
        if isinstance(code, str) and code.startswith("O"):
            raise UnsafeFileError(f"{self.where} holds Python objects in an array (dtype object), which are not part "
                                  f"of a fitted SVM or cell-type dict: {_NOTHING_RUN}")
        if not (isinstance(code, str) and _TYPE_CODE.fullmatch(code)):
            raise InvalidReferenceError(f"{self.where} holds an array of type {_show(str(code))!r}; only numbers, "
                                        "booleans and strings are read from the original's files")
        return _PendingDtype(np.dtype(code))

    def _built_dtype(self, value) -> np.dtype:
        if not (isinstance(value, _PendingDtype) and value.built):
            self._corrupt("an array or scalar without a valid dtype")
        return value.dtype

    def _check_text(self, data, dtype: np.dtype) -> None:  # numpy cannot make a str of invalid code points
        if dtype.kind == "U" and len(data) and (np.frombuffer(data, dtype.byteorder.replace("|", "=") + "u4")
                                                > 0x10FFFF).any():
            self._corrupt("a string holds an invalid character code")

    def _scalar(self, dtype, data):  # numpy's multiarray.scalar(dtype, raw bytes)
        dtype = self._built_dtype(dtype)
        if not isinstance(data, bytes) or len(data) != dtype.itemsize:
            self._corrupt("a numpy scalar whose bytes do not match its dtype")
        self._check_text(data, dtype)
        return dtype.type() if dtype.itemsize == 0 else np.frombuffer(data, dtype=dtype, count=1)[0]

    def _array(self, state) -> np.ndarray:
        """The array whose bytes follow a wrapper's BUILD (joblib's layout, §9), checked before allocating."""
        if not isinstance(state, dict) or set(state) - {_ALIGNMENT} != _WRAPPER_KEYS:
            raise InvalidReferenceError(f"{self.where} holds a joblib array header with unexpected fields "
                                        f"{_show(str(sorted(map(str, state)) if isinstance(state, dict) else state))}")
        subclass, shape, order, align = state["subclass"], state["shape"], state["order"], state.get(_ALIGNMENT)
        if not (isinstance(subclass, _Global) and subclass.role == "ndarray"):
            self._refuse(f"build an array of class {_name(subclass)}")
        dtype = self._built_dtype(state["dtype"])
        if (not isinstance(shape, tuple) or any(type(n) is not int or n < 0 for n in shape)
                or order not in ("C", "F") or not (align is None or (type(align) is int and 0 < align <= 4096))):
            self._corrupt("a malformed joblib array header")
        frame = self._unframer.current_frame
        if frame is not None and frame.tell() != len(frame.getbuffer()):
            self._corrupt("array data inside a pickle frame")
        if align is not None:
            pad = self.source.read(1)
            if pad[0] > align or self.source.read(pad[0]) != b"\xff" * pad[0]:
                self._corrupt("bad array padding")
        nbytes = math.prod(shape) * dtype.itemsize
        if nbytes > self.source.left():
            self._corrupt(f"an array of shape {shape} needs {nbytes} bytes, only {self.source.left()} are left")
        stored = shape[::-1] if order == "F" else shape
        if nbytes == 0:
            array = np.empty(stored, dtype=dtype)
        else:
            buf = bytearray(nbytes)
            if self.source.fh.readinto(buf) != nbytes:
                self._corrupt("short array data")
            self._check_text(buf, dtype)
            array = np.frombuffer(buf, dtype=dtype).reshape(stored)
        array = array.T if order == "F" else array
        return array if dtype.isnative else array.astype(dtype.newbyteorder("="))


def _check_plain(obj, where: str) -> None:
    """Refuse anything but the plain types of `load_plain`'s contract (e.g. a stand-in left without its BUILD)."""
    todo, seen = [obj], set()
    while todo:
        x = todo.pop()
        if x is None or type(x) in (str, bytes, int, float, bool) or isinstance(x, (np.generic, np.ndarray)):
            continue  # arrays and scalars are only ever built from checked dtypes, never object
        if id(x) in seen:
            continue
        seen.add(id(x))
        if type(x) is dict:
            todo.extend(x.keys())
            todo.extend(x.values())
        elif type(x) in (list, tuple):
            todo.extend(x)
        elif isinstance(x, PickledObject) and x.state is not None:
            todo.append(x.state)
        else:
            raise InvalidReferenceError(f"{where} holds {_show(_name(x))} where only plain data was expected")


def load_plain(path) -> object:
    """The pickled object of an uncompressed joblib file, rebuilt as plain data without running anything.

    Parameters
    ----------
    path : str or os.PathLike
        A file written by ``joblib.dump`` without compression.

    Returns
    -------
    object
        Only dict, list, tuple, str, bytes, int, float, bool, None, numpy arrays (numeric, bool, unicode or bytes
        dtypes, native byte order), numpy scalars, and a `PickledObject` (name one of `SVC_NAMES`, state dict)
        for the estimator.

    Raises
    ------
    UnsafeFileError
        A global outside the allow-list; a call, creation or state of anything but the stand-ins; an object
        array; a persistent id. Nothing of the file was run.
    CorruptFileError
        The file cannot be read, is not a binary pickle, or is truncated or garbled.
    InvalidReferenceError
        A compressed joblib file, an unsupported dtype, or anything else that is not plain data.
    MissingPathError
        The file does not exist.
    """
    where = Path(path).name
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            head = fh.read(6)
            for magic, kind in _COMPRESSED.items():
                if head.startswith(magic):
                    raise InvalidReferenceError(f"{where} is a {kind}-compressed joblib file: compressed joblib "
                                                "files are not supported (the original's published files are not)")
            if len(head) < 2 or head[0] != 0x80 or head[1] < 2:
                raise CorruptFileError(f"{where} is not a joblib file (it does not start as a binary pickle)")
            fh.seek(0)
            obj = _Reader(_Source(fh, size), where).load()
    except GsrclError:
        raise
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
        raise MissingPathError(f"{path} does not exist or is not a file") from exc
    except OSError as exc:
        raise CorruptFileError(f"{where} cannot be read: {exc.strerror or exc}") from exc
    except _BAD_PICKLE as exc:
        log.debug("reading %s failed: %r", path, exc)
        raise CorruptFileError(f"{where} is truncated or corrupt: {_show(str(exc) or type(exc).__name__)}") from exc
    _check_plain(obj, where)
    return obj


def _fitted(state: dict, names: tuple[str, ...], kinds: str, where: str) -> np.ndarray:
    """The first of `names` present in an SVC state: an array of a dtype kind in `kinds`."""
    for name in names:
        if name in state:
            if not (isinstance(state[name], np.ndarray) and state[name].dtype.kind in kinds):
                raise InvalidReferenceError(f"{where}: the SVM's {name} is not an array of the expected type "
                                            f"({'integer' if kinds == 'iu' else 'float'})")
            return state[name]
    raise InvalidReferenceError(f"{where}: the SVM has no {' or '.join(names)} (is it fitted?)")


def read_svc(path) -> PortableSVC:
    """The fitted RBF ``SVC(probability=True)`` of an original ``.joblib``, as a `PortableSVC`.

    Only the fitted arrays are used: ``support_vectors_``, ``_n_support`` (``n_support_`` in old versions),
    ``_dual_coef_``, ``_intercept_``, ``_probA``/``_probB`` (``probA_``/``probB_``), ``_gamma``, ``classes_``.

    Returns
    -------
    PortableSVC
        With one extra attribute, ``sklearn_version``: the file's ``_sklearn_version`` string, or None. The
        number of features is its ``n_features_in_``.

    Raises
    ------
    InvalidReferenceError
        The file holds no SVC, or one whose kernel is not 'rbf', without probabilities, fitted on sparse input,
        with non-integer classes, or with arrays of inconsistent shapes or non-finite values. And everything
        `load_plain` raises.
    """
    where = Path(path).name
    obj = load_plain(path)
    if not (isinstance(obj, PickledObject) and obj.name in SVC_NAMES):
        raise InvalidReferenceError(f"{where} holds a {_show(_name(obj))}, not a fitted scikit-learn SVC")
    state = obj.state
    if state.get("kernel") != "rbf":
        raise InvalidReferenceError(f"{where}: the SVM's kernel is {_show(repr(state.get('kernel')))}; only 'rbf' "
                                    "is supported")
    if state.get("_sparse", False) is not False:
        raise InvalidReferenceError(f"{where}: the SVM was fitted on sparse input, which is not supported")
    if state.get("_effective_probability", state.get("probability")) is not True:
        raise InvalidReferenceError(f"{where}: the SVM was fitted without probability=True, so it gives no "
                                    "probabilities")
    classes = _fitted(state, ("classes_",), "iu", where)
    sv = _fitted(state, ("support_vectors_",), "f", where)
    n_support = _fitted(state, ("_n_support", "n_support_"), "iu", where)
    dual, intercept = _fitted(state, ("_dual_coef_",), "f", where), _fitted(state, ("_intercept_",), "f", where)
    prob_a, prob_b = _fitted(state, ("_probA", "probA_"), "f", where), _fitted(state, ("_probB", "probB_"), "f", where)
    gamma, n_features, pairs = state.get("_gamma"), state.get("n_features_in_"), classes.size * (classes.size - 1) // 2
    problems = [f"{name} has shape {a.shape}, expected ({pairs},)" for name, a in (
        ("_intercept_", intercept), ("_probA", prob_a), ("_probB", prob_b)) if a.shape != (pairs,)]
    if n_features is not None and (sv.ndim != 2 or n_features != sv.shape[1]):
        problems.append(f"n_features_in_ is {_show(repr(n_features))}, support vectors of shape {sv.shape}")
    if type(gamma) not in (float, int, np.float64, np.float32):
        problems.append(f"_gamma is {_show(repr(gamma))}, not a number")
    try:
        if problems:
            raise ValueError("; ".join(problems))
        model = PortableSVC(classes, sv, n_support, dual, intercept, float(gamma), prob_a, prob_b)
    except ValueError as exc:
        raise InvalidReferenceError(f"{where}: inconsistent SVM: {exc}") from exc
    version = state.get("_sklearn_version")
    model.sklearn_version = version if isinstance(version, str) else None
    log.debug("%s: SVC of %d classes, %d support vectors, %d features (scikit-learn %s)", where, classes.size,
              sv.shape[0], sv.shape[1], model.sklearn_version)
    return model


def read_cell_type_dict(path) -> dict[str, int]:
    """AF-RCL's ``<R>_cell_type_dict.joblib``: {cell type: class index} as plain str -> int, in the file's order.

    Keys may be str or numpy ``str_`` scalars, values int or numpy integer scalars. Whether the values match the
    SVM's classes is for the caller to check.

    Raises
    ------
    InvalidReferenceError
        The file holds no dict, an empty one, a key that is not a string or a value that is not an integer. And
        everything `load_plain` raises.
    """
    where = Path(path).name
    obj = load_plain(path)
    if type(obj) is not dict or not obj:
        kind = "an empty dict" if type(obj) is dict else f"a {_name(obj)}"
        raise InvalidReferenceError(f"{where} holds {kind}, not a dict of cell types")
    out: dict[str, int] = {}
    for key, value in obj.items():
        if not isinstance(key, str):
            raise InvalidReferenceError(f"{where}: cell type {_show(repr(key))} is not a string")
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
            raise InvalidReferenceError(f"{where}: the class index of {_show(str(key))!r} is {_show(repr(value))}, "
                                        "not an integer")
        out[str(key)] = int(value)
    return out
