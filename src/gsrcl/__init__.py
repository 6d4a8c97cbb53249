"""gsrcl: reference-based cell-type annotation with GsRCL and AF-RCL.

``gsrcl.train(adata, labels_key=..., method=...)`` builds a reference; ``gsrcl.annotate(adata, reference)`` labels
a query and ``gsrcl.probabilities(annotated)`` gives its probabilities as a DataFrame; ``gsrcl.read_query(path)``
reads any supported input, ``gsrcl.open_query(path)`` opens it without reading its values (``train`` then reads
only the rows it keeps); ``gsrcl.Reference.load(dir)`` reads a reference.
"""

__version__ = "0.1.0"

_LAZY = {
    "train": ("gsrcl.training", "train"),
    "annotate": ("gsrcl.annotation", "annotate"),
    "probabilities": ("gsrcl.annotation", "probabilities"),
    "read_query": ("gsrcl.io", "read_query"),
    "open_query": ("gsrcl.io", "open_query"),
    "Reference": ("gsrcl.reference", "Reference"),
}


def __getattr__(name):  # torch and friends are imported only when asked for
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'gsrcl' has no attribute {name!r}")


__all__ = ["__version__", *_LAZY]
