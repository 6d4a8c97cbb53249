"""The encoder MLP and the projection head (docs/methods.md §3.3).

Both are the same kind of network: hidden blocks Linear -> [BatchNorm1d] -> ReLU, then a plain Linear; every
Linear starts with N(0, 0.02²) weights and zero biases. The first Linear also takes a sparse (CSR or COO) torch
batch and multiplies it without densifying, through `embedding_bag` on an (in, out) weight: faster than a dense
product for the sparse single-cell input, where `torch.sparse.mm` was slower than dense (docs/decisions.md).
Without autograd on the CPU the product gathers a few output columns per pass, which keeps the gathered weight
rows in cache; the result is bitwise the same.

State travels as plain float32 arrays (`to_arrays` / `from_arrays`) with stable names; the architecture is read
back from their shapes, so a stored encoder needs no pickled config.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Mapping, Sequence

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["MLP", "Encoder", "ProjectionHead", "flush_denormals", "to_torch_sparse"]

INIT_STD = 0.02
GATHER_COLUMNS = 32  # output columns per gathering pass of a sparse first layer without autograd
_BN_FIELDS = ("weight", "bias", "running_mean", "running_var")


def flush_denormals() -> bool:
    """Flush denormal floats to zero on the CPU, where they slow products down; True where supported."""
    return bool(torch.set_flush_denormal(True))


def to_torch_sparse(X, device=None) -> torch.Tensor:
    """A scipy sparse matrix (any format) as a float32 torch CSR tensor, for `Encoder.forward`."""
    X = sp.csr_matrix(X, dtype=np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "sparse CSR support is in beta"
        return torch.sparse_csr_tensor(
            torch.from_numpy(X.indptr.astype(np.int64)),
            torch.from_numpy(X.indices.astype(np.int64)),
            torch.from_numpy(X.data),
            size=X.shape,
            device=device,
        )


def _csr_parts(x: torch.Tensor):
    """(crow, col, values) of a 2-D sparse CSR or COO tensor."""
    if x.layout == torch.sparse_coo:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            x = x.coalesce().to_sparse_csr()
    if x.layout != torch.sparse_csr:
        raise ValueError(f"sparse input must be CSR or COO, got layout {x.layout}")
    return x.crow_indices(), x.col_indices(), x.values()


class InputLinear(nn.Module):
    """Linear layer for dense or sparse input. `weight` is stored (in_features, out_features) so that a sparse
    row gathers contiguous rows of it."""

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.in_features = int(in_features)
        self.out_features = int(out_features)
        self.weight = nn.Parameter(torch.empty(self.in_features, self.out_features))
        self.bias = nn.Parameter(torch.empty(self.out_features))

    def forward(self, x: torch.Tensor, dropout: float = 0.0) -> torch.Tensor:
        if x.layout == torch.strided:
            if dropout:
                x = F.dropout(x, dropout, self.training)
            return torch.addmm(self.bias, x, self.weight)
        crow, col, values = _csr_parts(x)
        values = values.to(self.weight.dtype)
        if dropout:  # dropout of a zero is zero: dropping the stored values is the same as on the dense row
            values = F.dropout(values, dropout, self.training)
        if torch.is_grad_enabled() or self.weight.device.type != "cpu" or self.out_features <= GATHER_COLUMNS:
            out = F.embedding_bag(col, self.weight, crow, mode="sum", per_sample_weights=values,
                                  include_last_offset=True)
            return out + self.bias
        # Without autograd on the CPU: gather a few output columns at a time, so that the weight rows a batch
        # gathers stay in cache (docs/decisions.md). Each output is the same sum in the same order: the result
        # is bitwise the one-pass product.
        out = torch.empty(crow.numel() - 1, self.out_features, dtype=self.weight.dtype)
        for start in range(0, self.out_features, GATHER_COLUMNS):
            part = self.weight[:, start : start + GATHER_COLUMNS].contiguous()
            out[:, start : start + GATHER_COLUMNS] = F.embedding_bag(
                col, part, crow, mode="sum", per_sample_weights=values, include_last_offset=True)
        return out + self.bias

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, accepts sparse input"


class MLP(nn.Module):
    """Hidden blocks Linear -> [BatchNorm1d] -> ReLU, then a plain Linear; optional dropout on the input.

    Parameters
    ----------
    n_inputs : int
        Input features (genes); the first layer takes dense or sparse (CSR, COO) input.
    hidden : int or sequence of int
        Widths of the hidden blocks.
    out : int
        Output width.
    batch_norm : bool
        BatchNorm1d in each hidden block.
    input_dropout : float
        Dropout rate on the input, in [0, 1).

    Raises
    ------
    ValueError
        A width below 1 or a dropout rate outside [0, 1).
    """

    def __init__(self, n_inputs: int, hidden: Sequence[int] | int, out: int, batch_norm: bool = True,
                 input_dropout: float = 0.0):
        super().__init__()
        hidden = (int(hidden),) if isinstance(hidden, (int, np.integer)) else tuple(int(h) for h in hidden)
        widths = (int(n_inputs), *hidden, int(out))
        if min(widths) < 1:
            raise ValueError(f"layer widths must be positive, got {widths}")
        if not 0.0 <= float(input_dropout) < 1.0:
            raise ValueError(f"input_dropout must be in [0, 1), got {input_dropout}")
        self.n_inputs, self.hidden, self.out = widths[0], hidden, widths[-1]
        self.batch_norm = bool(batch_norm)
        self.input_dropout = float(input_dropout)
        self.linears = nn.ModuleList(
            [InputLinear(widths[0], widths[1])] + [nn.Linear(a, b) for a, b in zip(widths[1:-1], widths[2:])]
        )
        self.norms = nn.ModuleList([nn.BatchNorm1d(h) for h in hidden] if self.batch_norm else [])
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for lin in self.linears:
            nn.init.normal_(lin.weight, 0.0, INIT_STD)
            nn.init.zeros_(lin.bias)
        for bn in self.norms:
            bn.reset_parameters()

    @property
    def arch(self) -> dict:
        """The architecture as a JSON-able dict (informative; `from_arrays` reads it from the shapes)."""
        return {"n_inputs": self.n_inputs, "hidden": list(self.hidden), "out": self.out,
                "batch_norm": self.batch_norm, "input_dropout": self.input_dropout}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """`x`: (n, n_inputs) dense float tensor, or a sparse CSR/COO float tensor of that shape."""
        if x.dim() != 2 or x.shape[1] != self.n_inputs:
            raise ValueError(f"expected input of shape (n, {self.n_inputs}), got {tuple(x.shape)}")
        h = self.linears[0](x, dropout=self.input_dropout)
        for i, lin in enumerate(self.linears[1:]):
            if self.batch_norm:
                h = self.norms[i](h)
            h = lin(F.relu(h))
        return h

    # -- inputs no training cell has -------------------------------------------------------------------------

    def restrict_inputs(self, keep) -> None:
        """Keep only the first layer's inputs ``keep`` (sorted indices), in place and without drawing random
        numbers; ``expand_inputs`` puts the others back with zero weights. Training on the kept inputs is the
        same arithmetic as on all of them where the others are zero in every training cell."""
        keep = torch.as_tensor(np.asarray(keep, dtype=np.int64))
        first = self.linears[0]
        first.weight = nn.Parameter(first.weight.detach()[keep].clone())
        first.in_features = self.n_inputs = int(keep.numel())

    def expand_inputs(self, keep, n_inputs: int) -> None:
        """Undo ``restrict_inputs``: ``n_inputs`` inputs, the kept ones at ``keep`` and zero weights elsewhere."""
        keep = torch.as_tensor(np.asarray(keep, dtype=np.int64))
        first = self.linears[0]
        if int(keep.numel()) != first.in_features:
            raise ValueError(f"{keep.numel()} kept inputs given for a first layer of {first.in_features}")
        weight = first.weight.detach()
        full = torch.zeros(int(n_inputs), weight.shape[1], dtype=weight.dtype, device=weight.device)
        full[keep.to(weight.device)] = weight
        first.weight = nn.Parameter(full)
        first.in_features = self.n_inputs = int(n_inputs)

    # -- plain-array state ---------------------------------------------------------------------------------

    def to_arrays(self, prefix: str = "") -> dict[str, np.ndarray]:
        """Weights (out, in) and biases of every Linear, BN affine parameters and running statistics, as
        float32 arrays named `{prefix}linear{i}.weight|bias` and `{prefix}bn{i}.weight|bias|running_mean|
        running_var` (`prefix` is prepended as given, e.g. "encoder.")."""
        arrays: dict[str, np.ndarray] = {}

        def put(name, t):
            arrays[f"{prefix}{name}"] = np.ascontiguousarray(t.detach().cpu().numpy(), dtype=np.float32)

        for i, lin in enumerate(self.linears):
            put(f"linear{i}.weight", lin.weight.t() if isinstance(lin, InputLinear) else lin.weight)
            put(f"linear{i}.bias", lin.bias)
        for i, bn in enumerate(self.norms):
            for field in _BN_FIELDS:
                put(f"bn{i}.{field}", getattr(bn, field))
        return arrays

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray], prefix: str = "", input_dropout: float = 0.0):
        """Rebuild from `to_arrays` output (other keys are ignored); returned in eval mode. Raises ValueError
        when arrays are missing, misshapen, not finite, or the layers do not chain."""
        pattern = re.compile(re.escape(prefix) + r"(linear|bn)(\d+)\.(\w+)\Z")
        found: dict[tuple[str, int], dict[str, np.ndarray]] = {}
        for key, value in arrays.items():
            m = pattern.match(key)
            if m:
                found.setdefault((m.group(1), int(m.group(2))), {})[m.group(3)] = np.asarray(value)
        n_lin = sum(1 for kind, _ in found if kind == "linear")
        n_bn = sum(1 for kind, _ in found if kind == "bn")
        where = f"arrays '{prefix}*'"
        if n_lin == 0:
            raise ValueError(f"{where}: no '{prefix}linear0.weight' found")
        if sorted(i for kind, i in found if kind == "linear") != list(range(n_lin)):
            raise ValueError(f"{where}: linear layers are not numbered 0..{n_lin - 1}")
        if n_bn not in (0, n_lin - 1) or sorted(i for kind, i in found if kind == "bn") != list(range(n_bn)):
            raise ValueError(f"{where}: expected no batch-norm layers or exactly {n_lin - 1}, numbered from 0")

        widths = []
        for i in range(n_lin):
            layer = found[("linear", i)]
            if set(layer) != {"weight", "bias"}:
                raise ValueError(f"{where}: linear{i} must have exactly 'weight' and 'bias', has {sorted(layer)}")
            w, b = layer["weight"], layer["bias"]
            if w.ndim != 2 or b.shape != (w.shape[0],):
                raise ValueError(f"{where}: linear{i} weight {w.shape} / bias {b.shape} are inconsistent")
            if i and w.shape[1] != widths[-1]:
                raise ValueError(f"{where}: linear{i} takes {w.shape[1]} inputs but linear{i - 1} gives {widths[-1]}")
            if i == 0:
                widths.append(w.shape[1])
            widths.append(w.shape[0])
        for i in range(n_bn):
            layer = found[("bn", i)]
            if set(layer) != set(_BN_FIELDS):
                raise ValueError(f"{where}: bn{i} must have {list(_BN_FIELDS)}, has {sorted(layer)}")
            for field, a in layer.items():
                if a.shape != (widths[i + 1],):
                    raise ValueError(f"{where}: bn{i}.{field} has shape {a.shape}, expected ({widths[i + 1]},)")
        for layer in found.values():
            for a in layer.values():
                if not np.issubdtype(a.dtype, np.floating) or not np.isfinite(a).all():
                    raise ValueError(f"{where}: arrays must be finite floats")
        if n_bn and any((found[("bn", i)]["running_var"] < 0).any() for i in range(n_bn)):
            raise ValueError(f"{where}: negative batch-norm running variance")

        model = cls._build(widths[0], tuple(widths[1:-1]), widths[-1], n_bn > 0, input_dropout)
        with torch.no_grad():
            for i, lin in enumerate(model.linears):
                w = torch.from_numpy(np.asarray(found[("linear", i)]["weight"], dtype=np.float32))
                lin.weight.copy_(w.t() if isinstance(lin, InputLinear) else w)
                lin.bias.copy_(torch.from_numpy(np.asarray(found[("linear", i)]["bias"], dtype=np.float32)))
            for i, bn in enumerate(model.norms):
                for field in _BN_FIELDS:
                    getattr(bn, field).copy_(torch.from_numpy(np.asarray(found[("bn", i)][field], dtype=np.float32)))
        return model.eval()

    @classmethod
    def _build(cls, n_inputs, hidden, out, batch_norm, input_dropout):
        return cls(n_inputs, hidden, out, batch_norm=batch_norm, input_dropout=input_dropout)


class Encoder(MLP):
    """The representation network: n_inputs -> hidden (BN + ReLU) -> out (plain Linear). AF-RCL's defaults."""

    def __init__(self, n_inputs: int, hidden: Sequence[int] = (1024, 1024, 1024), out: int = 512,
                 batch_norm: bool = True, input_dropout: float = 0.0):
        super().__init__(n_inputs, hidden, out, batch_norm=batch_norm, input_dropout=input_dropout)


class ProjectionHead(MLP):
    """Linear -> [BN] -> ReLU -> Linear on top of the encoder, used only by the loss."""

    def __init__(self, n_inputs: int = 512, hidden: int | Sequence[int] = 256, out: int = 128,
                 batch_norm: bool = True):
        super().__init__(n_inputs, hidden, out, batch_norm=batch_norm, input_dropout=0.0)

    @classmethod
    def _build(cls, n_inputs, hidden, out, batch_norm, input_dropout):
        return cls(n_inputs, hidden, out, batch_norm=batch_norm)
