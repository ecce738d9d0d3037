"""The threat contract, generated from the threat registry: every registered kind of threat.

A new threat registered with one ``register(...)`` line is tested here without editing this file:
text round trip, random members inside (with their parameters), projection idempotent and
inside, norms, steepest ascent where there is one, the report row, and the zero budget.
"""

import json
import math

import pytest
import torch

from multirobust import threats
from multirobust.threats import parse

ENTRIES = threats.entries()
IDS = [e.name for e in ENTRIES]


@pytest.fixture
def x():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(6, 1, 8, 8, generator=g)
    x[0, 0, :2] = 0.0  # box faces
    x[1, 0, :2] = 1.0
    return x


def test_registry_lists_every_threat_kind_once():
    assert len(set(IDS)) == len(IDS) >= 6
    for e in ENTRIES:
        assert e.cls.name == e.name and e.summary and e.syntax
        assert threats.get(e.name) is e
    assert threats.NORMS == tuple(e.name for e in ENTRIES if issubclass(e.cls, threats.LpBall))
    with pytest.raises(ValueError, match="Unknown threat type 'l7'"):
        threats.get("l7")


@pytest.mark.parametrize("entry", ENTRIES, ids=IDS)
def test_text_round_trip(entry):
    for text in (entry.example, entry.zero):
        t = parse(text)
        assert isinstance(t, entry.cls)
        assert str(t) == text and parse(str(t)) == t
    assert parse(entry.zero).is_trivial and not parse(entry.example).is_trivial


@pytest.mark.parametrize("entry", ENTRIES, ids=IDS)
def test_sample_is_inside_and_follows_the_generator(entry, x):
    t = parse(entry.example)
    xa, params = t.sample(x, torch.Generator().manual_seed(5))
    assert xa.shape == x.shape and xa.dtype == x.dtype
    assert t.contains(xa, x, atol=1e-4, params=params).all()
    assert t.in_box(xa).all()
    again, _ = t.sample(x, torch.Generator().manual_seed(5))
    assert torch.equal(xa, again)
    point = t.random_init(x, torch.Generator().manual_seed(5))
    assert torch.equal(point, xa)  # random_init is sample's point
    assert not torch.equal(xa, x)  # a real perturbation, not x itself


@pytest.mark.parametrize("entry", ENTRIES, ids=IDS)
def test_projection_is_idempotent_on_members_and_inside(entry, x):
    t = parse(entry.example)
    xa, params = t.sample(x, torch.Generator().manual_seed(1))
    p = t.project(xa, x, params)
    assert torch.allclose(p, xa, atol=1e-5)
    assert t.contains(p, x, atol=1e-4, params=params).all()
    if t.additive:
        # A point far outside the ball and the box comes back inside, and stays put after.
        far = x + 3 * torch.randn(x.shape, generator=torch.Generator().manual_seed(2))
        inside = t.project(far, x)
        assert t.contains(inside, x, atol=1e-5).all()
        assert torch.allclose(t.project(inside, x), inside, atol=1e-6)


@pytest.mark.parametrize("entry", ENTRIES, ids=IDS)
def test_norm_of_members(entry, x):
    t = parse(entry.example)
    xa, params = t.sample(x, torch.Generator().manual_seed(3))
    norms = t.norm(xa - x, params)
    assert norms.shape == (x.shape[0],)
    if t.additive:
        assert (norms <= t.eps * (1 + 1e-5)).all() and (norms > 0).all()
        assert torch.equal(t.norm(torch.zeros_like(x)), torch.zeros(x.shape[0]))
    else:
        # Members of the same ℓp member of a union have that member's norm; others have none.
        for i, m in enumerate(t.members()):
            if params is not None and params.member_index() is not None and m.additive:
                rows = params.member_index() == i
                assert torch.allclose(norms[rows], m.norm((xa - x)[rows]))
        assert norms.isnan().any() or all(m.additive for m in t.members())


@pytest.mark.parametrize("entry", ENTRIES, ids=IDS)
def test_steepest_ascent_is_a_unit_direction_where_there_is_one(entry):
    t = parse(entry.example)
    g = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(4))
    try:
        d = t.steepest_ascent(g)
    except NotImplementedError:
        assert not t.additive  # every ℓp ball has one
        return
    assert torch.allclose(t.norm(d), torch.ones(4), atol=1e-5)
    # It is an ascent direction: ⟨g, d⟩ > 0.
    assert ((g * d).flatten(1).sum(1) > 0).all()


@pytest.mark.parametrize("entry", ENTRIES, ids=IDS)
def test_report_row_and_largest_perturbation(entry, x):
    t = parse(entry.example)
    xa, params = t.sample(x, torch.Generator().manual_seed(6))
    rows = [t.params_row(params, i) for i in range(x.shape[0])]
    for row in rows:
        assert row is None or all(isinstance(v, float) for v in row)
    json.dumps(rows)  # the report stores them as JSON
    norms = [None if math.isnan(v) else float(v) for v in t.norm(xa - x, params).tolist()]
    largest = t.largest(norms, rows)
    assert all(isinstance(v, float) for v in largest.values())
    if t.additive:
        assert largest == {"norm": max(norms)}
    assert t.largest([None] * len(rows), [None] * len(rows)) == {}


@pytest.mark.parametrize("entry", ENTRIES, ids=IDS)
def test_zero_budget_allows_only_x(entry, x):
    t = parse(entry.zero)
    xa, params = t.sample(x, torch.Generator().manual_seed(7))
    assert torch.allclose(xa, x, atol=1e-5)
    assert t.contains(x, x).all()
    assert not t.contains((x + 0.05).clamp(0, 1), x).any()


@pytest.mark.parametrize("entry", ENTRIES, ids=IDS)
def test_members(entry):
    t = parse(entry.example)
    members = t.members()
    assert members == (t,) or (len(members) > 1 and all(m.members() == (m,) for m in members))


def test_spatial_reports_its_largest_angle_and_shift():
    s = parse("spatial:30,3")
    rows = [[-12.5, 1.0, -2.0], None, [29.0, 0.5, 0.25]]
    assert s.largest([None, None, None], rows) == {"rotation": 29.0, "translation": 2.0}


def test_the_projection_of_a_union_is_the_nearest_member_projection():
    u = parse("union(linf:0.1,l2:0.5)")
    x = torch.full((2, 100), 0.5)
    v = x.clone()
    v[0, 0] += 0.4  # one coordinate: the ℓ2 ball (radius 0.5) holds it, the ℓ∞ ball does not
    # Every coordinate by 0.11: the ℓ∞ projection moves it by 0.01·√100 = 0.1 in ℓ2, the ℓ2
    # projection (‖δ‖₂ = 1.1 down to 0.5) by 0.6.
    v[1] += 0.11
    p = u.project(v, x)
    assert torch.allclose(p[0], v[0])
    assert torch.allclose(p[1], x[1] + 0.1)


def test_lp_ball_by_name_and_norm_errors():
    assert str(threats.lp_ball("l2", 1.5)) == "l2:1.5"
    with pytest.raises(ValueError, match=r"Invalid norm: 'l3' \(must be one of linf, l2, l1\)"):
        threats.lp_ball("l3", 1.0)
    with pytest.raises(ValueError, match="PGD needs an ℓp ball"):
        threats.ball("spatial:3,1", who="PGD")
