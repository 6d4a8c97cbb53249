"""Encoder checkpoints during training: which one is better, where they are kept, and the averaged weights."""

from __future__ import annotations

import contextlib
import math
from typing import Any, Iterator

import numpy as np
import torch

from .encoding import sparse_tensor


def better(score: float, best: float | None, ties: str) -> bool:
    """Whether a checkpoint scoring ``score`` replaces the one scoring ``best`` (None or NaN: none yet).

    ``ties="later"`` keeps the later checkpoint on ties (AF-RCL's rule; for GsRCL it keeps the published
    first-on-ties rule from choosing the untrained encoder where the score saturates); ``"first"`` is the
    published GsRCL rule. A NaN score never replaces a checkpoint."""
    if best is None or math.isnan(best):
        return True
    if math.isnan(score):
        return False
    return score >= best if ties == "later" else score > best


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A detached copy of a module's state: a checkpoint kept in memory."""
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


class CheckpointStore:
    """Encoder checkpoints kept during training, by key.

    In memory up to ``max_bytes`` in all, beyond that in a temporary folder as plain ``.npy`` arrays (read back
    without pickle), removed by ``close``. GsRCL keeps one checkpoint per distinct best epoch of its tasks,
    hundreds of MB each at the published width; with ``max_bytes`` 0 all but the first wait on disk.

    The folder is ``TMPDIR/gsrcl-checkpoints-PID.HOST-*``; making one removes those of killed runs
    (`gsrcl.atomic.private_temp_dir`). A full disk while spilling raises `gsrcl.errors.DiskFullError`."""

    SPILL_PREFIX = "gsrcl-checkpoints"

    def __init__(self, max_bytes: int = 1 << 30):
        self.max_bytes = int(max_bytes)
        self._memory: dict[Any, dict[str, torch.Tensor]] = {}
        self._disk: dict[Any, dict[str, str]] = {}
        self._tmp = None

    def __enter__(self) -> "CheckpointStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __contains__(self, key) -> bool:
        return key in self._memory or key in self._disk

    def _bytes(self) -> int:
        return sum(t.numel() * t.element_size() for st in self._memory.values() for t in st.values())

    def put(self, key, module: torch.nn.Module) -> None:
        """Keep a copy of ``module``'s current state under ``key``."""
        state = snapshot(module)
        size = sum(t.numel() * t.element_size() for t in state.values())
        if self._memory and self._bytes() + size > self.max_bytes:
            import os

            from ..atomic import disk_full_as_error, private_temp_dir

            files = {}

            def discard() -> None:  # this checkpoint's files; the folder goes with `close`
                for f in files.values():
                    with contextlib.suppress(OSError):
                        os.remove(f)

            with disk_full_as_error(f"the temporary folder ({self.SPILL_PREFIX}-*)", cleanup=discard):
                if self._tmp is None:
                    self._tmp = private_temp_dir(self.SPILL_PREFIX)
                for i, (name, t) in enumerate(state.items()):
                    files[name] = os.path.join(self._tmp.name, f"{len(self._disk)}-{abs(hash(key))}-{i}.npy")
                    np.save(files[name], t.cpu().numpy(), allow_pickle=False)
            self._disk[key] = files
        else:
            self._memory[key] = state

    def get(self, key) -> dict[str, torch.Tensor]:
        """The state kept under ``key`` (a ``state_dict``); KeyError when there is none."""
        if key in self._memory:
            return self._memory[key]
        return {name: torch.from_numpy(np.load(f, allow_pickle=False)) for name, f in self._disk[key].items()}

    def retain(self, keys) -> None:
        """Forget every checkpoint whose key is not in ``keys``."""
        import os

        keys = set(keys)
        for key in [k for k in self._memory if k not in keys]:
            del self._memory[key]
        for key in [k for k in self._disk if k not in keys]:
            for f in self._disk.pop(key).values():
                with contextlib.suppress(OSError):
                    os.remove(f)

    def close(self) -> None:
        """Forget every checkpoint and remove the temporary folder."""
        self._memory.clear()
        self._disk.clear()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None


