"""Original GsRCL / AF-RCL reference folders built in the tests, and the original tool's prediction rules
followed step by step (docs/methods.md §2; ../shared/ORIGINAL_FORMAT.md gives every detail).

The networks carry the original's state_dict names and shapes: GsRCL ``encoder.<i>.linear`` and
``encoder.<i>.norm`` (sizes from ``frozen_kwargs``, small here), AF-RCL ``encoder.0-3`` and ``proj_head.0-1``,
each with a ``linear`` and a ``bnorm``, at the original's fixed sizes on a few genes. The SVMs are scikit-learn
``SVC(probability=True)`` fitted on cells of a few synthetic types and dumped with joblib as the original does.
`expected_probabilities` recomputes what the original scripts would print, with scikit-learn's own
``predict_proba`` (the tests may unpickle their own fixtures; gsrcl never does).
"""

from __future__ import annotations

import warnings
from collections import OrderedDict
from pathlib import Path

import joblib
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

GENES = [f"G{i:03d}" for i in range(60)]
TYPES = ["B cell", "T cell", "monocyte"]


class Block(nn.Module):
    """A Linear with an optional norm, named as the original's blocks (``linear`` and ``norm`` or ``bnorm``)."""

    def __init__(self, n_in: int, n_out: int, norm: str | None):
        super().__init__()
        self.linear = nn.Linear(n_in, n_out)
        self.norm_name = norm
        if norm:
            setattr(self, norm, nn.BatchNorm1d(n_out))

    def forward(self, x, last: bool):
        x = self.linear(x)
        if last:
            return x
        if self.norm_name:
            x = getattr(self, self.norm_name)(x)
        return F.relu(x)


class Net(nn.Module):
    """The original encoder: ``encoder`` blocks (an optional parameter-free Dropout first), optionally a
    ``proj_head`` whose output is not used."""

    def __init__(self, widths, norm, *, dropout=False, head=None, last_norm=False):
        super().__init__()
        layers = [nn.Dropout(0.5)] if dropout else []
        for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
            last = i == len(widths) - 2
            layers.append(Block(a, b, norm if (not last or last_norm) else None))
        self.encoder = nn.Sequential(*layers)
        if head:
            self.proj_head = nn.Sequential(Block(widths[-1], head[0], norm), Block(head[0], head[1], norm))

    def forward(self, x):
        blocks = [m for m in self.encoder if isinstance(m, Block)]
        for i, block in enumerate(blocks):
            x = block(x, last=i == len(blocks) - 1)
        return x


def randomise_norms(net: nn.Module, rng: np.random.Generator) -> None:
    """Running statistics and affine parameters that are not the identity, so that a wrong norm shows."""
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm1d):
                n = m.num_features
                m.running_mean.copy_(torch.from_numpy(rng.normal(0, 0.05, n).astype(np.float32)))
                m.running_var.copy_(torch.from_numpy(rng.uniform(0.5, 2.0, n).astype(np.float32)))
                m.weight.copy_(torch.from_numpy(rng.uniform(0.5, 1.5, n).astype(np.float32)))
                m.bias.copy_(torch.from_numpy(rng.normal(0, 0.1, n).astype(np.float32)))


def counts(n_cells: int, genes: list[str], rng: np.random.Generator, types=TYPES):
    """Counts of cells of ``types`` (each type raises its own block of genes), and their labels."""
    labels = rng.integers(0, len(types), n_cells)
    rates = np.full((n_cells, len(genes)), 0.6)
    block = len(genes) // (len(types) + 1)
    for t in range(len(types)):
        rates[labels == t, t * block:(t + 1) * block] += 4.0
    return rng.poisson(rates).astype(np.int64), labels


def original_log(x: np.ndarray) -> np.ndarray:
    """The original's transform, in float32 by torch."""
    X = torch.from_numpy(np.asarray(x, dtype=np.float32))
    return torch.log((X + 1.0) + 1e-6).numpy()


def _svc(X, y, seed: int):
    from sklearn.svm import SVC

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return SVC(probability=True, random_state=seed).fit(np.asarray(X, dtype=np.float64), y)


def _embed(net: Net, X: np.ndarray) -> np.ndarray:
    net.eval()
    with torch.no_grad():
        return net(torch.from_numpy(original_log(X))).numpy()


def write_genes(folder: Path, name: str, genes: list[str]) -> None:
    (folder / f"{name}-reference-genes.csv").write_text("".join(f"{g}\n" for g in genes))


def make_gsrcl_folder(folder, *, name: str = "Toy", genes=GENES, types=TYPES, genes_only=("monocyte",),
                      batchnorm: bool = False, dropout: bool = False, enc: int = 32, out: int = 16,
                      seed: int = 0, cells=None) -> Path:
    """An original GsRCL reference folder ``folder/name``: per type an encoder checkpoint and its SVM, or (types
    in ``genes_only``) one SVM on the transformed genes. ``cells``: the SVMs' training cells (counts over
    ``genes``, and their labels as indices into ``types``); default 240 synthetic cells."""
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    ref = Path(folder) / name
    ref.mkdir(parents=True)
    write_genes(ref, name, genes)
    X, y = counts(240, genes, rng, types) if cells is None else cells
    for k, cell_type in enumerate(types):
        target = (y == k).astype(np.int32)
        if cell_type in genes_only:
            joblib.dump(_svc(original_log(X), target, seed + k), ref / f"{cell_type}--genes.joblib")
            continue
        net = Net([len(genes), enc, enc, enc, out], "norm" if batchnorm else None, dropout=dropout)
        if batchnorm:
            randomise_norms(net, rng)
        state = OrderedDict((key, value.clone()) for key, value in net.state_dict().items())
        kwargs = {"in_dim": len(genes), "dim_enc": enc, "in_dim_proj": out, "dim_proj": 8, "out_dim": 4,
                  "batchnorm": batchnorm, "dropout": 0.5 if dropout else None, "frozen": True}
        torch.save({"forzen_params": state, "frozen_kwargs": kwargs, "epoch": 7 + k}, ref / f"{cell_type}--enc.pt")
        joblib.dump(_svc(_embed(net, X), target, seed + k), ref / f"{cell_type}--svm.joblib")
    return ref


