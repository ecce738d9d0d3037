"""FAB (Croce & Hein 2020): the exact hyperplane ∩ box projection against linear programs, the
analytic minimum distance of affine classifiers, the fixed-ε semantics of ``fab``/``fab-t``,
the minimum-norm ``fab-linf``/``fab-l2``/``fab-l1``, and behaviour on MNIST. The attack
contract is covered by test_attack_contracts.py."""

import math

import numpy as np
import pytest
import torch
from scipy.optimize import linprog, minimize
from torch import nn

from multirobust import attacks
from multirobust.attacks.fab import fab_minimum_norm, project_onto_hyperplane

DUAL = {math.inf: 1.0, 2.0: 2.0, 1.0: math.inf}
NORMS = {"linf": math.inf, "l2": 2.0, "l1": 1.0}


def _reference_projection(t, w, c, p):
    """min ‖d‖_p s.t. w·d = c, 0 ≤ t + d ≤ 1 by scipy (LP for ℓ1 and ℓ∞, SLSQP for ℓ2)."""
    lo, hi = -t, 1 - t
    d = len(t)
    if p == 1.0:  # d = d⁺ − d⁻, both ≥ 0
        res = linprog(
            np.ones(2 * d),
            A_eq=np.concatenate([w, -w])[None],
            b_eq=[c],
            bounds=[(0, h) for h in hi] + [(0, -m) for m in lo],
        )
        return res.fun if res.status == 0 else None
    if p == math.inf:  # variables (d, s): min s, −s ≤ d ≤ s
        a_ub = np.block([[np.eye(d), -np.ones((d, 1))], [-np.eye(d), -np.ones((d, 1))]])
        res = linprog(
            np.r_[np.zeros(d), 1.0],
            A_ub=a_ub,
            b_ub=np.zeros(2 * d),
            A_eq=np.r_[w, 0.0][None],
            b_eq=[c],
            bounds=[*zip(lo, hi, strict=True), (0, None)],
        )
        return res.fun if res.status == 0 else None
    if _reference_projection(t, w, c, 1.0) is None:  # feasibility does not depend on p
        return None
    res = minimize(
        lambda v: v @ v,
        np.zeros(d),
        constraints=[{"type": "eq", "fun": lambda v: w @ v - c}],
        bounds=list(zip(lo, hi, strict=True)),
        method="SLSQP",
        options={"ftol": 1e-15, "maxiter": 500},
    )
    # SLSQP can stop short of a feasible plane (its outcome varies with the processor's
    # rounding): NaN marks "reachable, value unknown" so only the LP decides reachability.
    return math.sqrt(res.fun) if res.success and abs(w @ res.x - c) < 1e-9 else math.nan


@pytest.mark.parametrize("p", [math.inf, 2.0, 1.0])
def test_hyperplane_projection_matches_a_solver(p):
    g = torch.Generator().manual_seed(0)
    t = torch.rand(12, 7, generator=g, dtype=torch.float64)
    t[:, 0], t[:, 1] = 0.0, 1.0  # on the box faces
    w = torch.randn(12, 7, generator=g, dtype=torch.float64)
    w[:, 2] = 0.0  # a coordinate the plane ignores
    c = 0.8 * torch.randn(12, generator=g, dtype=torch.float64)
    d, reachable = project_onto_hyperplane(t, w, c, p)
    compared = 0
    for i in range(12):
        ref = _reference_projection(t[i].numpy(), w[i].numpy(), c[i].item(), p)
        assert bool(reachable[i]) == (ref is not None)
        inside = t[i] + d[i]
        assert inside.min() >= 0 and inside.max() <= 1
        if ref is not None:
            assert (w[i] * d[i]).sum().item() == pytest.approx(c[i].item(), abs=1e-9)
            if not math.isnan(ref):
                compared += 1
                # Solvers stop at 1e-8 or so; ours is exact to float64 rounding.
                norm = torch.linalg.vector_norm(d[i], ord=p).item()
                assert norm == pytest.approx(ref, abs=1e-6)
    assert reachable.any() and not reachable.all()  # both cases were exercised
    assert compared >= 3  # the values were checked, not only reachability


