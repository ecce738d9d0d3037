"""Loss landscapes: known answers on linear models, Li et al.'s normalisation, exact restoration
of the model after weight-space work, masking evidence on trap models, storage and bad inputs."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from multirobust import attacks, data, landscape, models
from multirobust.landscape import (
    InputSurface,
    filter_normalised_direction,
    input_slice,
    input_surface,
    landscape_check,
    masking_evidence,
    weight_surface,
)
from multirobust.landscape.storage import load_npz, save_npz
from multirobust.threats import L1Ball, L2Ball, LinfBall

D = 64  # a 1×8×8 "image"


def _linear(seed=0, classes=2):
    """A float64 linear classifier on 1×8×8 inputs with a fixed random weight."""
    gen = torch.Generator().manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(D, classes)).double()
    with torch.no_grad():
        model[1].weight.copy_(torch.randn(classes, D, generator=gen, dtype=torch.float64))
        model[1].bias.copy_(torch.randn(classes, generator=gen, dtype=torch.float64))
    return model.eval()


def _interior(n=3, seed=1):
    # Values in [0.4, 0.6]: the largest move on the grids below is 0.15 per coordinate, so no
    # point reaches the box and the plane is never bent by clipping (asserted in the test).
    gen = torch.Generator().manual_seed(seed)
    return 0.4 + 0.2 * torch.rand(n, 1, 8, 8, generator=gen, dtype=torch.float64)


# ℓ∞: |a·u + b·v| <= 1.5·(1 + 1.1)·0.04 < 0.13 per coordinate. ℓ2: u, v unit ℓ2 vectors, so no
# coordinate moves more than 1.5·2·0.05 = 0.15. ℓ1 (k = 1 coordinate per direction): 1.5·0.1.
@pytest.mark.parametrize(
    "threat, dual",
    [(LinfBall(0.04), 1.0), (L2Ball(0.05), 2.0), (L1Ball(0.1), math.inf)],
    ids=["linf", "l2", "l1"],
)
def test_linear_margin_surface_is_the_closed_form_plane(threat, dual):
    model = _linear()
    x = _interior()
    w = model[1].weight.detach()
    b = model[1].bias.detach()
    y = torch.tensor([0, 1, 0])
    s = input_surface(model, x, y, threat, points=11, radius=1.5, progress=False)
    assert not s.clipped.any() and s.source == ["gradient"] * 3
    for n in range(3):
        other = 1 - int(y[n])
        wd = (w[other] - w[int(y[n])]).numpy()  # margin = wd·x + bd
        bd = float(b[other] - b[int(y[n])])
        m0 = float(wd @ x[n].flatten().numpy()) + bd
        slope_u = float(wd @ s.u[n].reshape(-1))
        slope_v = float(wd @ s.v[n].reshape(-1))
        # u is the steepest ascent of the margin: its slope is the dual norm of the weight
        # (‖wd‖₁ for ℓ∞, ‖wd‖₂ for ℓ2, max|wd_i| for ℓ1 with one coordinate per step).
        assert slope_u == pytest.approx(np.linalg.norm(wd, ord=dual), rel=1e-9)
        a, bb = np.meshgrid(s.alpha, s.beta, indexing="ij")
        plane = m0 + threat.eps * (a * slope_u + bb * slope_v)
        np.testing.assert_allclose(s.values["margin"][n], plane, rtol=1e-9, atol=1e-9)
        # two classes: cross-entropy = softplus(margin)
        np.testing.assert_allclose(s.values["ce"][n], np.logaddexp(0, plane), rtol=1e-9)
        assert s.center["margin"][n] == pytest.approx(m0, rel=1e-12)
    # both directions have unit length in the threat's norm and are Euclidean-orthogonal
    u, v = torch.from_numpy(s.u), torch.from_numpy(s.v)
    torch.testing.assert_close(threat.norm(u), torch.ones(3, dtype=torch.float64))
    torch.testing.assert_close(threat.norm(v), torch.ones(3, dtype=torch.float64))
    assert (u * v).flatten(1).sum(1).abs().max() < 1e-12


def test_linear_model_is_smooth_and_grid_breaks_what_the_plane_crosses():
    model = _linear()
    x = _interior(8, seed=2)
    w = model[1].weight.detach()
    with torch.no_grad():
        y = model(x).argmax(1)  # clean-correct by construction
    wd = torch.stack([w[1 - int(c)] - w[int(c)] for c in y])
    m0 = (wd * x.flatten(1)).sum(1) + (model[1].bias[1 - y] - model[1].bias[y]).detach()
    # For a linear margin the ℓ∞ ball is broken iff m0 + ε‖wd‖₁ > 0: ε* = −m0/‖wd‖₁. The median
    # ε* breaks about half of the examples, so both outcomes are tested.
    eps_star = -m0 / wd.abs().sum(1)
    eps = float(eps_star.median())
    threat = LinfBall(eps)
    # radius 1 with 11 points: a = 1, the maximiser over the whole ball, is on the grid
    s = input_surface(model, x, y, threat, points=11, radius=1.0, progress=False)
    ev = masking_evidence(model, s)
    # A linear loss rises fastest along u: the gradient's share of the best increase is 1.
    for e in ev.examples:
        assert e.clean_correct
        assert e.gradient_share == pytest.approx(1.0, abs=1e-9) and e.roughness < 1e-9
    outcomes = set()
    for n, e in enumerate(ev.examples):
        if abs(float(eps_star[n]) - eps) > 0.02 * eps:  # away from the boundary (and the median)
            assert e.broken == (float(eps_star[n]) < eps), n
            outcomes.add(e.broken)
            if e.broken:
                assert e.point == (1.0, 0.0)  # the highest margin on the grid: at εu
    assert outcomes == {True, False}


def test_slice_to_an_adversarial_point_and_its_marks():
    model = _linear()
    x = _interior(2)
    y = torch.tensor([0, 1])
    threat = L2Ball(0.05)
    x_end = threat.project(x + 0.2 * torch.ones_like(x), x)  # on the sphere, inside the box
    slc = input_slice(model, x, y, x_end, threat, points=21, t_range=(-0.5, 1.5), progress=False)
    assert slc.values["ce"].shape == (2, 21)
    np.testing.assert_allclose(slc.end_norm, [0.05, 0.05], rtol=1e-9)
    # inside the ball exactly for |t| <= 1 (up to contains' tolerance)
    np.testing.assert_array_equal(slc.inside[0], np.abs(slc.t) <= 1 + 1e-9)
    w = model[1].weight.detach()
    for n in range(2):
        wd = (w[1 - int(y[n])] - w[int(y[n])]).numpy()
        d = (x_end[n] - x[n]).flatten().numpy()
        m0 = slc.values["margin"][n][int(np.abs(slc.t).argmin())]  # t = 0
        np.testing.assert_allclose(slc.values["margin"][n], m0 + slc.t * float(wd @ d), rtol=1e-9)


def test_grid_runs_in_batches_of_the_requested_size():
    calls = []

    class Counting(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = _linear(classes=3)

        def forward(self, x):
            calls.append(x.shape[0])
            return self.inner(x)

    model = Counting()
    input_surface(
        model,
        _interior(4),
        torch.tensor([0, 1, 2, 0]),
        "l2:0.05",
        points=15,
        batch_size=200,
        progress=False,
    )
    # 1 clean pass + 1 gradient pass (4 each), then 4·225 = 900 points in batches of 200
    assert calls[:2] == [4, 4]
    assert calls[2:] == [200, 200, 200, 200, 100]


def test_same_seed_same_plane_other_seed_other_plane():
    model = _linear(classes=3)
    x = _interior(2)
    y = torch.tensor([0, 2])
    a = input_surface(model, x, y, "linf:0.04", points=3, seed=5, progress=False)
    b = input_surface(model, x, y, "linf:0.04", points=3, seed=5, progress=False)
    c = input_surface(model, x, y, "linf:0.04", points=3, seed=6, progress=False)
    np.testing.assert_array_equal(a.v, b.v)
    np.testing.assert_array_equal(a.u, c.u)
    assert not np.array_equal(a.v, c.v)


def test_surface_roundtrips_through_npz_and_rebuilds_points_exactly(tmp_path):
    model = _linear(classes=3)
    x = _interior(2)
    y = torch.tensor([0, 2])
    s = input_surface(model, x, y, "l1:0.1", points=5, radius=2.0, progress=False)
    save_npz(tmp_path / "s.npz", s.arrays())
    back = InputSurface.from_arrays(load_npz(tmp_path / "s.npz"))
    for key in ("alpha", "beta", "pred", "inside", "clipped", "x", "u", "v"):
        np.testing.assert_array_equal(getattr(back, key), getattr(s, key))
    assert back.threat == "l1:0.1" and back.source == s.source
    p = back.point(1, 4, 0)
    with torch.no_grad():
        logits = model(p.unsqueeze(0))
    # the rebuilt point is the one the grid evaluated: the same margin to the last bits
    other = logits[0].clone()
    other[2] = -math.inf
    assert float(other.max() - logits[0, 2]) == pytest.approx(
        s.values["margin"][1, 4, 0], abs=1e-12
    )
    with pytest.raises(ValueError, match="Python objects"):
        save_npz(tmp_path / "bad.npz", {"a": np.array([{"x": 1}], dtype=object)})


# ----------------------------------------------------------------------------- weight space


class _Net(nn.Module):
    """Conv + BatchNorm + linear: every kind of parameter Li et al. distinguish."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4 * 8 * 8, 3)

    def forward(self, x):
        return self.fc(torch.relu(self.bn(self.conv(x))).flatten(1))