def make_afrcl_folder(folder, *, name: str = "Toy", genes=GENES, types=TYPES, seed: int = 0, cells=None) -> Path:
    """An original AF-RCL reference folder ``folder/name`` at the original's fixed sizes (``cells`` as
    `make_gsrcl_folder`)."""
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    ref = Path(folder) / name
    ref.mkdir(parents=True)
    write_genes(ref, name, genes)
    net = Net([len(genes), 1024, 1024, 1024, 512], "bnorm", head=(256, 128), last_norm=True)
    randomise_norms(net, rng)
    with torch.no_grad():  # the output blocks' norms exist but were never used in training
        for block in (net.encoder[3], net.proj_head[1]):
            block.bnorm.reset_running_stats()
    torch.save(net.state_dict(), ref / f"{name}_pretrained_encoder.pt")
    X, y = counts(240, genes, rng, types) if cells is None else cells
    joblib.dump(_svc(_embed(net, X), y.astype(np.int64), seed), ref / f"{name}_svm.joblib")
    joblib.dump({np.str_(t): i for i, t in enumerate(sorted(types))}, ref / f"{name}_cell_type_dict.joblib")
    return ref


def align(Q: np.ndarray, query_genes: list[str], ref_genes: list[str]) -> np.ndarray:
    """The original's alignment (ORIGINAL_FORMAT.md §4), step by step."""
    query_genes = np.asarray(query_genes, dtype=object)
    ref_genes = np.asarray(ref_genes, dtype=object)
    mask = np.isin(query_genes, ref_genes)
    kept = Q[:, mask]
    kept_genes = query_genes[mask]
    missing = np.setdiff1d(ref_genes, kept_genes)
    matrix = np.concatenate([np.zeros((Q.shape[0], len(missing))), kept], axis=1)
    names = np.concatenate([missing, kept_genes])
    position = {g: i for i, g in enumerate(ref_genes)}
    order = np.argsort([position[g] for g in names], kind="stable")
    return matrix[:, order]


def expected_probabilities(ref: Path, Q: np.ndarray, query_genes: list[str], p: float = 0.5, log: bool = True):
    """What the original prediction script prints for query ``Q`` (cells x ``query_genes``: counts, or with
    ``log=False`` values logged already, the original's ``-l 0``) with the reference folder ``ref``: (types,
    probabilities, labels), the types in the order of its columns."""
    name = ref.name
    genes = [line for line in (ref / f"{name}-reference-genes.csv").read_text().splitlines() if line]
    X = align(Q, query_genes, genes)
    X = original_log(X) if log else X.astype(np.float32)
    encoder = ref / f"{name}_pretrained_encoder.pt"
    if encoder.exists():
        net = Net([len(genes), 1024, 1024, 1024, 512], "bnorm", head=(256, 128), last_norm=True)
        net.load_state_dict(torch.load(encoder, weights_only=True))
        emb = _embed_logged(net, X)
        proba = joblib.load(ref / f"{name}_svm.joblib").predict_proba(emb.astype(np.float64))
        types = list(joblib.load(ref / f"{name}_cell_type_dict.joblib"))
        types = [str(t) for t in types]
    else:
        types, columns = [], []
        for path in sorted(ref.iterdir()):
            cell_type = path.name.split("--")[0]
            if "--" not in path.name or cell_type in types:
                continue
            pt = sorted(ref.glob(f"{cell_type}--*.pt"))
            if pt:
                ckpt = torch.load(pt[0], weights_only=True)
                kw = ckpt["frozen_kwargs"]
                net = Net([kw["in_dim"], kw["dim_enc"], kw["dim_enc"], kw["dim_enc"], kw["in_dim_proj"]],
                          "norm" if kw["batchnorm"] else None, dropout=kw["dropout"] is not None)
                net.load_state_dict(ckpt["forzen_params"])
                inputs = _embed_logged(net, X)
                svm = joblib.load(ref / f"{cell_type}--svm.joblib")
            else:
                inputs = X
                svm = joblib.load(next(ref.glob(f"{cell_type}--*.joblib")))
            types.append(cell_type)
            columns.append(svm.predict_proba(inputs.astype(np.float64))[:, 1])
        proba = np.stack(columns, axis=1)
    proba = proba / proba.sum(axis=1, keepdims=True)
    best = proba.argmax(axis=1)
    labels = np.where(proba.max(axis=1) <= p, "Unassigned", np.asarray(types, dtype=object)[best])
    return types, proba, labels


def _embed_logged(net: Net, X: np.ndarray) -> np.ndarray:
    net.eval()
    with torch.no_grad():
        return net(torch.from_numpy(np.asarray(X, dtype=np.float32))).numpy()
