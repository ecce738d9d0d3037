"""The attack contracts, generated from the registries: every attack × every threat it supports
(the threats are the threat registry's examples), every goal, and the minimum-norm contract.

A new registered attack or threat is tested here without editing this file.
"""

import dataclasses

import pytest
import torch
from torch import nn

from multirobust import attacks, threats
from multirobust.attacks import (
    Attack,
    LeastLikely,
    MinimumNormAttack,
    RandomTarget,
    ReduceConfidence,
    SourceToTarget,
    Targeted,
    ThreatViolation,
    Untargeted,
)
from multirobust.threats import parse

THREATS = [e.example for e in threats.entries()]
ZERO = {e.example: e.zero for e in threats.entries()}


def _supported(name, threat):
    cls = attacks.get(name)
    return all(cls.supports(m) for m in parse(threat).members())


PAIRS = [(n, t) for n in attacks.names() for t in THREATS if _supported(n, t)]
MIN_NORM = attacks.minimum_norm_names()


def _fast(name):
    """Small budgets so the suite stays quick; only options the attack has."""
    fields = {f.name for f in dataclasses.fields(attacks.get(name))}
    small = {
        "steps": 4,
        "rotations": 5,
        "translations": 3,
        "trials": 4,
        "lambdas": 3,
        "target_classes": 2,
        # APGD-T's near-miss runs on every example left robust, so the contract covers them
        "near_miss_runs": 2,
        "near_miss_margin": 1.0,
        "binary_search_steps": 2,
        "search_steps": 3,
        # the minimal-distortion search: a coarse grid, a 4-step APGD, nothing else first
        "attack_options": {"loss": "margin", "steps": 4},
        "rtol": 0.5,
        "min_norm_attacks": False,
        # the transfer attack: a barely trained distilled surrogate is still a surrogate
        "distill_steps": 3,
        "distill_samples": 2,
    }
    return {k: v for k, v in small.items() if k in fields}