def _net(seed=0):
    torch.manual_seed(seed)
    net = _Net()
    with torch.no_grad():  # non-trivial BN statistics and affine parameters
        net.bn.running_mean.uniform_(-0.5, 0.5)
        net.bn.running_var.uniform_(0.5, 2.0)
        net.bn.num_batches_tracked.fill_(7)
        net.bn.weight.uniform_(0.5, 1.5)
        net.bn.bias.uniform_(-0.2, 0.2)
    return net


def test_directions_are_filter_normalised_as_li_et_al_define():
    net = _net()
    d = filter_normalised_direction(net, seed=3)
    params = dict(net.named_parameters())
    for (name, p), di in zip(params.items(), d, strict=True):
        assert di.shape == p.shape
        if p.dim() <= 1:  # biases and BN scale/shift: left at zero by default
            assert torch.count_nonzero(di) == 0, name
            continue
        # Li et al. 2018, eq. (1): d_{i,j} <- d_{i,j} / ||d_{i,j}|| * ||θ_{i,j}||, filter j of
        # layer i, Frobenius norms; a linear layer's filters are its output rows.
        for j in range(p.shape[0]):
            assert torch.linalg.vector_norm(di[j]) == pytest.approx(
                float(torch.linalg.vector_norm(p[j].detach())), rel=1e-5
            ), (name, j)
        # random, not the weights themselves
        cos = float((di * p.detach()).sum() / (di.norm() * p.detach().norm()))
        assert abs(cos) < 0.5
    with_bias = filter_normalised_direction(net, seed=3, bias_bn=True)
    for (name, p), di in zip(params.items(), with_bias, strict=True):
        if p.dim() <= 1:
            assert float(di.norm()) == pytest.approx(float(p.detach().norm()), rel=1e-5), name
    again = filter_normalised_direction(net, seed=3)
    assert all(torch.equal(a, b) for a, b in zip(d, again, strict=True))


