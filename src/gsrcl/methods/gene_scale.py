"""The gene scale (``scale_genes``): each gene divided by its spread over the reference cells."""

from __future__ import annotations

import numpy as np

from .encoding import as_csr

SCALE_CLIP = 10.0  # as scanpy's scale(max_value=10)
SCALE_OFFSET = 0.1  # added to each gene's sd: rare genes, whose sd is tiny, are not blown up
GENE_SCALE_KEY = "input.scale"  # the gene scale's array in a saved model


def gene_scale(X) -> np.ndarray:
    """The scale of each gene: 1 / (sd + ``SCALE_OFFSET``), float32, the sd over all rows of ``X``, zeros included.

    A model multiplies each gene by its scale and clips the values at ``SCALE_CLIP``; without centring, so the
    input stays sparse."""
    X = as_csr(X)
    mean = np.asarray(X.mean(axis=0), dtype=np.float64).ravel()
    sq = np.asarray(X.multiply(X).mean(axis=0), dtype=np.float64).ravel()
    return (1.0 / (np.sqrt(np.maximum(sq - mean * mean, 0.0)) + SCALE_OFFSET)).astype(np.float32)