def test_unreachable_plane_gives_the_closest_corner():
    t = torch.tensor([[0.2, 0.5, 0.9]], dtype=torch.float64)
    w = torch.tensor([[1.0, -2.0, 0.0]], dtype=torch.float64)
    d, ok = project_onto_hyperplane(t, w, torch.tensor([10.0], dtype=torch.float64), 2.0)
    assert not ok.item()
    assert torch.allclose(d, torch.tensor([[0.8, -0.5, 0.0]], dtype=torch.float64))


class Linear(nn.Module):
    def __init__(self, weight, bias):
        super().__init__()
        self.lin = nn.Linear(weight.shape[1], weight.shape[0]).double()
        with torch.no_grad():
            self.lin.weight.copy_(weight)
            self.lin.bias.copy_(bias)

    def forward(self, x):
        return self.lin(x.flatten(1))


def _affine_problem(classes, seed=0, d=20):
    """Inputs in [0.45, 0.55]^d around the point 1/2 where every class scores the same, so
    that the boundaries are near and the minimum is the unconstrained |Δ_j| / ‖w_j − w_y‖_q for
    every norm here (checked in the test)."""
    g = torch.Generator().manual_seed(seed)
    weight = torch.randn(classes, d, generator=g, dtype=torch.float64)
    bias = -weight.sum(1) / 2
    model = Linear(weight, bias).eval()
    x = 0.45 + 0.1 * torch.rand(8, d, generator=g, dtype=torch.float64)
    with torch.no_grad():
        z = model(x)
    y = z.argmax(1)
    return model, weight, z, x, y


def _analytic(weight, z, y, p):
    """min over j ≠ y of (z_y − z_j) / ‖w_y − w_j‖_q: the distance to misclassification."""
    gap = z.gather(1, y.unsqueeze(1)) - z
    dw = weight.unsqueeze(0) - weight[y].unsqueeze(1)
    dist = gap / torch.linalg.vector_norm(dw, ord=DUAL[p], dim=2)
    dist[torch.arange(len(y)), y] = math.inf
    return dist.min(1)


@pytest.mark.parametrize("classes", [2, 4])
@pytest.mark.parametrize("p", [math.inf, 2.0, 1.0])
def test_finds_the_analytic_minimum_of_an_affine_classifier(classes, p):
    model, weight, z, x, y = _affine_problem(classes)
    exact, closest = _analytic(weight, z, y, p)
    # The box is inactive: the minimal perturbation moves no coordinate by more than 0.45,
    # the least room any coordinate has (ℓ∞ and ℓ1 move one or all coordinates by `exact`).
    dw = weight[closest] - weight[y]
    if p == 2.0:
        assert ((exact / dw.norm(dim=1)).unsqueeze(1) * dw.abs()).max() < 0.45
    else:
        assert (exact < 0.45).all()
    for target_classes in (0, classes - 1):  # untargeted FAB, FAB-T over every other class
        x_adv, norm = fab_minimum_norm(model, x, y, p, steps=40, target_classes=target_classes)
        assert (norm >= exact * (1 - 1e-9)).all()  # nothing beats the exact minimum ...
        # ... and FAB gets within 1%: its overshoot η = 1.05 followed by backward steps
        # β = 0.9 settles about 0.5% past the boundary on a linear model.
        assert (norm <= exact * 1.01).all(), (norm / exact).max()
        with torch.no_grad():
            assert (model(x_adv).argmax(1) != y).all()
        assert torch.allclose(torch.linalg.vector_norm((x_adv - x).flatten(1), ord=p, dim=1), norm)
        assert x_adv.min() >= 0 and x_adv.max() <= 1