def _state(net):
    return (
        {n: m.training for n, m in net.named_modules()},
        {n: p.requires_grad for n, p in net.named_parameters()},
        {n: t.detach().clone() for n, t in net.state_dict().items()},
    )


def _assert_same_state(net, before):
    modes, flags, values = _state(net)
    assert modes == before[0]
    assert flags == before[1]
    for name, value in values.items():
        assert torch.equal(value, before[2][name]), name


def _mixed_state_net():
    net = _net()
    net.train()
    net.bn.eval()  # a deliberately frozen BN inside a model in training mode
    net.conv.bias.requires_grad_(False)
    return net


def test_weight_surface_values_and_exact_restoration():
    net = _mixed_state_net()
    before = _state(net)
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(40, 1, 8, 8, generator=gen)
    y = torch.randint(0, 3, (40,), generator=gen)
    dirs = [filter_normalised_direction(net, seed=1), filter_normalised_direction(net, seed=2)]
    ws = weight_surface(
        net, (x, y), dims=2, points=3, directions=dirs, batch_size=16, progress=False
    )
    _assert_same_state(net, before)
    assert ws.loss.shape == ws.accuracy.shape == (3, 3)
    # Known answer: a copy moved by hand to θ + α·d + β·e, in eval mode, gives the same loss.
    for i, j in [(0, 2), (1, 1), (2, 0)]:
        moved = _net()
        moved.load_state_dict(net.state_dict())
        moved.eval()
        with torch.no_grad():
            for p, d1, d2 in zip(moved.parameters(), dirs[0], dirs[1], strict=True):
                p.add_(ws.alpha[i] * d1 + ws.beta[j] * d2)
            logits = moved(x)
        assert ws.loss[i, j] == pytest.approx(
            float(nn.functional.cross_entropy(logits, y)), rel=1e-5
        )
        assert ws.accuracy[i, j] == pytest.approx(float((logits.argmax(1) == y).float().mean()))


