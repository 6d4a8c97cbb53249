"""Encoder / ProjectionHead: init, sparse input, gradients, plain-array state."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp
import torch

from gsrcl.nn import (
    Encoder,
    ProjectionHead,
    afrcl_loss,
    flush_denormals,
    to_torch_sparse,
)
from gsrcl.nn.encoder import GATHER_COLUMNS
from tests.conftest import dataset


@pytest.fixture(scope="module")
def immune_batch():
    """64 cells of real log counts (mostly zeros), their labels."""
    a = ad.read_h5ad(dataset("mouse_immune_actinn_1k.h5ad"))
    rows = np.random.default_rng(0).choice(a.n_obs, 64, replace=False)
    X = sp.csr_matrix(a.X[rows], dtype=np.float32)
    X.data = np.log1p(X.data)
    return X, a.obs["cell_type"].to_numpy()[rows].astype(str)


def test_linear_init_is_normal_0_02_and_biases_zero():
    torch.manual_seed(0)
    for net in (Encoder(3000, (512,), 256), ProjectionHead(512, 256, 128)):
        for lin in net.linears:
            assert abs(lin.weight.std().item() - 0.02) < 0.001
            assert abs(lin.weight.mean().item()) < 0.001
            assert torch.count_nonzero(lin.bias) == 0


def test_architecture_blocks():
    enc = Encoder(100, hidden=(64, 32, 16), out=8)
    assert [(lin.weight.numel()) for lin in enc.linears] == [100 * 64, 64 * 32, 32 * 16, 16 * 8]
    assert [bn.num_features for bn in enc.norms] == [64, 32, 16]
    assert len(Encoder(100, (64,), 8, batch_norm=False).norms) == 0
    enc.eval()
    x = torch.rand(5, 100)
    # by hand: Linear -> BN (eval: running stats 0/1) -> ReLU per hidden layer, plain final Linear
    h = x @ enc.linears[0].weight + enc.linears[0].bias
    for i, lin in enumerate(enc.linears[1:]):
        bn = enc.norms[i]
        h = torch.relu((h - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps) * bn.weight + bn.bias)
        h = h @ lin.weight.T + lin.bias
    torch.testing.assert_close(enc(x), h)


@pytest.mark.realdata
def test_sparse_and_dense_input_give_same_outputs_and_gradients(immune_batch):
    X, y = immune_batch
    torch.manual_seed(0)
    enc, head = Encoder(X.shape[1], (128, 128, 128), 64), ProjectionHead(64, 32, 16)
    xs = to_torch_sparse(X)
    inputs = {"csr": xs, "coo": xs.to_sparse_coo(), "dense": torch.from_numpy(X.toarray())}
    outs, grads = {}, {}
    for name, x in inputs.items():
        enc.zero_grad(), head.zero_grad()
        h = enc(x)
        afrcl_loss(head(h), y).backward()
        outs[name] = h.detach()
        grads[name] = [p.grad.clone() for p in [*enc.parameters(), *head.parameters()]]
        assert all(torch.isfinite(g).all() for g in grads[name])
        # every weight matrix gets a gradient (biases before a BN have a true gradient of 0)
        weights = [p.grad for p in [*enc.parameters(), *head.parameters()] if p.dim() == 2]
        assert len(weights) == 6 and all(g.abs().max() > 1e-6 for g in weights)
    scale = max(g.abs().max().item() for g in grads["csr"])
    out_scale = outs["csr"].abs().max().item()
    for name in ("coo", "dense"):
        # float32 sums of ~1,500 terms in another order (dense: MKL's blocking; the CPU decides which)
        torch.testing.assert_close(outs[name], outs["csr"], rtol=1e-5, atol=1e-5 * out_scale)
        for g, g_ref in zip(grads[name], grads["csr"]):
            # float32 sums in another order: compare on the scale of the largest gradient
            torch.testing.assert_close(g, g_ref, rtol=1e-3, atol=1e-5 * scale)
    with pytest.raises(ValueError, match="shape"):
        enc(torch.zeros(2, X.shape[1] - 1))


@pytest.mark.parametrize("width", [GATHER_COLUMNS - 1, 3 * GATHER_COLUMNS + 5])
def test_sparse_product_without_autograd_is_bitwise_the_one_with_it(width):
    """Without autograd the sparse first layer gathers a few columns at a time; the numbers do not change."""
    rng = np.random.default_rng(1)
    X = sp.random(300, 700, density=0.08, format="csr", dtype=np.float32, random_state=rng)
    X[5] = 0  # a cell without a detected gene
    X = sp.csr_matrix(X)
    torch.manual_seed(0)
    enc = Encoder(700, (width, 40), 16).eval()
    xs = to_torch_sparse(X)
    with torch.no_grad():
        first = enc.linears[0](xs)
        out = enc(xs)
    with torch.enable_grad():
        first_grad = enc.linears[0](xs)
        out_grad = enc(xs)
    assert first_grad.requires_grad and not first.requires_grad
    assert torch.equal(first, first_grad.detach()) and torch.equal(out, out_grad.detach())
    torch.testing.assert_close(first, torch.from_numpy(X.toarray()) @ enc.linears[0].weight.detach()
                               + enc.linears[0].bias.detach(), rtol=1e-5, atol=1e-6)


def test_input_dropout_on_sparse_input():
    X = sp.random(32, 200, density=0.2, format="csr", dtype=np.float32, random_state=1)
    torch.manual_seed(0)
    enc = Encoder(200, (16,), 8, batch_norm=False, input_dropout=0.9)
    xs, xd = to_torch_sparse(X), torch.from_numpy(X.toarray())
    enc.eval()
    torch.testing.assert_close(enc(xs), enc(xd))  # no dropout at eval
    enc.train()
    first = enc.linears[0]
    # with the first layer alone: surviving values are scaled by 1/(1-p), ~90% are dropped
    torch.manual_seed(1)
    out = first(xs, dropout=0.9) - first.bias
    full = xd @ first.weight
    assert not torch.allclose(out, full)
    weight = torch.eye(200, 16)  # picks the first 16 inputs
    with torch.no_grad():
        first.weight.copy_(weight)
    torch.manual_seed(1)
    kept = (first(xs, dropout=0.9) - first.bias).detach()
    dense16 = xd[:, :16]
    nz = dense16 != 0
    assert torch.all((kept[nz] == 0) | torch.isclose(kept[nz], dense16[nz] * 10))
    assert torch.all(kept[~nz] == 0)
    assert 0.8 < (kept[nz] == 0).float().mean().item() < 0.97


def _trained(net, n_inputs, seed=0):
    torch.manual_seed(seed)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(3):  # moves weights and BN running statistics away from their init
        x = torch.rand(16, n_inputs)
        opt.zero_grad()
        net(x).pow(2).mean().backward()
        opt.step()
    return net


def test_to_arrays_from_arrays_round_trip():
    enc = _trained(Encoder(40, (24, 24, 24), 12), 40)
    arrays = enc.to_arrays("encoder.")
    assert all(a.dtype == np.float32 for a in arrays.values())
    assert arrays["encoder.linear0.weight"].shape == (24, 40)
    assert not any("num_batches" in k for k in arrays)
    assert len(arrays) == 4 * 2 + 3 * 4
    other = {"head.linear0.weight": np.zeros((3, 3), np.float32), **arrays}  # other keys are ignored
    back = Encoder.from_arrays(other, "encoder.")
    assert not back.training
    assert (back.n_inputs, back.hidden, back.out, back.batch_norm) == (40, (24, 24, 24), 12, True)
    enc.eval()
    x = torch.rand(9, 40)
    assert torch.equal(enc(x), back(x))
    torch.testing.assert_close(back(to_torch_sparse(sp.csr_matrix(x.numpy()))), enc(x))

    head = _trained(ProjectionHead(12, 6, 3, batch_norm=False), 12)
    head_back = ProjectionHead.from_arrays(head.to_arrays(), "")
    head.eval()
    z = torch.rand(4, 12)
    assert isinstance(head_back, ProjectionHead) and torch.equal(head(z), head_back(z))


@pytest.mark.parametrize(
    "break_it",
    [
        lambda a: a.update({"e.linear1.bias": np.zeros(5, np.float32)}),
        lambda a: a.update({"e.linear1.weight": np.zeros((8, 7), np.float32)}),  # does not chain
        lambda a: a.update({"e.bn0.running_var": np.ones(9, np.float32)}),
        lambda a: a.pop("e.bn1.running_mean"),
        lambda a: [a.pop(k) for k in list(a) if k.startswith("e.bn1.")],  # one BN layer too few
        lambda a: a.pop("e.linear1.weight"),
        lambda a: a.update({"e.linear0.weight": np.full((8, 10), np.nan, np.float32)}),
        lambda a: a.update({"e.linear0.weight": np.zeros(80, np.float32)}),
        lambda a: a.update({"e.bn0.running_var": -np.ones(8, np.float32)}),
        lambda a: [a.pop(k) for k in list(a)],
    ],
)
def test_from_arrays_rejects_inconsistent_arrays(break_it):
    arrays = Encoder(10, (8, 8), 4).to_arrays("e.")
    break_it(arrays)
    with pytest.raises(ValueError):
        Encoder.from_arrays(arrays, "e.")


def test_flush_denormals():
    try:
        if not flush_denormals():
            pytest.skip("this CPU cannot flush denormals")
        assert (torch.tensor([1e-39]) * 0.5).item() == 0.0
    finally:
        torch.set_flush_denormal(False)
    assert (torch.tensor([1e-39]) * 0.5).item() > 0.0
