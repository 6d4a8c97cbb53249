"""Torch for one fit: the device, a seeded session that restores the caller's torch settings, the optimiser."""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch

from ..nn import flush_denormals
from ..nn.allocator import reuse_large_allocations


def resolve_device(device: str | torch.device) -> torch.device:
    """The torch device named by ``device``.

    Raises
    ------
    ValueError
        When ``device`` is not a torch device, is neither CPU nor CUDA, or is CUDA on a machine without one.
    """
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device {device!r} is not a torch device: use 'cpu' or 'cuda'") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for but PyTorch sees no CUDA device: use device 'cpu'")
    if dev.type not in {"cpu", "cuda"}:
        raise ValueError(f"device {device!r} is not supported: use 'cpu' or 'cuda'")
    return dev


@contextlib.contextmanager
def torch_session(seed: int, threads: int | None = None, device: torch.device | None = None) -> Iterator[None]:
    """Seeded torch for one fit; the caller's RNG state, thread count and determinism flag are restored after.

    Within the session torch draws from ``seed``, runs ``threads`` threads (None: leave torch's setting) and
    flushes denormals (near convergence they slow the products down by orders of magnitude). The CPU kernels
    used here are deterministic for a given thread count (the tests check it bitwise). On CUDA, where the
    sparse first layer's backward uses atomics, deterministic algorithms are switched on; that setting
    imports torch's compiler stack, which takes seconds, so the CPU does not pay for it. Freed large blocks
    are kept for the next step (``gsrcl.nn.allocator``), so each step's first-layer gradient costs no page
    faults.
    """
    old_threads = torch.get_num_threads()
    cuda = device is not None and device.type == "cuda"
    old_det = torch.are_deterministic_algorithms_enabled()
    old_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() and torch.cuda.is_initialized() else []
    with torch.random.fork_rng(devices=devices), reuse_large_allocations():
        try:
            if threads:
                torch.set_num_threads(int(threads))
            flush_denormals()
            if cuda:
                torch.use_deterministic_algorithms(True, warn_only=True)
            torch.manual_seed(seed)
            yield
        finally:
            if cuda:
                torch.use_deterministic_algorithms(old_det, warn_only=old_warn)
            torch.set_num_threads(old_threads)


def adam(params, lr: float, weight_decay: float, device: torch.device) -> torch.optim.Adam:
    """Adam as published (L2 weight decay, not AdamW), with the fused kernel where torch has one.

    The fused kernel does the same update in one pass over the weights, which matters for the wide first layer
    (docs/decisions.md)."""
    try:
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, fused=True)
    except (RuntimeError, TypeError):  # pragma: no cover - a build without the fused kernel
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