def test_weight_surface_restores_the_model_after_an_error():
    net = _mixed_state_net()
    before = _state(net)
    calls = {"n": 0}
    original = net.forward

    def failing(x):
        calls["n"] += 1
        if calls["n"] == 4:
            raise RuntimeError("boom")
        return original(x)

    net.forward = failing
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(8, 1, 8, 8, generator=gen)
    with pytest.raises(RuntimeError, match="boom"):
        weight_surface(
            net, (x, torch.zeros(8, dtype=torch.int64)), dims=2, points=3, progress=False
        )
    assert calls["n"] == 4  # it failed with the weights moved away from θ
    del net.forward
    _assert_same_state(net, before)


def test_adversarial_weight_curve_is_below_clean_accuracy():
    net = _net().eval()
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(30, 1, 8, 8, generator=gen)
    with torch.no_grad():
        y = net(x).argmax(1)  # the model is right on every example at θ
    ws = weight_surface(
        net,
        (x, y),
        dims=1,
        points=3,
        threat="linf:0.3",
        adv_examples=30,
        adv_steps=5,
        progress=False,
    )
    assert ws.accuracy[1] == 1.0
    assert ws.adv_accuracy is not None and ws.adv_loss is not None
    assert (ws.adv_accuracy <= ws.accuracy).all()
    assert (ws.adv_loss >= ws.loss - 1e-6).all()
    assert ws.adv_accuracy[1] < 1.0  # ε = 0.3 on an untrained net breaks something


# ----------------------------------------------------------------------------- masking


@pytest.fixture(scope="module")
def robust_on_trap(mnist_model, mnist_test):
    """Examples APGD-CE leaves robust at ℓ∞ 0.3 behind each gradient-masking trap."""
    out = {}
    x, y = mnist_test.images[:24], mnist_test.labels[:24]
    for name in ("quantised", "blocked"):
        trap = landscape.make_trap(name, mnist_model)
        res = attacks.create("apgd", threat="linf:0.3", steps=10)(trap, x, y)
        rows = res.robust.nonzero().flatten()
        out[name] = (trap, x[rows], y[rows], res.x_adv[rows], rows.tolist())
    return out


@pytest.mark.parametrize("name", ["quantised", "blocked"])
def test_grid_breaks_masked_model_the_attack_left_robust(robust_on_trap, name):
    trap, x, y, x_adv, rows = robust_on_trap[name]
    # the mask works: APGD-CE (zero gradients) leaves most examples the standard model loses
    assert len(rows) >= 15
    ev = landscape_check(
        trap, x, y, "linf:0.3", x_attack=x_adv, indices=rows, points=15, progress=False
    )
    assert ev.fired and len(ev.broken_index) >= len(rows) // 2
    assert {e.source for e in ev.examples} == {"finite-differences"}
    # no usable gradient: the gradient's share is 0, roughness 1, by definition
    assert all(e.roughness == 1.0 for e in ev.examples)
    assert all(e.grid_beats_attack for e in ev.examples if e.broken)
    threat = LinfBall(0.3)
    x_clean = torch.stack([x[rows.index(i)] for i in ev.broken_index])
    assert threat.contains(ev.x_broken, x_clean).all()
    with torch.no_grad():
        pred = trap(ev.x_broken).argmax(1)
    labels = torch.stack([y[rows.index(i)] for i in ev.broken_index])
    assert (pred != labels).all()
    fields = ev.check_fields()
    assert fields is not None and fields["name"] == "landscape-beats-attacks"
    assert fields["evidence"]["broken"] == len(ev.broken_index)


def test_saturated_logits_are_seen_through_the_margin(mnist_model, mnist_test):
    trap = landscape.make_trap("saturated", mnist_model)
    x, y = mnist_test.images[:6], mnist_test.labels[:6]
    s = input_surface(trap, x, y, "linf:0.3", points=9, radius=1.0, progress=False)
    # float32 cross-entropy is exactly flat at confidently classified inputs; the margin is not
    assert set(s.source) == {"margin-gradient"}
    ev = masking_evidence(trap, s)
    assert all(e.roughness == 1.0 for e in ev.examples)