@pytest.mark.parametrize("p", [math.inf, 2.0, 1.0])
def test_respects_the_box_where_it_binds(p):
    # Binary classifier whose unconstrained minimal perturbation leaves the box: most inputs sit
    # at 0 where w pushes them negative, so the box-constrained minimum is larger. Its exact
    # value is the hyperplane ∩ box projection of x (checked against solvers above).
    g = torch.Generator().manual_seed(3)
    d = 12
    w = torch.randn(d, generator=g, dtype=torch.float64)
    x = torch.where(w < 0, torch.zeros(d, dtype=torch.float64), torch.full((d,), 0.9))
    x = x.repeat(3, 1)
    x[1, :3] = 0.5
    x[2, -3:] = 0.3
    bias = -(x @ w).mean() - 1.0
    model = Linear(torch.stack([torch.zeros(d, dtype=torch.float64), w]), torch.tensor([0.0, 0.0]))
    with torch.no_grad():
        model.lin.bias[1] = bias
        z = model(x)
    y = z.argmax(1)
    gap = z[:, 1 - y[0]] - z.gather(1, y.unsqueeze(1)).squeeze(1)
    normal = torch.stack([w if int(c) == 0 else -w for c in y])
    exact_d, ok = project_onto_hyperplane(x, normal, -gap, p)
    assert ok.all()
    exact = torch.linalg.vector_norm(exact_d, ord=p, dim=1)
    unconstrained = gap.abs() / torch.linalg.vector_norm(w, ord=DUAL[p])
    assert (exact > unconstrained * 1.05).all()  # the box does bind here
    _, norm = fab_minimum_norm(model, x, y, p, steps=100)
    assert (norm >= exact * (1 - 1e-9)).all() and (norm <= exact * 1.01).all()


@pytest.mark.parametrize("name, threat", [("fab", "linf"), ("fab", "l1"), ("fab-t", "l2")])
def test_fixed_eps_succeeds_exactly_when_the_minimum_fits(name, threat):
    model, weight, z, x, y = _affine_problem(4, seed=5)
    exact, _ = _analytic(weight, z, y, NORMS[threat])
    # Budgets 10% either side of each example's minimum: FAB's 1% accuracy decides cleanly.
    above = attacks.create(name, threat=f"{threat}:{float(exact.max()) * 1.1}", steps=30)
    assert above(model, x, y).success.all()
    for i in range(3):
        below = attacks.create(name, threat=f"{threat}:{float(exact[i]) * 0.9}", steps=30)
        assert not below(model, x[i : i + 1], y[i : i + 1]).success.any()


@pytest.mark.parametrize("threat", ["linf", "l2", "l1"])
def test_minimum_norm_contract_returns_the_analytic_distance(threat):
    model, weight, z, x, y = _affine_problem(4, seed=1)
    exact, _ = _analytic(weight, z, y, NORMS[threat])
    res = attacks.create_minimum_norm(f"fab-{threat}", steps=40)(model, x, y)
    assert res.found.all() and res.norm == threat
    # The same 1% window as the function itself (see the analytic test above).
    assert (res.distance >= exact * (1 - 1e-9)).all() and (res.distance <= exact * 1.01).all()
    # Asked for a fixed budget, it is the fixed-ε attack of that norm.
    within = attacks.create(
        f"fab-{threat}", threat=f"{threat}:{float(exact.max()) * 1.1}", steps=40
    )
    assert within(model, x, y).success.all()


def test_explicit_targets_reach_the_target():
    model, weight, z, x, y = _affine_problem(4, seed=2)
    targets = (y + 2) % 4
    res = attacks.create("fab", threat="l2:10", steps=60)(model, x, y, targets=targets)
    with torch.no_grad():
        assert torch.equal(model(res.x_adv).argmax(1), targets)
    # The target's own half-space distance bounds it from below.
    gap = z.gather(1, y.unsqueeze(1)).squeeze(1) - z.gather(1, targets.unsqueeze(1)).squeeze(1)
    own = gap / (weight[y] - weight[targets]).norm(dim=1)
    assert (res.norm >= own * (1 - 1e-9)).all()


