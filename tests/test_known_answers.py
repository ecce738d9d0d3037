"""Known answers on fixed-weight linear models, where the optimal perturbation is analytic."""

import pytest
import torch
from torch import nn

from multirobust import attacks, losses
from multirobust.threats import parse

D = 100  # with SLIDE's 99th percentile, one coordinate moves per ℓ1 step


class Linear2(nn.Module):
    """Binary linear classifier: logits [0, w·x + b]; class 1 when the score is positive."""

    def __init__(self, w, b):
        super().__init__()
        self.w = nn.Parameter(w.clone())
        self.b = nn.Parameter(torch.tensor(float(b)))

    def forward(self, x):
        s = x.flatten(1) @ self.w + self.b
        return torch.stack([torch.zeros_like(s), s], dim=1)


def _setup(b=30.0):
    g = torch.Generator().manual_seed(0)
    w = torch.randn(D, generator=g, dtype=torch.float64)
    model = Linear2(w, b).double()
    x = torch.full((3, D), 0.5, dtype=torch.float64)
    y = torch.ones(3, dtype=torch.long)
    return model, w, x, y


# A large bias (30; not so large that float64 softmax saturates) keeps the class from flipping,
# so the attack runs to its budget and the optimum of
# the CE loss (decreasing w·x) is the boundary point below.
def _linf_opt(w, eps):
    return -eps * w.sign()


def _l2_opt(w, eps):
    return -eps * w / w.norm()


def _l1_opt(w, eps):
    d = torch.zeros_like(w)
    i = w.abs().argmax()
    d[i] = -eps * w[i].sign()
    return d


@pytest.mark.parametrize(
    "name, threat, optimum",
    [
        ("fgsm", "linf:0.1", _linf_opt),
        ("pgd", "linf:0.1", _linf_opt),
        ("bim", "linf:0.1", _linf_opt),
        ("apgd", "linf:0.1", _linf_opt),
        ("fgm", "l2:0.4", _l2_opt),
        ("pgd", "l2:0.4", _l2_opt),
        ("apgd", "l2:0.4", _l2_opt),
        ("pgd", "l1:0.4", _l1_opt),
        ("slide", "l1:0.4", _l1_opt),
        ("apgd", "l1:0.4", _l1_opt),
    ],
)
def test_linear_optimum(name, threat, optimum):
    model, w, x, y = _setup()
    t = parse(threat)
    expected = optimum(w, t.eps).expand_as(x)
    if name == "apgd":
        # APGD always starts at a random point; it must reach the optimal value.
        res = attacks.create(name, threat=t)(model, x, y)
        assert torch.allclose((res.x_adv - x) @ w, expected @ w, rtol=2e-3)
    else:
        # From the clean input every step points at the optimum: it is reached exactly.
        opts = {"random_start": False} if name in ("pgd", "slide") else {}
        res = attacks.create(name, threat=t, **opts)(model, x, y)
        assert torch.allclose(res.x_adv - x, expected, atol=1e-6)


def test_l1_box_aware_fills_largest_coordinates_greedily():
    """ε larger than the room in one pixel: the LP optimum fills the largest |w_i| to the box."""
    model, w, x, y = _setup()
    eps = 1.2  # 0.5 of room per coordinate: two coordinates full, the third gets 0.2
    res = attacks.create("pgd", threat=f"l1:{eps}", steps=400, step_size=0.02)(model, x, y)
    order = w.abs().argsort(descending=True)
    expected = torch.zeros_like(w)
    expected[order[:2]] = -0.5 * w[order[:2]].sign()
    expected[order[2]] = -0.2 * w[order[2]].sign()
    achieved = (res.x_adv - x) @ w
    optimum = expected @ w
    assert torch.allclose(achieved, optimum.expand(3), rtol=0.01)
    assert ((res.x_adv - x).abs().sum(1) <= eps + 1e-6).all()


