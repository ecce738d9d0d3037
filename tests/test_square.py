"""Square attack (Andriushchenko et al. 2020): schedule, patterns, errors and behaviour on MNIST.

The contract (inside the ball, seeds, modes, ε = 0, ...) is covered by test_attack_contracts.py.
"""

import pytest
import torch
from _helpers import Detached
from torch import nn

from multirobust import attacks
from multirobust.attacks.square import p_schedule, square_pattern


def test_p_schedule_halves_at_the_papers_iterations():
    assert p_schedule(0.8, 0, 10000) == 0.8
    assert p_schedule(0.8, 10, 10000) == 0.8
    assert p_schedule(0.8, 11, 10000) == 0.4
    assert p_schedule(0.8, 201, 10000) == 0.8 / 8
    assert p_schedule(0.8, 9999, 10000) == 0.8 / 512
    # rescaled to the budget: iteration 50 of 1000 is iteration 500 of 10,000
    assert p_schedule(0.8, 50, 1000) == 0.8 / 8


@pytest.mark.parametrize("side", [1, 3, 4, 7])
def test_l2_pattern_has_unit_norm_and_opposite_halves(side):
    p = square_pattern(side)
    assert p.shape == (side, side)
    assert torch.isclose(p.norm(), torch.tensor(1.0, dtype=p.dtype))
    if side > 1:
        assert (p[: side // 2] >= 0).all() and (p[side // 2 :] <= 0).all()


def test_invalid_options_and_threats():
    with pytest.raises(ValueError, match="Invalid p_init"):
        attacks.create("square", threat="linf:0.1", p_init=0.0)
    with pytest.raises(ValueError, match="Invalid steps"):
        attacks.create("square", threat="linf:0.1", steps=0)
    with pytest.raises(ValueError, match="does not support threat l1"):
        attacks.create("square", threat="l1:5")


def test_needs_images():
    model = nn.Sequential(nn.Linear(6, 3))
    x = torch.rand(4, 6)
    with torch.no_grad():
        y = model(x).argmax(1)  # correctly classified, so the attack does run
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        attacks.create("square", threat="linf:0.1", steps=3)(model, x, y)


def test_breaks_mnist_linf_and_stops_querying_broken_examples(mnist_model, mnist_test):
    x, y = mnist_test.images[:100], mnist_test.labels[:100]
    steps = 300
    res = attacks.create("square", threat="linf:0.3", steps=steps)(mnist_model, x, y)
    assert res.robust.float().mean() <= 0.03
    assert (res.norm <= 0.3 + 1e-6).all()
    # Broken examples leave the batch: far fewer queries than steps per example.
    assert res.queries / x.shape[0] < steps / 5


def test_l2_lowers_accuracy_without_gradients(mnist_model, mnist_test):
    x, y = mnist_test.images[:100], mnist_test.labels[:100]
    with torch.no_grad():
        clean = (mnist_model(x).argmax(1) == y).float().mean()
    model = Detached(mnist_model)
    with pytest.raises(RuntimeError):  # white-box attacks cannot even start
        attacks.create("apgd", threat="l2:2", steps=2)(model, x, y)
    res = attacks.create("square", threat="l2:2", steps=300)(model, x, y)
    assert res.robust.float().mean() < clean - 0.2, (res.robust.float().mean(), clean)
    assert (res.norm <= 2 * (1 + 1e-4)).all()


def test_more_queries_never_help_the_model(mnist_model, mnist_test):
    """The first k iterations of a longer run are a shorter run only when the schedule matches,
    so compare restarts instead: a second restart only attacks examples the first missed."""
    x, y = mnist_test.images[:60], mnist_test.labels[:60]
    one = attacks.create("square", threat="linf:0.1", steps=100)(mnist_model, x, y)
    two = attacks.create("square", threat="linf:0.1", steps=100, restarts=2)(mnist_model, x, y)
    assert not (two.robust & ~one.robust).any()


def test_the_schedule_counted_as_autoattacks_standard_version_counts_it():
    # AutoAttack's standard version runs 5,000 queries with resc_schedule=False: p is halved
    # after iterations 10, 50, 200, ... as they are, not stretched to a 10,000-query budget.
    assert p_schedule(0.8, 300, 5000, rescale=False) == pytest.approx(0.8 / 8)  # 10, 50, 200
    assert p_schedule(0.8, 300, 5000) == pytest.approx(0.8 / 16)  # as iteration 600 of 10,000
    assert p_schedule(0.8, 4999, 5000, rescale=False) == pytest.approx(0.8 / 128)
    with pytest.raises(ValueError, match="Invalid rescale_schedule"):
        attacks.create("square", threat="l2:1", rescale_schedule="no")