def test_no_gradient_path_falls_back_to_finite_differences(mnist_model, mnist_test):
    from _helpers import Detached  # forward(x) = model(x.detach()): autograd has no path at all

    x, y = mnist_test.images[:3], mnist_test.labels[:3]
    s = input_surface(
        Detached(mnist_model), x, y, "linf:0.3", points=5, fd_samples=20, progress=False
    )
    assert s.source == ["finite-differences"] * 3
    # the same function as the undefended model: the same values along the same direction
    # (b = 0; the random direction differs, the finite differences drew from the generator first)
    plain = input_surface(
        mnist_model, x, y, "linf:0.3", points=5, direction=torch.from_numpy(s.u), progress=False
    )
    np.testing.assert_allclose(
        plain.values["margin"][:, :, 2], s.values["margin"][:, :, 2], rtol=1e-5, atol=1e-5
    )


def test_no_false_alarm_on_a_smooth_model(mnist_model, mnist_test):
    x, y = mnist_test.images[:40], mnist_test.labels[:40]
    res = attacks.create("apgd", threat="l2:1", steps=20)(mnist_model, x, y)
    rows = res.robust.nonzero().flatten()
    assert len(rows) >= 5  # ε = 1 leaves a fair number robust on this model
    ev = landscape_check(
        mnist_model,
        x[rows],
        y[rows],
        "l2:1",
        x_attack=res.x_adv[rows],
        indices=rows.tolist(),
        points=11,
        progress=False,
    )
    assert not ev.fired and ev.check_fields() is None
    assert ev.roughness() < 0.5
    assert {e.source for e in ev.examples} == {"gradient"}


def test_trap_models_change_the_gradient_not_the_function():
    model = _linear(classes=3)
    x = _interior(4).requires_grad_(True)
    plain = model(x)
    blocked = landscape.GradientBlock(model)(x)
    assert torch.equal(blocked, plain)
    (g,) = torch.autograd.grad(blocked.sum(), x)
    assert torch.count_nonzero(g) == 0  # a gradient that exists and is exactly zero
    quantised = landscape.QuantisedInput(model)(x)
    assert torch.equal(quantised, model(torch.round(x * 255) / 255))
    (g,) = torch.autograd.grad(quantised.sum(), x)
    assert torch.count_nonzero(g) == 0
    assert torch.equal(landscape.SaturatedLogits(model, scale=1e4)(x), plain * 1e4)
    noisy = landscape.GaussianNoise(model, sigma=0.1, seed=3)
    first, second = noisy(x), noisy(x)
    assert not torch.equal(first, second)  # every call draws new noise
    assert torch.equal(landscape.GaussianNoise(model, sigma=0.1, seed=3)(x), first)  # seeded
    for cls, bad in [
        (landscape.QuantisedInput, {"levels": 1}),
        (landscape.SaturatedLogits, {"scale": 0.0}),
        (landscape.GaussianNoise, {"sigma": -0.1}),
    ]:
        with pytest.raises(ValueError, match="Invalid"):
            cls(model, **bad)
    assert isinstance(landscape.make_trap("noisy", model), landscape.GaussianNoise)


# ----------------------------------------------------------------------------- bad inputs