def test_fab_t_linearises_each_target_against_the_label_as_autoattack(monkeypatch):
    # FAB-T's targets only steer a search for any misclassification: every step linearises
    # f_t − f_y, even where a third class leads (AutoAttack's FAB-T). With explicit targets
    # (the goal is the target) the reference is the strongest class other than the target.
    from multirobust.attacks import fab

    weight = torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 2.0]], dtype=torch.float64)
    model = Linear(weight, torch.zeros(3, dtype=torch.float64)).eval()
    x = torch.tensor([[0.3, 0.2]], dtype=torch.float64)  # logits 0.3, 0.2, 1.0: class 2 leads
    y, t = torch.tensor([0]), torch.tensor([1])
    delta, grads, _ = fab._boundary_linearisation(model, x, y, t, against_label=True)
    assert delta.item() == pytest.approx(0.2 - 0.3)
    assert torch.allclose(grads[0, 0], torch.tensor([-1.0, 1.0], dtype=torch.float64))
    delta, grads, _ = fab._boundary_linearisation(model, x, y, t, against_label=False)
    assert delta.item() == pytest.approx(0.2 - 1.0)
    assert torch.allclose(grads[0, 0], torch.tensor([-2.0, -1.0], dtype=torch.float64))

    seen = []
    real = fab._boundary_linearisation

    def spy(*args, **kwargs):
        seen.append(args[4] if len(args) > 4 else kwargs.get("against_label", False))
        return real(*args, **kwargs)

    monkeypatch.setattr(fab, "_boundary_linearisation", spy)
    model, weight, z, x, y = _affine_problem(4, seed=2)
    attacks.create("fab-t", threat="l2:0.01", steps=3, target_classes=2)(model, x, y)
    assert seen and all(seen)
    seen.clear()
    attacks.create("fab", threat="l2:0.01", steps=3)(model, x, y, targets=(y + 1) % 4)
    assert seen and not any(seen)


def test_restarts_only_improve_the_minimum():
    model, weight, z, x, y = _affine_problem(4, seed=7)
    one = fab_minimum_norm(model, x, y, 2.0, steps=20)[1]
    three = fab_minimum_norm(
        model, x, y, 2.0, steps=20, restarts=3, generator=torch.Generator().manual_seed(0)
    )[1]
    assert (three <= one).all()


def test_invalid_options():
    with pytest.raises(ValueError, match="Invalid alpha_max"):
        attacks.create("fab", threat="l2:1", alpha_max=1.5)
    with pytest.raises(ValueError, match="Invalid target_classes"):
        attacks.create("fab-t", threat="l2:1", target_classes=0)
    with pytest.raises(ValueError, match="Invalid p"):
        project_onto_hyperplane(torch.zeros(1, 2), torch.ones(1, 2), torch.ones(1), 3.0)


@pytest.mark.slow
def test_mnist_fab_t_is_as_small_as_deepfool(mnist_model, mnist_test):
    """On a real CNN, FAB-T's ℓ2 minimum is no larger than DeepFool's (FAB's paper: smaller)."""
    x, y = mnist_test.images[:16], mnist_test.labels[:16]
    with torch.no_grad():
        keep = mnist_model(x).argmax(1) == y
    x, y = x[keep], y[keep]
    _, fab = fab_minimum_norm(mnist_model, x, y, 2.0, steps=50, target_classes=3)
    deepfool = attacks.create_minimum_norm("deepfool-l2")(mnist_model, x, y).distance
    assert torch.isfinite(fab).all()
    assert fab.median() <= deepfool.median() * 1.02, (fab.median(), deepfool.median())
