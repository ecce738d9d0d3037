"""Threat models: exact projections against independent references, sampling, parsing."""

import pytest
import torch

from multirobust.threats import (
    Affine,
    L1Ball,
    L2Ball,
    LinfBall,
    Spatial,
    SpatialParams,
    Union,
    parse,
)


def _cases(n=40, d=12, seed=0):
    """Random (v, x) pairs with many coordinates on the box faces and perturbations of all sizes."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, d, generator=g, dtype=torch.float64)
    edge = torch.rand(n, d, generator=g, dtype=torch.float64)
    x = torch.where(edge < 0.25, torch.zeros_like(x), x)
    x = torch.where(edge > 0.75, torch.ones_like(x), x)
    scale = torch.logspace(-2, 1, n, dtype=torch.float64).unsqueeze(1)
    v = x + scale * torch.randn(n, d, generator=g, dtype=torch.float64)
    return v, x


def _dykstra(v, x, ball_proj, iters=20000):
    """Dykstra's alternating projections onto ball ∩ box: converges to the exact projection."""
    z, p, q = v.clone(), torch.zeros_like(v), torch.zeros_like(v)
    for _ in range(iters):
        y = (z + p).clamp(0, 1)
        p = z + p - y
        z_new = ball_proj(y + q, x)
        q = y + q - z_new
        z = z_new
    return z


def _l2_ball_only(v, x, eps):
    d = v - x
    n = d.norm(dim=1, keepdim=True)
    return x + d * torch.clamp(eps / n.clamp_min(1e-30), max=1.0)


def _l1_dual_bisection(v, x, eps):
    """Reference ℓ1∩box projection: bisection on the multiplier τ of the ℓ1 constraint."""
    d = v - x
    cap = torch.where(d >= 0, 1 - x, x)
    a = d.abs()

    def f(tau):
        return torch.minimum((a - tau).clamp_min(0), cap).sum(1, keepdim=True)

    lo = torch.zeros(d.shape[0], 1, dtype=torch.float64)
    hi = a.amax(1, keepdim=True) + 1
    for _ in range(200):
        mid = (lo + hi) / 2
        big = f(mid) > eps
        lo, hi = torch.where(big, mid, lo), torch.where(big, hi, mid)
    tau = torch.where(f(torch.zeros_like(lo)) <= eps, torch.zeros_like(lo), hi)
    return x + d.sign() * torch.minimum((a - tau).clamp_min(0), cap)


@pytest.mark.parametrize("eps", [0.05, 0.5, 2.0])
def test_l1_projection_matches_dual_bisection(eps):
    v, x = _cases()
    got = L1Ball(eps).project(v, x)
    ref = _l1_dual_bisection(v, x, eps)
    assert torch.allclose(got, ref, atol=1e-9)
    assert (got - x).abs().sum(1).max() <= eps + 1e-9


@pytest.mark.parametrize("eps", [0.05, 0.5, 2.0])
def test_l2_projection_matches_dykstra(eps):
    v, x = _cases(n=20, d=8)
    got = L2Ball(eps).project(v, x)
    ref = _dykstra(v, x, lambda y, x0: _l2_ball_only(y, x0, eps), iters=3000)
    assert torch.allclose(got, ref, atol=1e-6)


def test_l1_projection_matches_dykstra_too():
    v, x = _cases(n=10, d=6, seed=3)
    eps = 0.7
    got = L1Ball(eps).project(v, x)

    # The ℓ1 ball alone (no box), inside Dykstra with the box. Its soft threshold τ is found
    # exactly from the sorted magnitudes (the largest k with u_k > (Σ_{i≤k} u_i − eps)/k), row
    # by row in plain Python: independent of the library's box-aware breakpoint search.
    def ball(y, x0):
        d = y - x0
        taus = []
        for row in d.abs().tolist():
            if sum(row) <= eps:
                taus.append(0.0)
                continue
            u = sorted(row, reverse=True)
            total, tau = 0.0, 0.0
            for k, value in enumerate(u, start=1):
                total += value
                if value > (total - eps) / k:
                    tau = (total - eps) / k
            taus.append(tau)
        tau = torch.tensor(taus, dtype=d.dtype).unsqueeze(1)
        return x0 + d.sign() * (d.abs() - tau).clamp_min(0)

    ref = _dykstra(v, x, ball, iters=3000)
    assert torch.allclose(got, ref, atol=1e-6)


@pytest.mark.parametrize("threat", [LinfBall(0.1), L2Ball(0.5), L1Ball(1.0)])
def test_projection_is_optimal_among_feasible_points(threat):
    """No random feasible point is closer to v than the projection (first-order optimality)."""
    v, x = _cases(n=10, d=10, seed=1)
    p = threat.project(v, x)
    assert threat.contains(p, x, atol=1e-9).all()
    g = torch.Generator().manual_seed(2)
    for _ in range(200):
        z = threat.random_init(x, g)
        # points between p and z are feasible (convex set); none may be closer to v
        for t in (0.01, 0.1, 1.0):
            w = p + t * (z - p)
            assert ((w - v).norm(dim=1) >= (p - v).norm(dim=1) - 1e-9).all()


def test_linf_projection_is_clip():
    v, x = _cases()
    p = LinfBall(0.1).project(v, x)
    ref = torch.minimum(torch.maximum(v, x - 0.1), x + 0.1).clamp(0, 1)
    assert torch.equal(p, ref)


