"""DeepFool's refinement (bisection back along the ray to each success) and its goal margin
(a near-tie of the logits is not a success): known answers on affine classifiers, robustness of
the returned successes to re-evaluation, the ``refine_steps`` option."""

import pytest
import torch
from test_minimum_norm import Affine, D, _closest_boundary, _multiclass

from multirobust import attacks
from multirobust.attacks.deepfool import deepfool, goal_margin

CASES = [("deepfool-l2", 2), ("deepfool-linf", 1)]


@pytest.mark.parametrize("name, dual", CASES)
def test_refinement_undoes_a_big_overshoot(name, dual):
    """Affine classifier, η = 0.5: one step lands at 1.5× the closest boundary. Along that ray
    the first boundary crossed is the closest one (any crossing is at least that far), so the
    bisection converges to it exactly: within 1.5 · 2⁻¹² of the distance after 12 steps."""
    model, W, x, y, logits = _multiclass()
    exact = _closest_boundary(W, logits, y, dual)
    raw = attacks.create_minimum_norm(name, overshoot=0.5, refine_steps=0)(model, x, y)
    assert raw.found.all()
    assert torch.allclose(raw.distance, 1.5 * exact, rtol=1e-6)
    res = attacks.create_minimum_norm(name, overshoot=0.5)(model, x, y)
    assert res.found.all()
    assert (res.distance >= exact).all()
    assert (res.distance <= exact * (1 + 1.5 * 2**-12) + 1e-9).all()
    # More steps, closer: 20 steps leave less than 1.5 · 2⁻²⁰.
    fine = attacks.create_minimum_norm(name, overshoot=0.5, refine_steps=20)(model, x, y)
    assert fine.found.all()
    assert torch.allclose(fine.distance, exact, rtol=1.5 * 2**-20)


@pytest.mark.parametrize("name, dual", CASES)
def test_refine_steps_zero_is_the_unrefined_attack(name, dual):
    """refine_steps=0 returns the plain function's first iterate meeting the goal, bit for bit,
    at the plain function's cost (clean pass + its passes + the contract's evaluation)."""
    model, W, x, y, logits = _multiclass()
    norm = name.split("-")[1]
    out = deepfool(model, x, y, norm=norm, overshoot=0.3)
    res = attacks.create_minimum_norm(name, overshoot=0.3, refine_steps=0)(model, x, y)
    assert torch.equal(res.x_adv, out.x_adv)
    assert res.queries == (1 + out.forward_passes + 1) * len(y)
    refined = attacks.create_minimum_norm(name, overshoot=0.3, refine_steps=5)(model, x, y)
    assert refined.queries == res.queries + 5 * len(y)
    assert (refined.distance < res.distance).all()


@pytest.mark.parametrize("value", [-1, 2.5, True, "12"])
def test_bad_refine_steps(value):
    with pytest.raises(ValueError, match=r"Invalid refine_steps"):
        attacks.create_minimum_norm("deepfool-l2", refine_steps=value)


def _gap(logits, y):
    """(N,) best other logit − the true logit (> 0: misclassified)."""
    other = logits.scatter(1, y.unsqueeze(1), float("-inf")).amax(1)
    return other - logits.gather(1, y.unsqueeze(1)).squeeze(1)


def _check_reevaluated(model, x_adv, y, pad):
    """Each success is misclassified by more than the goal margin when re-evaluated alone, and
    in a batch of another size (``pad`` unrelated images appended)."""
    with torch.no_grad():
        alone = torch.cat([model(x_adv[i : i + 1]) for i in range(len(y))])
        mixed = model(torch.cat([x_adv, pad]))[: len(y)]
    for logits in (alone, mixed):
        assert (logits.argmax(1) != y).all()
        assert (_gap(logits, y) > goal_margin(logits)).all()


@pytest.mark.parametrize("refine_steps", [0, 12])
@pytest.mark.parametrize("name", ["deepfool-l2", "deepfool-linf"])
def test_successes_survive_reevaluation_float32_ties(name, refine_steps):
    """float32 affine classifier, η = 0: a step onto the linearised boundary lands on an exact
    tie up to rounding (a gap of ~10⁻⁷), which used to count as a success; the margin makes the
    step aim past it, and every returned success stays misclassified by the margin."""
    g = torch.Generator().manual_seed(5)
    W = torch.randn(5, D, generator=g)
    W = W - W.mean(1, keepdim=True)
    model = Affine(W, torch.zeros(5)).eval()
    x = 0.3 + 0.4 * torch.rand(64, D, generator=g)
    with torch.no_grad():
        y = model(x).argmax(1)
    attack = attacks.create_minimum_norm(name, overshoot=0.0, refine_steps=refine_steps)
    res = attack(model, x, y)
    assert res.found.all()
    _check_reevaluated(model, res.x_adv, y, x[:7])


@pytest.mark.parametrize("name", ["deepfool-l2", "deepfool-linf"])
def test_mnist_successes_survive_reevaluation(mnist_model, mnist_test, name):
    x, y = mnist_test.images[:100], mnist_test.labels[:100]
    res = attacks.create_minimum_norm(name)(mnist_model, x, y)
    with torch.no_grad():
        correct = mnist_model(x).argmax(1) == y
    ok = res.found & correct
    assert ok.float().sum() >= 0.9 * correct.float().sum()
    _check_reevaluated(mnist_model, res.x_adv[ok], y[ok], mnist_test.images[100:113])


def test_refinement_shortens_mnist_distances(mnist_model, mnist_test):
    """On a real network the refinement never lengthens a perturbation and shortens most."""
    x, y = mnist_test.images[:40], mnist_test.labels[:40]
    raw = attacks.create_minimum_norm("deepfool-l2", refine_steps=0)(mnist_model, x, y)
    res = attacks.create_minimum_norm("deepfool-l2")(mnist_model, x, y)
    both = raw.found & res.found & (raw.distance > 0)
    assert torch.equal(both, raw.found & (raw.distance > 0))  # the refinement keeps successes
    assert (res.distance[both] <= raw.distance[both] + 1e-6).all()
    assert float(res.distance[both].median()) < 0.97 * float(raw.distance[both].median())
