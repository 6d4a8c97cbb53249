"""The four contrastive losses against brute-force loops written from the formulas of docs/methods.md §3.5."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from gsrcl.nn import afrcl_loss, conventional_supcon, nt_xent, supcon


def _unit(z):
    z = np.asarray(z, dtype=np.float64)
    return z / np.linalg.norm(z, axis=1, keepdims=True)


def brute_nt_xent(z1, z2, tau):
    z1, z2 = _unit(z1), _unit(z2)
    n = len(z1)
    total = 0.0
    for a, b in ((z1, z2), (z2, z1)):
        ce = 0.0
        for i in range(n):
            logits = [a[i] @ b[j] / tau for j in range(n)] + [a[i] @ a[k] / tau for k in range(n) if k != i]
            ce += -(logits[i] - math.log(sum(math.exp(v) for v in logits)))
        total += ce / n
    return total


def brute_supcon(z1, z2, y, tau):
    z = _unit(np.vstack([z1, z2]))
    y = np.concatenate([y, y])
    m = len(z)
    losses = []
    for i in range(m):
        denom = sum(math.exp(z[i] @ z[k] / tau) for k in range(m) if k != i)
        pos = [p for p in range(m) if p != i and y[p] == y[i]]
        losses.append(-sum(z[i] @ z[p] / tau - math.log(denom) for p in pos) / len(pos))
    return sum(losses) / m


def brute_afrcl(z, y, tau):
    z = _unit(z)
    n = len(z)
    losses = []
    for i in range(n):
        pos = [p for p in range(n) if p != i and y[p] == y[i]]
        neg = [k for k in range(n) if y[k] != y[i]]
        if not pos:
            continue
        li = 0.0
        for p in pos:
            e_p = math.exp(z[i] @ z[p] / tau)
            li += -math.log(e_p / (e_p + sum(math.exp(z[i] @ z[k] / tau) for k in neg)))
        losses.append(li / len(pos))
    return sum(losses) / len(losses) if losses else 0.0


def brute_conventional(z, y, tau):
    z = _unit(z)
    n = len(z)
    losses = []
    for i in range(n):
        pos = [p for p in range(n) if p != i and y[p] == y[i]]
        neg = [k for k in range(n) if y[k] != y[i]]
        if not pos:
            continue
        denom = sum(math.exp(z[i] @ z[p] / tau) for p in pos) + sum(math.exp(z[i] @ z[k] / tau) for k in neg)
        losses.append(-sum(math.log(math.exp(z[i] @ z[p] / tau) / denom) for p in pos) / len(pos))
    return sum(losses) / len(losses) if losses else 0.0


LABELS = {
    "random": np.array([0, 2, 1, 0, 2, 2, 1, 0, 1]),
    "one_anchor_without_positive": np.array([0, 0, 1, 1, 1, 2]),
    "no_anchor_with_positive": np.array([0, 1, 2, 3]),
    "all_same": np.array([4, 4, 4, 4, 4]),
    "single_cell": np.array([7]),
    "pairs": np.array([1, 0, 1, 0]),
}


def _z(n, d=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, d, generator=g, dtype=torch.float64) * 2).requires_grad_(True)


def _finite_grad(loss, z):
    (grad,) = torch.autograd.grad(loss, z)
    assert torch.isfinite(loss) and torch.isfinite(grad).all()
    return grad


@pytest.mark.parametrize("pattern", sorted(LABELS))
@pytest.mark.parametrize("tau", [0.1, 0.5])
def test_single_view_losses_match_brute_force(pattern, tau):
    y = LABELS[pattern]
    z = _z(len(y), seed=len(pattern))
    for fn, brute in ((afrcl_loss, brute_afrcl), (conventional_supcon, brute_conventional)):
        loss = fn(z, y, temperature=tau)
        assert loss.item() == pytest.approx(brute(z.detach().numpy(), y, tau), rel=1e-9, abs=1e-12)
        _finite_grad(loss, z)


@pytest.mark.parametrize("pattern", ["random", "one_anchor_without_positive", "all_same", "pairs", "single_cell"])
def test_two_view_losses_match_brute_force(pattern):
    y = LABELS[pattern]
    z1, z2 = _z(len(y), seed=1), _z(len(y), seed=2)
    loss = nt_xent(z1, z2, temperature=0.07)
    assert loss.item() == pytest.approx(brute_nt_xent(z1.detach().numpy(), z2.detach().numpy(), 0.07), rel=1e-9)
    _finite_grad(loss, z1)
    loss = supcon(z1, z2, y, temperature=0.07)
    assert loss.item() == pytest.approx(brute_supcon(z1.detach().numpy(), z2.detach().numpy(), y, 0.07), rel=1e-9)
    _finite_grad(loss, z2)


def test_afrcl_loss_hand_computed_three_points():
    # unit vectors (3,0)->(1,0), (0,1), (-1,0); labels 0,0,1; tau 0.5: s/tau = 0 between the positives,
    # -2 from cell 0 to the negative, 0 from cell 1 to it; cell 2 has no positive and is left out.
    z = torch.tensor([[3.0, 0.0], [0.0, 1.0], [-1.0, 0.0]], dtype=torch.float64)
    expected = (math.log(1 + math.exp(-2.0)) + math.log(2.0)) / 2
    assert afrcl_loss(z, [0, 0, 1], temperature=0.5).item() == pytest.approx(expected, rel=1e-12)
    # the two single-positive anchors give the same value with a shared denominator
    assert conventional_supcon(z, [0, 0, 1], temperature=0.5).item() == pytest.approx(expected, rel=1e-12)


def test_positives_do_not_compete_in_afrcl_loss_but_do_in_conventional():
    # all cells of one type, identical: AF-RCL has no negatives -> log 1 = 0; AF-RCL-c still has log(|P|)
    z = torch.ones(4, 3, requires_grad=True)
    assert afrcl_loss(z, [0, 0, 0, 0]).item() == 0.0
    assert conventional_supcon(z, [0, 0, 0, 0]).item() == pytest.approx(math.log(3), rel=1e-6)


def test_no_positive_gives_zero_that_keeps_the_graph():
    z = _z(4)
    for fn in (afrcl_loss, conventional_supcon):
        loss = fn(z, ["a", "b", "c", "d"])
        assert loss.item() == 0.0 and loss.requires_grad
        assert torch.equal(_finite_grad(loss, z), torch.zeros_like(z))


def test_string_and_tensor_labels_agree_and_length_is_checked():
    z = _z(6)
    y = np.array(["T", "B", "T", "NK", "B", "B"])
    codes = torch.tensor([2, 0, 2, 1, 0, 0])
    assert afrcl_loss(z, y).item() == pytest.approx(afrcl_loss(z, codes).item(), rel=1e-12)
    with pytest.raises(ValueError, match="labels"):
        afrcl_loss(z, codes[:5])


def test_float32_large_batch_is_finite_with_small_temperature():
    g = torch.Generator().manual_seed(3)
    z = torch.randn(256, 128, generator=g, requires_grad=True)
    y = torch.randint(0, 40, (256,), generator=g)
    for loss in (afrcl_loss(z, y, 0.01), conventional_supcon(z, y, 0.01), supcon(z, z * 1.1, y, 0.01),
                 nt_xent(z, z.flip(0), 0.01)):
        _finite_grad(loss, z)
