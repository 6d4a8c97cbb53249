"""gsrcl: reference-based cell-type annotation with GsRCL and AF-RCL.

``gsrcl.train(adata, labels_key=..., method=...)`` builds a reference; ``gsrcl.annotate(adata, reference)`` labels
a query; ``gsrcl.read_query(path)`` reads any supported input; ``gsrcl.Reference.load(dir)`` reads a reference.
"""

__version__ = "0.1.0"

# Imported eagerly: the functions ``train`` and ``annotate`` must win over their modules of the same name,
# which a lazy import would leave as the package attributes.
from .annotate import annotate  # noqa: E402
from .io import read_query  # noqa: E402
from .reference import Reference  # noqa: E402
from .train import train  # noqa: E402

__all__ = ["__version__", "annotate", "read_query", "Reference", "train"]
