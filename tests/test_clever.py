"""CLEVER: exact on linear models, the reverse Weibull fit recovers known end points, a model
whose local Lipschitz constant is known analytically, the cap at R, targets and errors."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from multirobust.robustness import clever, reverse_weibull_fit

DUAL = {"l2": 2, "linf": 1, "l1": math.inf}


@pytest.fixture(scope="module")
def linear():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(20, 4)).double()
    x = (0.4 + 0.2 * torch.rand(6, 1, 4, 5)).double()
    return model, x


@pytest.mark.parametrize("norm", ["l2", "linf", "l1"])
def test_linear_model_lipschitz_and_distance_are_exact(linear, norm):
    model, x = linear
    res = clever(model, x, norm=norm, radius=5.0, batches=10, samples=8)
    w, b = model[1].weight.detach(), model[1].bias.detach()
    logits = x.flatten(1) @ w.T + b
    q = DUAL[norm]
    for i in range(x.shape[0]):
        c = int(logits[i].argmax())
        assert int(res.predictions[i]) == c
        dist = []
        for j in range(4):
            if j == c:
                assert math.isnan(float(res.lipschitz[i, j]))
                continue
            true_l = float((w[c] - w[j]).norm(p=q))
            # The dual norm of the weight difference is the Lipschitz constant of g_c − g_j.
            assert float(res.lipschitz[i, j]) == pytest.approx(true_l, rel=1e-9)
            dist.append(float(logits[i, c] - logits[i, j]) / true_l)
        # The score is the exact ℓp distance to the nearest decision boundary (no box here:
        # the boundary lies well inside it).
        assert float(res.scores[i]) == pytest.approx(min(dist), rel=1e-9)
        assert min(dist) < 5.0
    assert res.mean == pytest.approx(float(res.scores.mean()))
    assert res.median == float(res.scores.median())
    assert res.to_dict()["scores"] == [float(v) for v in res.scores]


def test_score_is_capped_at_the_radius(linear):
    model, x = linear
    res = clever(model, x, norm="l2", radius=1e-3, batches=5, samples=4)
    assert torch.all(res.scores == 1e-3)


class Quadratic(nn.Module):
    """Logits (0, 5 − ‖x − x0‖²): ∇ of the margin is −2(x − x0), largest norm at the sphere."""

    def __init__(self, x0):
        super().__init__()
        self.x0 = x0

    def forward(self, x):
        v = ((x - self.x0) ** 2).flatten(1).sum(1)
        return torch.stack([torch.zeros_like(v), 5 - v], 1)


@pytest.mark.parametrize(
    "norm, true_l, rel",
    # max ‖2(x − x0)‖₂ over the ℓ2 ball = 2R; max ‖2(x − x0)‖₁ over the ℓ∞ ball = 2R·d.
    [("l2", 2 * 0.2, 0.02), ("linf", 2 * 0.2 * 3, 0.05)],
)
def test_extreme_value_estimate_of_a_varying_gradient(norm, true_l, rel):
    x0 = torch.full((1, 3), 0.5, dtype=torch.float64)
    res = clever(Quadratic(x0), x0, norm=norm, radius=0.2, batches=100, samples=32, seed=3)
    est = float(res.lipschitz[0, 0])
    assert est == pytest.approx(true_l, rel=rel)
    # Every sampled gradient is below the true maximum; the estimate may extrapolate past the
    # largest one seen but stays close to the truth.
    assert res.fits[0][0].method in ("mle", "sample-max")
    # Margin 5 at x0: the score is capped at R.
    assert float(res.scores[0]) == 0.2


# The larger the shape, the farther the end point lies from the bulk of the samples, and the
# harder it is to place.
@pytest.mark.parametrize("alpha, tol", [(2.0, 0.03), (3.0, 0.03), (5.0, 0.06)])
def test_reverse_weibull_fit_recovers_the_end_point(alpha, tol):
    rng = np.random.default_rng(1)
    errs = []
    for _ in range(5):
        y = 2.0 - 0.5 * rng.weibull(alpha, size=500)
        fit = reverse_weibull_fit(y)
        assert fit.method == "mle" and fit.location >= y.max()
        errs.append(abs(fit.location - 2.0) / 2.0)
    assert float(np.median(errs)) < tol
    fit = reverse_weibull_fit(2.0 - 0.5 * rng.weibull(alpha, size=2000))
    assert fit.shape == pytest.approx(alpha, rel=0.15)
    assert fit.scale == pytest.approx(0.5, rel=0.15)


def test_reverse_weibull_fit_irregular_and_degenerate_cases():
    rng = np.random.default_rng(2)
    y = 3.0 - rng.weibull(0.5, size=200)
    fit = reverse_weibull_fit(y)
    # Shape ≤ 1: the sample maximum is the MLE of the end point (Smith 1985).
    assert fit.method == "sample-max" and fit.location == y.max()
    # Gumbel maxima (no end point): the likelihood prefers ever larger shapes; the sample
    # maximum is returned instead of an end point far beyond the data.
    fits = [(g, reverse_weibull_fit(g)) for g in rng.gumbel(3.0, 0.05, size=(10, 100))]
    unbounded = [(g, f) for g, f in fits if f.method == "unbounded"]
    assert len(unbounded) >= 3
    assert all(f.location == g.max() and math.isnan(f.shape) for g, f in unbounded)
    assert reverse_weibull_fit([1.5, 1.5, 1.5]).method == "constant"
    with pytest.raises(ValueError, match="at least 3 samples"):
        reverse_weibull_fit([1.0, 2.0])
    with pytest.raises(ValueError, match="NaN or infinite"):
        reverse_weibull_fit([1.0, float("nan"), 2.0])


def test_targets_restrict_the_classes(linear):
    model, x = linear
    with torch.no_grad():
        pred = model(x).argmax(1)
    targets = (pred + 1) % 4
    res = clever(model, x, norm="linf", radius=5.0, batches=5, samples=4, targets=targets)
    for i in range(x.shape[0]):
        known = ~torch.isnan(res.lipschitz[i])
        assert known.nonzero().flatten().tolist() == [int(targets[i])]
        t = int(targets[i])
        assert float(res.scores[i]) == pytest.approx(
            float(res.margins[i, t] / res.lipschitz[i, t]), rel=1e-9
        )
    with pytest.raises(ValueError, match="top class"):
        clever(model, x, targets=pred, batches=5, samples=4)


def test_bad_inputs_and_mode_restored(linear):
    model, x = linear
    with pytest.raises(ValueError, match="Invalid norm: 'l3'"):
        clever(model, x, norm="l3")
    with pytest.raises(ValueError, match="Give radius for norm 'l1'"):
        clever(model, x, norm="l1")
    with pytest.raises(ValueError, match="Invalid batches"):
        clever(model, x, batches=2)
    with pytest.raises(ValueError, match="Invalid radius"):
        clever(model, x, radius=-1.0)
    with pytest.raises(ValueError, match="NaN"):
        clever(model, x * float("nan"))
    with pytest.raises(ValueError, match="outside"):
        clever(model, x + 2)
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        clever(model, x.tolist())
    model.train()
    before = x.clone()
    a = clever(model, x, batches=5, samples=4, seed=7)
    b = clever(model, x, batches=5, samples=4, seed=7)
    assert model.training and all(p.requires_grad for p in model.parameters())
    assert torch.equal(x, before) and torch.equal(a.scores, b.scores)
    model.eval()
