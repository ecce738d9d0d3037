"""The attack contract, generated from the registry: every attack × every threat it supports.

A new registered attack is tested here without editing this file.
"""

import dataclasses

import pytest
import torch
from torch import nn

from multirobust import attacks
from multirobust.threats import LpBall, Union, parse

THREATS = [
    "linf:0.1",
    "l2:0.5",
    "l1:2",
    "spatial:20,2",
    "union(linf:0.1,l2:0.5)",
    "union(l1:2,spatial:20,2)",
    "affine(linf:0.1,l1:2)",
]
ZERO = {
    "linf:0.1": "linf:0",
    "l2:0.5": "l2:0",
    "l1:2": "l1:0",
    "spatial:20,2": "spatial:0,0",
    "union(linf:0.1,l2:0.5)": "union(linf:0,l2:0)",
    "union(l1:2,spatial:20,2)": "union(l1:0,spatial:0,0)",
    "affine(linf:0.1,l1:2)": "affine(linf:0,l1:0)",
}


def _supported(name, threat):
    cls = attacks.get(name)
    t = parse(threat)
    members = t.threats if isinstance(t, Union) else (t,)
    return all(cls.supports(m) for m in members)


PAIRS = [(n, t) for n in attacks.names() for t in THREATS if _supported(n, t)]


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


def test_every_attack_is_covered():
    covered = {n for n, _ in PAIRS}
    assert covered == set(attacks.names())


@pytest.mark.parametrize("name, threat", PAIRS)
def test_result_inside_threat_and_box(model, batch, name, threat):
    x, y = batch
    res = attacks.create(name, threat=threat, **_fast(name))(model, x, y)
    t = parse(threat)
    assert t.contains(res.x_adv, x, atol=1e-4, params=res.params).all()
    assert res.x_adv.min() >= 0 and res.x_adv.max() <= 1
    if isinstance(t, LpBall):
        assert (t.norm(res.x_adv - x) <= t.eps * (1 + 1e-4) + 1e-6).all()
        assert torch.allclose(res.norm, t.norm(res.x_adv - x))
    # success is what a fresh forward pass says
    with torch.no_grad():
        pred = model(res.x_adv).argmax(1)
    assert torch.equal(res.success, pred != y)


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
