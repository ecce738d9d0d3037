"""Affine combinations (Tramèr & Boneh 2019): APGD per λ, a model that only a mixture breaks,
the curve against λ, and the carry-over of the members' outcomes. The attack contract is
covered by test_attack_contracts.py."""

import pytest
import torch
from torch import nn

from multirobust import attacks
from multirobust.attacks.affine import LambdaCurve, affine_curve, carry_over
from multirobust.threats import parse

D = 64
THRESHOLD = 0.0128


def _soft(f):
    """softplus(50 f) / 50: ≈ max(f, 0), but positive with a positive slope everywhere, so
    every coordinate's gradient points up and APGD cannot fall into a wrong basin."""
    return torch.nn.functional.softplus(50 * f) / 50


class Product(nn.Module):
    """Class 1 wins iff g(f1)·g(f2) > 0.0128, f1 = mean_{i≥1}(x_i − ½), f2 = x_0 − ½, g = _soft.

    From x = ½ everywhere (room ½ per coordinate), the largest products are:
    * ℓ∞ 0.1 alone (f1 = f2 = 0.1): 0.0100 — robust;
    * ℓ1 0.5 alone (all on x_0: f1 = 0, f2 = 0.5): 0.0069 — robust;
    * λ·δ∞ + (1−λ)·δ1 with δ∞ = 0.1 everywhere and δ1 = 0.5 on x_0 (f1 = 0.1λ,
      f2 = 0.1λ + 0.5(1 − λ)): 0.0120 at λ = ¼, 0.0155 at λ = ½, 0.0151 at λ = ¾.
    These are maxima (no attack can exceed them), 6% or more away from the threshold.
    """

    def forward(self, x):
        flat = x.flatten(1) - 0.5
        f1, f2 = flat[:, 1:].mean(1), flat[:, 0]
        score = 1000.0 * (_soft(f1) * _soft(f2) - THRESHOLD)
        return torch.stack([torch.zeros_like(score), score], 1)


@pytest.fixture
def toy():
    x = torch.full((4, 1, 8, 8), 0.5, dtype=torch.float64)
    y = torch.zeros(4, dtype=torch.long)
    return Product().double(), x, y


def test_only_a_mixture_breaks_the_product_model(toy):
    model, x, y = toy
    for member in ("linf:0.1", "l1:0.5"):
        res = attacks.create("apgd", threat=member, steps=50)(model, x, y)
        assert res.robust.all(), member
    atk = attacks.create("affine", threat="affine(linf:0.1,l1:0.5)", steps=50, lambdas=5)
    res = atk(model, x, y)
    assert res.success.all()
    lam, da, db = res.params.lam, res.params.delta_a, res.params.delta_b
    assert ((lam > 0) & (lam < 1)).all()  # an interior λ, neither ball alone
    assert (da.flatten(1).abs().amax(1) <= 0.1 + 1e-9).all()
    assert (db.flatten(1).abs().sum(1) <= 0.5 + 1e-9).all()
    assert parse("affine(linf:0.1,l1:0.5)").contains(res.x_adv, x, params=res.params).all()


def test_the_curve_against_lambda(toy):
    model, x, y = toy
    atk = attacks.create("affine", threat="affine(linf:0.1,l1:0.5)", steps=50, lambdas=5)
    curve = affine_curve(atk, model, x, y, generator=torch.Generator().manual_seed(0))
    assert curve.lambdas == (0.0, 0.25, 0.5, 0.75, 1.0)
    assert curve.accuracy() == [1.0, 1.0, 0.0, 0.0, 1.0]
    assert not curve.robust_overall().any()
    assert curve.threat == "affine(linf:0.1,l1:0.5)"


def test_carry_over_and_the_curve_with_members():
    affine = torch.tensor([True, True, False, True])
    a = torch.tensor([True, False, True, True])
    b = torch.tensor([True, True, True, False])
    assert carry_over(affine, [a, b]).tolist() == [True, False, False, False]
    with pytest.raises(ValueError, match="Member verdicts must have shape"):
        carry_over(affine, [a[:2]])
    curve = LambdaCurve(
        "affine(linf:0.1,l1:1)", (0.0, 0.5, 1.0), torch.ones(3, 4, dtype=torch.bool)
    )
    joined = curve.with_members(a, b)
    assert joined.robust[0].tolist() == b.tolist()  # λ = 0 is the member B
    assert joined.robust[2].tolist() == a.tolist()  # λ = 1 is the member A
    assert joined.robust[1].all()


def test_endpoints_run_the_members_own_attacks():
    # On a linear score the best affine point is one ball alone (the objective is linear in λ):
    # with endpoints the λ = 1 run is ℓ∞ APGD, which reaches the optimum ε·‖w‖₁ exactly.
    g = torch.Generator().manual_seed(0)
    w = torch.randn(D, generator=g, dtype=torch.float64)
    model = nn.Sequential(nn.Flatten(), nn.Linear(D, 2)).double().eval()
    with torch.no_grad():
        model[1].weight.copy_(torch.stack([torch.zeros(D, dtype=torch.float64), w]))
        model[1].bias.copy_(torch.tensor([0.0, 30.0]))
    x = torch.full((2, 1, 8, 8), 0.5, dtype=torch.float64)
    y = torch.ones(2, dtype=torch.long)
    res = attacks.create("affine", threat="affine(linf:0.01,l1:0.02)", steps=30)(model, x, y)
    drop = -((res.x_adv - x).flatten(1) @ w)
    assert torch.allclose(drop, torch.full_like(drop, 0.01 * w.abs().sum().item()), rtol=1e-6)


def test_black_box_at_the_endpoints_sees_through_blocked_gradients():
    # A zero-gradient layer in front of a linear model: APGD is blind at every λ, the members'
    # black-box search (sparse-rs for the ℓ1 member) is not.
    from _traps import ZeroGradient

    g = torch.Generator().manual_seed(1)
    w = torch.randn(D, generator=g)
    lin = nn.Sequential(nn.Flatten(), nn.Linear(D, 2)).eval()
    with torch.no_grad():
        lin[1].weight.copy_(torch.stack([torch.zeros(D), w]))
        # Breakable under ℓ1 2: moving the two largest |w_i| by ½ each lowers the score by
        # ½(|w|₍₁₎ + |w|₍₂₎) = 2.84 with this seed; the score is 1.5.
        lin[1].bias.copy_(torch.tensor([0.0, 1.5 - 0.5 * w.sum().item()]))
    model = ZeroGradient(lin)
    x = torch.full((3, 1, 8, 8), 0.5)
    y = torch.ones(3, dtype=torch.long)
    top2 = w.abs().topk(2).values.sum().item() / 2
    assert top2 > 2.0
    white = attacks.create("affine", threat="affine(linf:0.001,l1:2)", steps=10, lambdas=3)
    assert white(model, x, y).robust.all()
    both = white.with_options(queries=300)
    assert both(model, x, y).success.all()


def test_invalid_options():
    with pytest.raises(ValueError, match="Invalid grid"):
        attacks.create("affine", threat="affine(linf:0.1,l1:1)", grid=(0.5, 1.5))
    with pytest.raises(ValueError, match="Invalid queries"):
        attacks.create("affine", threat="affine(linf:0.1,l1:1)", queries=-1)
    with pytest.raises(ValueError, match="Invalid endpoints"):
        attacks.create("affine", threat="affine(linf:0.1,l1:1)", endpoints=1)