def test_affine_reaches_best_endpoint_on_linear_model():
    """For a linear score the affine objective is linear in λ: the best is one ball alone."""
    model, w, x, y = _setup()
    t = parse("affine(linf:0.01,l1:0.4)")  # ε1 fits in one pixel (0.5 of room)
    res = attacks.create("affine", threat=t, steps=60, random_start=False)(model, x, y)
    best_drop = max(0.01 * w.abs().sum().item(), 0.4 * w.abs().max().item())
    drop = -((res.x_adv - x) @ w)
    assert torch.allclose(drop, torch.full_like(drop, best_drop), rtol=0.01)


def test_union_picks_the_worst_member_per_example():
    """Per example, the union keeps the member with the larger analytic score drop."""
    model, w, _, _ = _setup()
    x = torch.full((2, D), 0.5, dtype=torch.float64)
    y = torch.ones(2, dtype=torch.long)
    eps_inf, eps_2 = 0.01, 0.5
    drop_inf, drop_2 = eps_inf * w.abs().sum().item(), eps_2 * w.norm().item()
    res = attacks.create("pgd", threat=f"union(linf:{eps_inf},l2:{eps_2})", random_start=False)(
        model, x, y
    )
    expected = 0 if drop_inf > drop_2 else 1
    assert (res.threat_index == expected).all()
    drop = -((res.x_adv - x) @ w)
    assert torch.allclose(drop, torch.full_like(drop, max(drop_inf, drop_2)), rtol=1e-4)


def test_spatial_grid_is_exhaustive():
    torch.manual_seed(0)
    lin = nn.Linear(64, 3).double()
    with torch.no_grad():
        lin.weight.mul_(0.01)
        lin.bias.copy_(torch.tensor([5.0, 0.0, 0.0]))  # class 0 always wins: the loss decides
    big = nn.Sequential(nn.Flatten(), lin)
    x = torch.rand(4, 1, 8, 8, dtype=torch.float64)
    y = torch.zeros(4, dtype=torch.long)
    atk = attacks.create("spatial-grid", threat="spatial:20,2", rotations=5, translations=3)
    res = atk(big, x, y)
    t = parse("spatial:20,2")
    grid = t.grid(5, 3).double()
    with torch.no_grad():
        all_losses = torch.stack(
            [losses.cross_entropy(big(t.apply(x, g.expand(4, 3))), y) for g in grid], 1
        )
        got = losses.cross_entropy(big(res.x_adv), y)
    assert torch.allclose(got, all_losses.max(1).values)


def test_losses_against_hand_computed_values():
    z = torch.tensor([[2.0, 1.0, -1.0, 0.5]])
    y = torch.tensor([0])
    t = torch.tensor([2])
    lse = torch.logsumexp(z, 1)
    assert losses.cross_entropy(z, y).item() == pytest.approx((lse - 2.0).item())
    assert losses.cross_entropy(z, y, t).item() == pytest.approx(-(lse + 1.0).item())
    assert losses.margin(z, y).item() == pytest.approx(min(1.0 - 2.0, 0.0))
    assert losses.get("margin", confidence=5.0)(z, y).item() == pytest.approx(-1.0)
    assert losses.margin(z, y, t).item() == pytest.approx(-1.0 - 2.0)
    # DLR: sorted logits 2, 1, 0.5, −1 -> −(2 − 1) / (2 − 0.5)
    assert losses.dlr(z, y).item() == pytest.approx(-(1.0) / 1.5)
    # targeted DLR: −(z_y − z_t) / (z_π1 − (z_π3 + z_π4)/2) = −3 / (2 + 0.25)
    assert losses.dlr(z, y, t).item() == pytest.approx(-3.0 / 2.25)
    # DLR is invariant to scaling the logits
    assert losses.dlr(7 * z, y).item() == pytest.approx(losses.dlr(z, y).item())
    with pytest.raises(ValueError, match="Unknown loss"):
        losses.get("hinge")