class WeightAverage:
    """The running mean of a module's floating-point weights and buffers, taken at chosen points of training.

    The averaged weights (as stochastic weight averaging, Izmailov et al. 2018) are one more candidate
    checkpoint of both methods (``average_checkpoints``; docs/decisions.md). ``on_disk`` keeps the sum in a
    temporary file, read and written in pieces of ``CHUNK`` values, so that a wide GsRCL encoder adds nothing
    to the peak memory of training."""

    CHUNK = 1 << 22  # float32 values per read / write

    def __init__(self, on_disk: bool = False):
        self.on_disk = bool(on_disk)
        self.count = 0
        self._sum: dict[str, torch.Tensor] = {}
        self._layout: dict[str, tuple[int, int]] = {}  # name -> (offset in values, number of values)
        self._file = None

    def __enter__(self) -> "WeightAverage":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @staticmethod
    def _floats(module: torch.nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
        for name, t in module.state_dict().items():
            if t.is_floating_point():
                yield name, t.detach()

    def add(self, module: torch.nn.Module) -> None:
        """Add ``module``'s current floating-point weights and buffers to the sum."""
        if not self.on_disk:
            for name, t in self._floats(module):
                if self.count == 0:
                    self._sum[name] = t.to(torch.float32, copy=True)
                else:
                    self._sum[name] += t
        else:
            from ..atomic import disk_full_as_error

            with disk_full_as_error("the temporary folder (the averaged weights)", cleanup=self.close):
                self._add_on_disk(module)
        self.count += 1

    def _add_on_disk(self, module: torch.nn.Module) -> None:
        import tempfile

        # the sum in an unnamed temporary file: nothing is left when the process ends, however it ends
        if self._file is None:
            self._file = tempfile.TemporaryFile(prefix="gsrcl-average-")
        offset = 0
        for name, t in self._floats(module):
            flat = t.reshape(-1).cpu().to(torch.float32)
            self._layout.setdefault(name, (offset, flat.numel()))
            for a in range(0, flat.numel(), self.CHUNK):
                piece = flat[a : a + self.CHUNK].numpy()
                self._file.seek(4 * (offset + a))
                if self.count:
                    piece = np.fromfile(self._file, dtype=np.float32, count=len(piece)) + piece
                    self._file.seek(4 * (offset + a))
                piece.tofile(self._file)
            offset += flat.numel()

    def load_into(self, module: torch.nn.Module) -> None:
        """Replace the module's floating-point weights and buffers by their mean, in place."""
        if not self.count:
            raise RuntimeError("no weights were added to the average")
        with torch.no_grad():
            for name, t in self._floats(module):
                if not self.on_disk:
                    t.copy_(self._sum[name] / self.count)
                    continue
                offset, n = self._layout[name]
                flat = t.view(-1)
                for a in range(0, n, self.CHUNK):
                    self._file.seek(4 * (offset + a))
                    piece = np.fromfile(self._file, dtype=np.float32, count=min(self.CHUNK, n - a)) / self.count
                    flat[a : a + len(piece)].copy_(torch.from_numpy(piece))

    def close(self) -> None:
        """Forget the sum and remove its temporary file."""
        self._sum.clear()
        if self._file is not None:
            self._file.close()
            self._file = None


def refresh_batch_norm(encoder, X, batch_size: int, device, noise_std: float = 0.0) -> None:
    """Recompute the encoder's BatchNorm running statistics, for averaged weights; the encoder ends in eval mode.

    One pass over the rows of ``X`` in batches of ``batch_size``; with ``noise_std``, each row plus
    N(0, noise_std) noise on every gene, as GsRCL's views (this draws from torch's generator)."""
    bns = [m for m in encoder.modules() if isinstance(m, torch.nn.BatchNorm1d)]
    if not bns:
        return
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the pass
    encoder.train()
    with torch.no_grad():
        for start in range(0, X.shape[0], batch_size):
            block = X[start : start + batch_size]
            if noise_std:
                xb = torch.from_numpy(block.toarray()).to(device)
                encoder(xb + noise_std * torch.randn_like(xb))
            else:
                encoder(sparse_tensor(block, device))
    for m, momentum in zip(bns, momenta):
        m.momentum = momentum
    encoder.eval()
