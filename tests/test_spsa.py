"""SPSA (Uesato et al. 2018): gradient estimates from forward passes only. The registry's
contract suite (test_attack_contracts.py) covers the ball, the box, seeds and the model's state;
these are the known answers."""

import pytest
import torch
from _traps import ZeroGradient, binary_linear
from torch import nn

from multirobust import attacks


def _binary(n=20):
    """:func:`_traps.binary_linear` with every example at score ±0.4, 0.02 from 0.5."""
    return binary_linear(n=n, low=0.4, high=0.4, noise=0.02)


def test_linear_model_reaches_the_analytic_optimum():
    """Examples a budget of ε∞ = 0.1 cannot break (score ±8 against a best move of ≈ 5): the
    finite difference of a linear score is exact, Adam follows its sign, and after 100 steps
    the score has moved by ≥ 95% of the analytic optimum Σ|w_i|·min(ε, room in the box)."""
    model, x, y, w = _binary(n=10)
    score = torch.where(torch.arange(10) % 2 == 0, 8.0, -8.0)
    x = (x + ((score - x.flatten(1) @ w) / (w @ w)).view(-1, 1, 1, 1) * w.view(1, 1, 8, 8)).clamp(
        0, 1
    )
    y = (x.flatten(1) @ w > 0).long()
    res = attacks.create("spsa", threat="linf:0.1", steps=100, samples=64)(model, x, y)
    assert res.robust.all()
    assert (res.norm <= 0.1 + 1e-6).all()
    down = torch.where(y == 1, -1.0, 1.0).view(-1, 1)  # the direction that lowers the margin
    flat = x.flatten(1)
    way = down * torch.sign(w)  # per coordinate: +1 moves up, -1 down
    room = torch.where(way > 0, 1 - flat, flat).clamp(max=0.1)
    optimum = (w.abs() * room).sum(1)
    moved = ((res.x_adv - x).flatten(1) @ w) * down.squeeze(1)
    assert (moved >= 0.95 * optimum).all(), (moved / optimum).tolist()


def test_a_zero_gradient_layer_changes_nothing():
    """Only forward passes: the same seed gives the same points behind a gradient-blocking
    layer as on the model itself, where APGD cannot move."""
    model, x, y, _ = _binary()
    trap = ZeroGradient(model)
    spsa = attacks.create("spsa", threat="linf:0.1", steps=30, samples=64, seed=3)
    bare, hidden = spsa(model, x, y), spsa(trap, x, y)
    assert torch.equal(bare.x_adv, hidden.x_adv)
    assert hidden.success.all()
    apgd = attacks.create("apgd", threat="linf:0.1", steps=20)(trap, x, y)
    assert apgd.robust.float().mean() >= 0.6  # its random start breaks a few (4 of 20 here)


def test_l2_ball_and_query_count():
    model, x, y, _ = _binary()
    res = attacks.create("spsa", threat="l2:1.5", steps=40, samples=32, lr=0.02)(model, x, y)
    assert (res.norm <= 1.5 * (1 + 1e-5)).all()
    assert res.success.float().mean() >= 0.9
    # Each example costs at most steps·(samples + 1) queries, plus the contract's clean pass.
    assert res.queries <= x.shape[0] * (40 * 33 + 2)


def test_query_points_stay_in_the_box():
    model, x, y, _ = _binary()
    seen = []

    class Spy(nn.Module):
        def forward(self, z):
            seen.append((float(z.min()), float(z.max())))
            return model(z)

    x = x.clone()
    x[:, :, :2] = 0.0
    x[:, :, -2:] = 1.0
    attacks.create("spsa", threat="linf:0.1", steps=3, samples=8)(Spy(), x, y)
    assert min(lo for lo, _ in seen) >= 0.0 and max(hi for _, hi in seen) <= 1.0


@pytest.mark.parametrize(
    "option, value, message",
    [
        ("samples", 3, "must be even"),
        ("samples", 0, "samples"),
        ("delta", 0.0, "delta"),
        ("lr", -1.0, "lr"),
        ("random_start", 1, "random_start"),
    ],
)
def test_invalid_options(option, value, message):
    with pytest.raises(ValueError, match=message):
        attacks.create("spsa", threat="linf:0.1", **{option: value})


def test_l1_is_refused():
    with pytest.raises(ValueError, match="does not support"):
        attacks.create("spsa", threat="l1:10")
