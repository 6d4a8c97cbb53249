"""Readers for every query format, and the HDF5 tree printer used in error messages.

``open_query(path, ...)`` returns a `QuerySource` (names now, values block by block); ``read_query`` gives
the whole matrix as AnnData (X CSR float32, cells x genes, never densified); ``format_tree(path)`` prints an
HDF5 file's layout.
"""

from .reader import open_query, read_query
from .source import QuerySource
from .tree import format_tree

__all__ = ["open_query", "read_query", "format_tree", "QuerySource"]
