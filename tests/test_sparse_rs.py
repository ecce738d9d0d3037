"""Sparse random search for ℓ1: the perturbation it builds, a masked-gradient model whose answer
is known, and MNIST without gradients.

The contract (inside the ball and box, seeds, modes, ε = 0, ...) is covered by
test_attack_contracts.py.
"""

import pytest
import torch
from _helpers import Detached
from torch import nn

from multirobust import attacks
from multirobust.attacks.sparse_rs import sparse_delta


def test_delta_goes_to_the_far_end_in_list_order_and_stops_at_eps():
    x = torch.tensor([[0.0, 1.0, 0.2, 0.9, 0.0, 0.0]])
    coords = torch.tensor([[0, 1, 2, 4, 5]])
    delta = sparse_delta(x, coords, eps=2.5)
    # costs in order: 1 (0 -> 1), 1 (1 -> 0), 0.8 (0.2 -> 1): the third gets 0.5 of its 0.8
    expected = torch.tensor([[1.0, -1.0, 0.5, 0.0, 0.0, 0.0]])
    assert torch.allclose(delta, expected)
    assert delta.abs().sum() <= 2.5 + 1e-6
    assert ((x + delta) >= 0).all() and ((x + delta) <= 1).all()


def test_a_repeated_coordinate_counts_once():
    x = torch.zeros(1, 5)
    delta = sparse_delta(x, torch.tensor([[3, 3, 3, 1]]), eps=2.0)
    assert torch.allclose(delta, torch.tensor([[0.0, 1.0, 0.0, 1.0, 0.0]]))


class Threshold(nn.Module):
    """Class 1 scores w · Σ_{i∈P} relu(x_i − 1/2); class 0 a constant ``level``.

    At x = 0 every gradient is exactly zero (the ReLUs are off): white-box attacks see nothing.
    Under ℓ1 ε = 2 from x = 0 the largest Σ relu(x_i − 1/2) is 1 (two coordinates of P moved to
    1, each costing 1 and giving 1/2), so the model is breakable iff level < w · 1.
    """

    def __init__(self, d, hot, level):
        super().__init__()
        self.mask = torch.zeros(d)
        self.mask[hot] = 1.0
        self.level = level

    def forward(self, x):
        score = (torch.relu(x.flatten(1) - 0.5) * self.mask).sum(1)
        return torch.stack([torch.full_like(score, self.level), 4.0 * score], dim=1)


@pytest.mark.parametrize("level, breakable", [(3.0, True), (4.4, False)])
def test_known_answer_on_a_model_with_masked_gradients(level, breakable):
    d = 64
    hot = torch.arange(0, d, 7)  # 10 of the 64 coordinates matter
    model = Threshold(d, hot, level)
    x = torch.zeros(8, 1, 8, 8)
    y = torch.zeros(8, dtype=torch.long)
    apgd = attacks.create("apgd", threat="l1:2", steps=50)(model, x, y)
    assert apgd.robust.all()  # zero gradients: the white-box attack cannot move
    res = attacks.create("sparse-rs", threat="l1:2", steps=300, seed=3)(model, x, y)
    assert bool(res.success.all()) is breakable
    assert (res.norm <= 2 + 1e-5).all()
    if breakable:
        # Two hot coordinates pushed to 1: exactly the analytic optimum's support.
        moved = (res.x_adv.flatten(1) > 0.5).float() @ model.mask
        assert (moved >= 2).all()


def test_mnist_l1_without_gradients_and_restarts_only_help(mnist_model, mnist_test):
    x, y = mnist_test.images[:100], mnist_test.labels[:100]
    with torch.no_grad():
        clean = (mnist_model(x).argmax(1) == y).float().mean()
    model = Detached(mnist_model)
    full = attacks.create("sparse-rs", threat="l1:10", steps=1000)(model, x, y)
    assert full.robust.float().mean() < clean - 0.3, (full.robust.float().mean(), clean)
    assert (full.norm <= 10 * (1 + 1e-5)).all()
    # Broken examples leave the batch.
    assert full.queries / x.shape[0] < 1000
    one = attacks.create("sparse-rs", threat="l1:10", steps=200)(model, x, y)
    two = attacks.create("sparse-rs", threat="l1:10", steps=200, restarts=2)(model, x, y)
    assert not (two.robust & ~one.robust).any()
    assert two.robust.sum() < one.robust.sum()


def test_invalid_options_and_threats():
    with pytest.raises(ValueError, match="Invalid p_init"):
        attacks.create("sparse-rs", threat="l1:5", p_init=1.5)
    with pytest.raises(ValueError, match="Invalid steps"):
        attacks.create("sparse-rs", threat="l1:5", steps=0)
    with pytest.raises(ValueError, match="does not support threat linf"):
        attacks.create("sparse-rs", threat="linf:0.1")


def test_breaks_what_apgd_misses_on_the_zoos_linf_model(mnist_test):
    """The ℓ∞-trained zoo model masks ℓ1 gradients (thresholding first layer): the black-box
    search must break a good share of the examples white-box APGD leaves robust."""
    from pathlib import Path

    from multirobust import models

    model = models.load(Path(__file__).resolve().parents[1] / "zoo" / "pgd-linf.pt")
    x, y = mnist_test.images[:100], mnist_test.labels[:100]
    # The fixed-sparsity APGD-ℓ1 (without Croce & Hein 2021's adaptive sparsity and 3ε → 2ε → ε
    # schedule, which break most of these themselves) is the white-box attack the search fixes.
    plain = {"adaptive_sparsity": False, "use_largereps": False}
    apgd = attacks.create("apgd", threat="l1:10", steps=100, **plain)(model, x, y)
    rows = apgd.robust.nonzero().flatten()
    assert rows.numel() >= 30
    rs = attacks.create("sparse-rs", threat="l1:10", steps=1000)(model, x[rows], y[rows])
    assert rs.success.float().mean() >= 0.3, rs.success.float().mean()