@pytest.mark.parametrize("threat", [LinfBall(0.3), L2Ball(2.0), L1Ball(10.0)])
def test_projection_idempotent_and_fixed_inside(threat):
    v, x = _cases(d=784)
    p = threat.project(v, x)
    assert torch.allclose(threat.project(p, x), p, atol=1e-9)
    inside = threat.random_init(x, torch.Generator().manual_seed(0))
    assert torch.allclose(threat.project(inside, x), inside, atol=1e-9)


@pytest.mark.parametrize("threat", [LinfBall(0.3), L2Ball(2.0), L1Ball(10.0)])
def test_random_init_inside_and_reproducible(threat):
    x = torch.rand(16, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    a = threat.random_init(x, torch.Generator().manual_seed(5))
    b = threat.random_init(x, torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    assert threat.contains(a, x).all()
    assert not torch.equal(a, x)


def test_steepest_ascent_directions():
    g = torch.tensor([[3.0, -1.0, 0.5, -4.0]])
    assert torch.equal(LinfBall(1).steepest_ascent(g), g.sign())
    assert torch.allclose(L2Ball(1).steepest_ascent(g), g / g.norm())
    e = L1Ball(1, sparsity=50).steepest_ascent(g)  # top half: |3| and |−4|
    assert torch.allclose(e, torch.tensor([[0.5, 0.0, 0.0, -0.5]]))
    # Box-aware: a coordinate at 1 with a positive gradient cannot move and is ignored.
    x = torch.tensor([[1.0, 0.5, 0.5, 0.5]])
    e = L1Ball(1, sparsity=50).steepest_ascent(g, x)
    assert torch.allclose(e, torch.tensor([[0.0, -0.5, 0.0, -0.5]]))
    for t in (LinfBall(1), L2Ball(1), L1Ball(1)):
        assert t.norm(t.steepest_ascent(g)).item() == pytest.approx(1.0)


@pytest.mark.parametrize(
    "text",
    [
        "linf:0.3",
        "l2:2",
        "l1:10",
        "linf:8/255",
        "spatial:30,3",
        "union(linf:0.3,l2:2,l1:10)",
        "affine(linf:0.3,l1:10)",
        "union(linf:0.3,spatial:30,3)",
        "l1:12,q=95",
    ],
)
def test_parse_roundtrip(text):
    t = parse(text)
    assert str(t) == text
    assert parse(str(t)) == t


def test_parse_values():
    assert parse("linf:8/255").eps == 8 / 255
    assert parse(" L2 : 2 ").eps == 2.0
    s = parse("spatial:30,3")
    assert isinstance(s, Spatial) and s.max_rotation == 30 and s.max_translation == 3
    assert isinstance(parse("union(linf:0.1,l2:1)"), Union)


@pytest.mark.parametrize(
    "text, message",
    [
        ("linf:-0.3", "Invalid eps"),
        ("linf:abc", "Invalid number"),
        ("l3:1", "Unknown threat type"),
        ("linf", "Invalid threat"),
        ("spatial:30", "spatial takes"),
        ("affine(linf:0.3)", "exactly two"),
        ("union(linf:0.3", "missing"),
        ("linf:1/0", "Invalid number"),
        ("affine(spatial:3,1,l1:1)", "two ℓp balls"),
    ],
)
def test_parse_errors(text, message):
    with pytest.raises(ValueError, match=message):
        parse(text)


def test_bad_eps_objects():
    with pytest.raises(ValueError, match="Invalid eps"):
        LinfBall(float("nan"))
    with pytest.raises(ValueError, match="max_rotation"):
        Spatial(-1, 3)


def test_spatial_identity_and_shift():
    x = torch.zeros(1, 1, 8, 8)
    x[0, 0, 3, 3] = 1.0
    s = Spatial(30, 2)
    assert torch.allclose(s.apply(x, torch.zeros(1, 3)), x, atol=1e-6)
    shifted = s.apply(x, torch.tensor([[0.0, 1.0, 0.0]]))  # one pixel right
    assert shifted[0, 0, 3, 4] == pytest.approx(1.0, abs=1e-5)
    rotated = s.apply(x, torch.tensor([[90.0, 0.0, 0.0]]))
    assert rotated.sum() == pytest.approx(1.0, abs=1e-4)
    assert s.contains(shifted, x, params=SpatialParams(torch.tensor([[0.0, 1.0, 0.0]]))).all()
    assert not s.contains(shifted, x, params=SpatialParams(torch.tensor([[0.0, 3.0, 0.0]]))).any()
    # Out-of-range parameters are clipped by the projection: 3 px becomes the allowed 2 px.
    clipped = s.project(shifted, x, SpatialParams(torch.tensor([[0.0, 3.0, 0.0]])))
    assert torch.allclose(clipped, s.apply(x, torch.tensor([[0.0, 2.0, 0.0]])))
    assert s.grid().shape == (31 * 25, 3)
    assert torch.equal(s.grid()[0], torch.zeros(3))


def test_affine_membership_exact_for_linf_l1():
    x = torch.full((1, 10), 0.3)
    t = Affine(LinfBall(0.2), L1Ball(1.0))
    # λ = 0.5: 0.1 on every coordinate from ℓ∞ plus 0.5 of ℓ1 mass on one coordinate.
    delta = torch.full((1, 10), 0.1)
    delta[0, 0] += 0.5
    assert t.contains(x + delta, x).all()
    # Neither ball alone contains it.
    assert not LinfBall(0.2).contains(x + delta, x).any()
    assert not L1Ball(1.0).contains(x + delta, x).any()
    delta[0, 0] += 0.2  # now too far for every λ (checked by hand: no λ in [0, 1] works)
    assert not t.contains(x + delta, x).any()