def test_bad_inputs_raise_clear_errors():
    model = _linear()
    x, y = _interior(1), torch.tensor([0])
    with pytest.raises(ValueError, match="Unsupported threat.*spatial"):
        input_surface(model, x, y, "spatial:30,3")
    with pytest.raises(ValueError, match="Unsupported threat.*union"):
        input_surface(model, x, y, "union(linf:0.1,l2:1)")
    with pytest.raises(ValueError, match="Invalid eps.*must be > 0"):
        input_surface(model, x, y, "linf:0")
    with pytest.raises(ValueError, match=r"Invalid points: 1 \(must be an integer >= 2\)"):
        input_surface(model, x, y, "linf:0.1", points=1)
    for bad in (0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="Invalid radius"):
            input_surface(model, x, y, "linf:0.1", radius=bad)
    with pytest.raises(ValueError, match="Unknown landscape loss 'hinge'"):
        input_surface(model, x, y, "linf:0.1", loss="hinge")
    with pytest.raises(ValueError, match="outside the input box"):
        input_surface(model, x + 1, y, "linf:0.1")
    with pytest.raises(ValueError, match="Labels out of range"):
        input_surface(model, x, torch.tensor([5]), "linf:0.1", progress=False)
    with pytest.raises(ValueError, match="do not match"):
        input_surface(model, x, torch.tensor([0, 1]), "linf:0.1")
    with pytest.raises(ValueError, match="Invalid t_range"):
        input_slice(model, x, y, x, "linf:0.1", t_range=(1.0, 0.0))
    with pytest.raises(ValueError, match="Invalid points: 1"):
        weight_surface(model, (x, y), points=1)
    with pytest.raises(ValueError, match="Invalid dims: 3"):
        weight_surface(model, (x, y), dims=3)
    with pytest.raises(ValueError, match="Invalid span"):
        weight_surface(model, (x, y), span=(1.0, -1.0))
    with pytest.raises(ValueError, match="Unsupported threat"):
        weight_surface(model, (x, y), threat="spatial:10,1")
    with pytest.raises(TypeError, match="ImageDataset or an \\(images, labels\\) pair"):
        weight_surface(model, x)
    with pytest.raises(ValueError, match="Unknown trap"):
        landscape.make_trap("shiny", model)


# ----------------------------------------------------------------------------- zoo (slow)

_ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.parametrize("threat", ["linf:0.1", "l2:1", "l1:5", "l2:2", "l1:10"])
def test_zoo_standard_grid_breaks_nothing_apgd_left_robust(threat):
    """No false alarm: on a smooth, normally trained model APGD (100 steps) is at least as strong
    as a 21×21 grid search of one plane, so the grid must not break what APGD left robust. The
    ε are ones where APGD leaves examples robust (at linf:0.3 it leaves none on this model)."""
    model = models.load(_ROOT / "zoo" / "standard.pt")
    test = data.load("mnist", "test", limit=100)
    x, y = test.images, test.labels
    res = attacks.create("apgd", threat=threat, steps=100)(model, x, y)
    rows = res.robust.nonzero().flatten()
    assert len(rows) >= 5, len(rows)
    ev = landscape_check(
        model,
        x[rows],
        y[rows],
        threat,
        x_attack=res.x_adv[rows],
        indices=rows.tolist(),
        points=21,
        progress=False,
    )
    assert not ev.fired, ev.broken_index
    assert not any(e.grid_beats_attack for e in ev.examples)
    assert {e.source for e in ev.examples} == {"gradient"}


@pytest.mark.slow
def test_benchmark_scripts_run(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    speed = tmp_path / "speed.json"
    subprocess.run(
        [
            sys.executable,
            str(_ROOT / "benchmarks" / "landscape_speed.py"),
            "--n",
            "2",
            "--points",
            "9",
            "--repeats",
            "1",
            "--weight-points",
            "3",
            "--weight-n",
            "50",
            "--weight-ratio-points",
            "2",
            "--weight-ratio-repeats",
            "1",
            "--json",
            str(speed),
        ],
        check=True,
        env=env,
        cwd=_ROOT,
        capture_output=True,
        timeout=600,
    )
    result = json.loads(speed.read_text())
    assert result["input"]["forward_passes"] == 2 * 81
    assert result["weight"]["forward_passes"] == 9 * 50
    assert result["weight_ratio"]["grid"] == "2x2"
    table = tmp_path / "table.json"
    subprocess.run(
        [
            sys.executable,
            str(_ROOT / "benchmarks" / "masking_table.py"),
            "--n",
            "12",
            "--preset",
            "quick",
            "--points",
            "7",
            "--eot",
            "2",
            "--eot-steps",
            "3",
            "--json",
            str(table),
        ],
        check=True,
        env=env,
        cwd=_ROOT,
        capture_output=True,
        timeout=900,
    )
    rows = {r["trap"]: r for r in json.loads(table.read_text())["rows"]}
    assert set(rows) == {"quantised", "blocked", "saturated", "noisy"}
    for r in rows.values():
        assert 0 <= r["with_landscape_grid"] <= r["reported"] <= 1
        # Per example, the attack that broke it (None: robust, or wrong on the clean input).
        assert len(r["broken_by"]) == 12
        assert sum(r["broken_counts"].values()) == sum(b is not None for b in r["broken_by"])
        assert r["broken_by"].count(None) >= round(12 * r["reported"])
