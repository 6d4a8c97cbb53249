"""Contrastive losses on projections (docs/methods.md §3.5).

Each takes projections (n, d) (two views for the two-view losses), L2-normalises them, is vectorised over
anchors, and returns a scalar tensor with finite values and gradients for any label pattern: anchors without a
positive are left out of the mean instead of turning the batch into NaN (docs/methods.md §5 item 13). Labels
are a tensor or an array of ints or strings, one per cell; a wrong count or shape raises ValueError.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["nt_xent", "supcon", "afrcl_loss", "conventional_supcon"]

_MASKED = -1e9  # the original's mask value for self-similarities in NT-Xent


def _labels(labels, n: int, device) -> torch.Tensor:
    """Labels (tensor, or array of ints or strings) as an int64 tensor of length n."""
    if isinstance(labels, torch.Tensor):
        out = labels.to(device=device, dtype=torch.long).reshape(-1)
    else:
        arr = np.asarray(labels).reshape(-1)
        if arr.dtype.kind not in "iub":
            arr = np.unique(arr, return_inverse=True)[1]
        out = torch.as_tensor(arr.astype(np.int64), device=device)
    if out.numel() != n:
        raise ValueError(f"got {out.numel()} labels for {n} embeddings")
    return out


def _check_2d(*zs: torch.Tensor) -> None:
    for z in zs:
        if z.dim() != 2:
            raise ValueError(f"embeddings must be 2-D (n, d), got shape {tuple(z.shape)}")
    if len(zs) == 2 and zs[0].shape != zs[1].shape:
        raise ValueError(f"the two views differ in shape: {tuple(zs[0].shape)} vs {tuple(zs[1].shape)}")


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.07) -> torch.Tensor:
    """NT-Xent (SimCLR) as GsRCL codes it, on two views ``z1``, ``z2`` (n, d) of the same n cells.

    The mean cross-entropy of the view-1 anchors plus that of the view-2 anchors (a sum, as the original); each
    anchor's logits are its similarities to the n other-view embeddings (its positive: the same cell) and the
    n - 1 other same-view ones, divided by ``temperature``. Uses no labels."""
    _check_2d(z1, z2)
    n = z1.shape[0]
    z1, z2 = F.normalize(z1, dim=1), F.normalize(z2, dim=1)
    self_mask = torch.eye(n, dtype=torch.bool, device=z1.device)
    target = torch.arange(n, device=z1.device)
    total = z1.new_zeros(())
    for a, b in ((z1, z2), (z2, z1)):
        logits = torch.cat([a @ b.T, (a @ a.T).masked_fill(self_mask, _MASKED)], dim=1) / temperature
        total = total + F.cross_entropy(logits, target)
    return total


def supcon(z1: torch.Tensor, z2: torch.Tensor, labels, temperature: float = 0.07) -> torch.Tensor:
    """Khosla et al. SupCon over the 2N embeddings of two views: per anchor, log-softmax over the other 2N-1,
    averaged over its positives (same label, its other view included); mean over anchors; no base-temperature
    rescaling."""
    _check_2d(z1, z2)
    n = z1.shape[0]
    y = _labels(labels, n, z1.device).repeat(2)
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    sim = z @ z.T / temperature
    sim = sim - sim.detach().max(dim=1, keepdim=True).values
    self_mask = torch.eye(2 * n, dtype=torch.bool, device=z.device)
    log_prob = sim - torch.logsumexp(sim.masked_fill(self_mask, float("-inf")), dim=1, keepdim=True)
    pos = (y[:, None] == y[None, :]) & ~self_mask  # never empty: the other view is a positive
    mean_log_prob_pos = (log_prob * pos).sum(dim=1) / pos.sum(dim=1)
    return -mean_log_prob_pos.mean()


def _single_view(z: torch.Tensor, labels, temperature: float):
    _check_2d(z)
    n = z.shape[0]
    y = _labels(labels, n, z.device)
    z = F.normalize(z, dim=1)
    s = z @ z.T / temperature
    self_mask = torch.eye(n, dtype=torch.bool, device=z.device)
    same = y[:, None] == y[None, :]
    return s, same & ~self_mask, ~same, self_mask


def _mean_over_anchors(per_pair: torch.Tensor, pos: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Mean over anchors with >= 1 positive of the mean of `per_pair` over their positives."""
    n_pos = pos.sum(dim=1)
    has_pos = n_pos > 0
    if not bool(has_pos.any()):
        return z.sum() * 0.0  # zero that keeps the graph
    per_anchor = torch.where(pos, per_pair, 0.0).sum(dim=1) / n_pos.clamp(min=1)
    return per_anchor[has_pos].mean()


def _masked_lse(s: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Row-wise logsumexp of s over mask; rows with an empty mask give a finite dummy (never used) so that
    no -inf - (-inf) NaN reaches the gradient."""
    any_row = mask.any(dim=1, keepdim=True)
    filled = torch.where(any_row, s.masked_fill(~mask, float("-inf")), torch.zeros_like(s))
    return torch.logsumexp(filled, dim=1), any_row.squeeze(1)


def afrcl_loss(z: torch.Tensor, labels, temperature: float = 0.1) -> torch.Tensor:
    """AF-RCL's proposed loss: each positive pair has its own denominator (itself + all the anchor's
    negatives): l_i = mean_p softplus(LSE_n(s_in/τ) - s_ip/τ); mean over anchors with >= 1 positive. An anchor
    with positives but no negatives contributes 0 (log 1); no anchor with a positive gives a graph-keeping 0."""
    s, pos, neg, _ = _single_view(z, labels, temperature)
    lse_neg, has_neg = _masked_lse(s, neg)
    per_pair = torch.where(has_neg[:, None], F.softplus(lse_neg[:, None] - s), torch.zeros_like(s))
    return _mean_over_anchors(per_pair, pos, z)


def conventional_supcon(z: torch.Tensor, labels, temperature: float = 0.1) -> torch.Tensor:
    """AF-RCL-c: single-view SupCon, all positives share one denominator (Σ_{p'} + Σ_n = every other cell):
    l_i = mean_p (LSE_{k≠i}(s_ik/τ) - s_ip/τ); mean over anchors with >= 1 positive."""
    s, pos, _, self_mask = _single_view(z, labels, temperature)
    lse_all, _ = _masked_lse(s, ~self_mask)
    return _mean_over_anchors(lse_all[:, None] - s, pos, z)