class TinyNet(nn.Module):
    """Conv + BatchNorm + dropout-free head on 1×8×8 inputs, 5 classes."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.head = nn.Linear(4 * 64, 5)

    def forward(self, x):
        return self.head(torch.relu(self.bn(self.conv(x))).flatten(1))


@pytest.fixture
def model():
    torch.manual_seed(0)
    m = TinyNet()
    # Non-trivial running statistics, so "unchanged" is a real check.
    m.bn.running_mean.uniform_(-0.1, 0.1)
    m.bn.running_var.uniform_(0.5, 1.5)
    m.eval()
    return m


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(1)
    x = torch.rand(6, 1, 8, 8, generator=g)
    x[0, 0, :2] = 0.0  # box edges
    x[1, 0, :2] = 1.0
    y = torch.randint(0, 5, (6,), generator=g)
    return x, y


def test_every_attack_and_threat_is_covered():
    assert {n for n, _ in PAIRS} == set(attacks.names())
    assert {t for _, t in PAIRS} == set(THREATS)
    assert set(MIN_NORM) < set(attacks.names()) and MIN_NORM


# ---------------------------------------------------------------------------- fixed ε
@pytest.mark.parametrize("name, threat", PAIRS)
def test_result_inside_threat_and_box(model, batch, name, threat):
    x, y = batch
    res = attacks.create(name, threat=threat, **_fast(name))(model, x, y)
    t = parse(threat)
    assert t.contains(res.x_adv, x, atol=1e-4, params=res.params).all()
    assert res.x_adv.min() >= 0 and res.x_adv.max() <= 1
    if t.additive:
        assert (t.norm(res.x_adv - x) <= t.eps * (1 + 1e-4) + 1e-6).all()
        assert torch.allclose(res.norm, t.norm(res.x_adv - x))
    # success and logits are what a fresh forward pass says
    with torch.no_grad():
        logits = model(res.x_adv)
    assert torch.equal(res.success, logits.argmax(1) != y)
    assert torch.allclose(res.logits, logits, atol=1e-5)


@pytest.mark.parametrize("name, threat", PAIRS)
def test_input_not_mutated_shape_dtype_kept(model, batch, name, threat):
    x, y = batch
    x0, y0 = x.clone(), y.clone()
    res = attacks.create(name, threat=threat, **_fast(name))(model, x, y)
    assert torch.equal(x, x0) and torch.equal(y, y0)
    assert res.x_adv.shape == x.shape and res.x_adv.dtype == x.dtype
    assert res.x_adv.device == x.device
    assert res.success.shape == (x.shape[0],) and res.success.dtype == torch.bool
    assert res.x_adv is not x


@pytest.mark.parametrize("name, threat", PAIRS)
def test_float64_kept(model, batch, name, threat):
    x, y = batch
    m = model.double()
    res = attacks.create(name, threat=threat, **_fast(name))(m, x.double(), y)
    assert res.x_adv.dtype == torch.float64


@pytest.mark.parametrize("name, threat", PAIRS)
def test_zero_budget_returns_x(model, batch, name, threat):
    x, y = batch
    res = attacks.create(name, threat=ZERO[threat], **_fast(name))(model, x, y)
    assert torch.equal(res.x_adv, x)


@pytest.mark.parametrize("name, threat", PAIRS)
def test_same_seed_same_result(model, batch, name, threat):
    x, y = batch
    atk = attacks.create(name, threat=threat, **_fast(name))
    a = atk(model, x, y, generator=torch.Generator().manual_seed(3))
    b = atk(model, x, y, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a.x_adv, b.x_adv)
    assert torch.equal(atk(model, x, y).x_adv, atk(model, x, y).x_adv)  # default seed


@pytest.mark.parametrize("name, threat", PAIRS)
def test_model_state_restored(model, batch, name, threat):
    x, y = batch
    model.train()
    model.bn.eval()  # mixed modes must come back exactly
    model.conv.weight.requires_grad_(False)
    stats = (
        model.bn.running_mean.clone(),
        model.bn.running_var.clone(),
        model.bn.num_batches_tracked.clone(),
    )
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    attacks.create(name, threat=threat, **_fast(name))(model, x, y)
    assert model.training and model.head.training and not model.bn.training
    assert not model.conv.weight.requires_grad and model.head.weight.requires_grad
    assert torch.equal(model.bn.running_mean, stats[0])
    assert torch.equal(model.bn.running_var, stats[1])
    assert torch.equal(model.bn.num_batches_tracked, stats[2])
    for k, v in model.state_dict().items():
        assert torch.equal(v, weights[k]), k
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("name, threat", PAIRS)
def test_state_restored_after_error(model, batch, name, threat):
    x, y = batch
    model.train()
    bad = y.clone()
    bad[0] = 99
    with pytest.raises(ValueError, match="Labels out of range"):
        attacks.create(name, threat=threat, **_fast(name))(model, x, bad)
    assert model.training and all(p.requires_grad for p in model.parameters())


@pytest.mark.parametrize("name", attacks.names())
def test_unknown_option_is_rejected(name):
    threat = next(t for n, t in PAIRS if n == name)
    with pytest.raises(TypeError, match="Unknown option"):
        attacks.create(name, threat=threat, stepz=3)


# ---------------------------------------------------------------------------- goals
def _goals(y):
    src = int(y[2])
    return {
        "untargeted": Untargeted(),
        "targeted": Targeted((y + 1) % 5),
        "random": RandomTarget(),
        "least-likely": LeastLikely(),
        "source-target": SourceToTarget(src, (src + 2) % 5),
        "confidence": ReduceConfidence(0.6),
    }


GOAL_NAMES = list(_goals(torch.zeros(6, dtype=torch.long)))


@pytest.mark.parametrize("goal_name", GOAL_NAMES)
@pytest.mark.parametrize("name, threat", PAIRS)
def test_every_goal_is_judged_by_a_fresh_forward_pass(model, batch, name, threat, goal_name):
    """Success means exactly the goal (on a fresh forward pass at x_adv, with the targets the
    goal resolves to from the same generator); examples the goal leaves alone are unchanged."""
    x, y = batch
    goal = _goals(y)[goal_name]
    atk = attacks.create(name, threat=threat, **_fast(name))
    res = atk(model, x, y, goal=goal, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        clean, logits = model(x), model(res.x_adv)
    resolved = goal.resolve(clean, y, torch.Generator().manual_seed(4))
    assert torch.equal(res.success, resolved.met(logits) & resolved.attacked())
    left_alone = ~resolved.attacked() | resolved.met(clean)
    assert torch.equal(res.x_adv[left_alone], x[left_alone])
    assert parse(threat).contains(res.x_adv, x, atol=1e-4, params=res.params).all()


@pytest.mark.parametrize("name, threat", PAIRS)
def test_targets_tensor_is_shorthand_for_targeted(model, batch, name, threat):
    x, y = batch
    t = (y + 1) % 5
    atk = attacks.create(name, threat=threat, **_fast(name))
    a = atk(model, x, y, targets=t)
    b = atk(model, x, y, goal=Targeted(t))
    assert torch.equal(a.x_adv, b.x_adv) and torch.equal(a.success, b.success)


def test_target_strings_are_refused_with_the_goal_values(model, batch):
    x, y = batch
    atk = attacks.create("pgd", threat="linf:0.1", steps=2)
    for text in ("random", "least_likely", "least-likely"):
        with pytest.raises(ValueError, match=r"goal=attacks.RandomTarget\(\).*LeastLikely"):
            atk(model, x, y, targets=text)
    with pytest.raises(ValueError, match="either goal= or targets="):
        atk(model, x, y, goal=Untargeted(), targets=y)
    with pytest.raises(ValueError, match="SourceToTarget"):
        atk(model, x, y, targets=torch.full_like(y, -1))
    with pytest.raises(TypeError, match="goal must be a Goal"):
        atk(model, x, y, goal="misclassify")
    with pytest.raises(TypeError, match="goal is an argument of the call"):
        attacks.create("pgd", threat="linf:0.1", goal="reduce_confidence")


# ---------------------------------------------------------------------------- minimum norm
@pytest.mark.parametrize("name", MIN_NORM)
def test_minimum_norm_result_is_honest(model, batch, name):
    x, y = batch
    with torch.no_grad():
        wrong = model(x).argmax(1) != y
    atk = attacks.create_minimum_norm(name, **_fast(name))
    res = atk(model, x, y)
    ball = atk.ball_for(x)
    assert res.norm == ball.name
    with torch.no_grad():
        pred = model(res.x_adv).argmax(1)
    # found ⇔ misclassified at x_adv, distance = the norm of the perturbation, inf where none
    assert torch.equal(res.found, pred != y)
    found = res.found
    assert torch.allclose(res.distance[found], ball.norm(res.x_adv - x)[found])
    assert torch.isinf(res.distance[~found]).all() and torch.equal(res.x_adv[~found], x[~found])
    assert (res.distance[wrong] == 0).all()  # already misclassified: nothing to find
    assert res.x_adv.min() >= 0 and res.x_adv.max() <= 1
    # Robust accuracy at any ε from the same answer.
    for eps in (0.0, float(res.distance[found].max()) if found.any() else 1.0):
        assert res.robust_accuracy(eps) == float((~(found & (res.distance <= eps))).float().mean())


@pytest.mark.parametrize("goal_name", GOAL_NAMES)
@pytest.mark.parametrize("name", MIN_NORM)
def test_minimum_norm_every_goal(model, batch, name, goal_name):
    x, y = batch
    goal = _goals(y)[goal_name]
    atk = attacks.create_minimum_norm(name, **_fast(name))
    res = atk(model, x, y, goal=goal, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        clean, logits = model(x), model(res.x_adv)
    resolved = goal.resolve(clean, y, torch.Generator().manual_seed(4))
    assert torch.equal(res.found, resolved.met(logits) & resolved.attacked())
    assert torch.equal(res.x_adv[~res.found], x[~res.found])


@pytest.mark.parametrize("name", MIN_NORM)
def test_minimum_norm_mechanics(model, batch, name):
    """Inputs untouched, dtype kept, seeded, the model restored exactly."""
    x, y = batch
    x0 = x.clone()
    model.train()
    model.conv.weight.requires_grad_(False)
    atk = attacks.create_minimum_norm(name, **_fast(name))
    a = atk(model, x, y, generator=torch.Generator().manual_seed(2))
    b = atk(model, x, y, generator=torch.Generator().manual_seed(2))
    assert torch.equal(x, x0) and torch.equal(a.x_adv, b.x_adv)
    assert model.training and not model.conv.weight.requires_grad
    assert all(p.grad is None for p in model.parameters())
    res = atk(model.double().eval(), x.double(), y)
    assert res.x_adv.dtype == torch.float64 and res.distance.dtype == torch.float64
    with pytest.raises(TypeError, match="takes no threat|Unknown option"):
        attacks.create_minimum_norm(name, threat="l2:1")


# ---------------------------------------------------------------------------- the contract
def test_call_is_final():
    with pytest.raises(TypeError, match="defines __call__"):

        @dataclasses.dataclass(frozen=True, kw_only=True)
        class Sneaky(Attack):
            def __call__(self, model, x, y, **kwargs):
                return None

            def _run(self, ctx):
                return ctx.x, None

    with pytest.raises(TypeError, match="defines __call__"):

        class SneakyMin(MinimumNormAttack):
            def __call__(self, model, x, y, **kwargs):
                return None


@dataclasses.dataclass(frozen=True, kw_only=True)
class _Escapes(Attack):
    """Moves every pixel by 2ε: outside any ℓ∞ ball of radius ε once the projection is undone."""

    name = "escapes"

    def _run(self, ctx):
        return ctx.x, None


def test_leaving_the_threat_model_raises_threat_violation(model, batch, monkeypatch):
    x, _ = batch
    with torch.no_grad():
        y = model(x).argmax(1)  # all correctly classified: every example is attacked
    atk = _Escapes(threat="linf:0.1")
    # The projection is the contract's own safety net; break it to see the check behind it.
    monkeypatch.setattr(threats.LinfBall, "project", lambda self, xa, x0, params=None: xa + 0.2)
    with pytest.raises(ThreatViolation, match="returned 6 example.*outside linf:0.1") as err:
        atk(model, x, y)
    assert err.value.count == 6 and err.value.threat == "linf:0.1"


def test_inputs_must_match_the_model(model, batch):
    x, y = batch
    atk = attacks.create("fgsm", threat="linf:0.1")
    with pytest.raises(ValueError, match=r"inputs are torch.float64 but the model.*float32"):
        atk(model, x.double(), y)
    with pytest.raises(ValueError, match="-100 is cross-entropy's ignore value"):
        atk(model, x, torch.full_like(y, -100))


def test_unions_are_one_wrapper_over_the_members():
    atk = attacks.create("pgd", threat="union(linf:0.1,l2:0.5)", steps=3)
    assert isinstance(atk, attacks.UnionAttack)
    assert [str(a.threat) for a in atk.attacks] == ["linf:0.1", "l2:0.5"]
    assert all(a.steps == 3 for a in atk.attacks)
    assert atk.with_options(steps=5).attacks[1].steps == 5
    with pytest.raises(ValueError, match="attacks one threat model"):
        attacks.get("pgd")(threat="union(linf:0.1,l2:0.5)")
