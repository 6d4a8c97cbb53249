"""Neural-network parts of both methods: the encoder MLP, the projection head and the contrastive losses."""

from gsrcl.nn.encoder import MLP, Encoder, ProjectionHead, flush_denormals, to_torch_sparse
from gsrcl.nn.losses import afrcl_loss, conventional_supcon, nt_xent, supcon

__all__ = [
    "Encoder",
    "ProjectionHead",
    "MLP",
    "nt_xent",
    "supcon",
    "afrcl_loss",
    "conventional_supcon",
    "flush_denormals",
    "to_torch_sparse",
]
