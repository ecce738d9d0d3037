"""minimal_distortion(): exact answers on a linear model (box included), certificates and
consistency on MNIST, minimum-norm attacks kept when smaller, the report section, errors."""

import html
import json
import math
from dataclasses import dataclass

import pytest
import torch
from torch import nn

from multirobust import attacks
from multirobust.attacks import registry
from multirobust.attacks.base import MinimumNormAttack
from multirobust.evaluation import EvaluationReport, evaluate
from multirobust.evaluation.presets import get
from multirobust.robustness import minimal_distortion
from multirobust.robustness.minimal import DEFAULT_ATTACK_OPTIONS, default_max_eps
from multirobust.threats import L2Ball

D = 12
FAST_OPTIONS = {"loss": "margin", "steps": 20}


class Linear2(nn.Module):
    """Two classes with logits (0, w·x + b): class 1 where w·x + b > 0."""

    def __init__(self, w, b):
        super().__init__()
        self.w = nn.Parameter(w)
        self.b = nn.Parameter(b)

    def forward(self, x):
        s = x.flatten(1) @ self.w + self.b
        return torch.stack([torch.zeros_like(s), s], 1)


def _exact(w, b, x, y, norm):
    """The true minimal distortion to flip the linear classifier, inside the box [0, 1].

    The adversary moves each coordinate against the class by at most its room to the box face;
    the problem min ‖δ‖ s.t. Σ|w_i| δ_i ≥ m, 0 ≤ δ_i ≤ room_i is solved in closed form: ℓ1
    greedily by |w_i| (fractional knapsack), ℓ∞ and ℓ2 by bisection on the KKT multiplier.
    """
    out = []
    for xi, yi in zip(x.double(), y, strict=True):
        s = float(xi @ w + b)
        pred = int(s > 0)
        if pred != int(yi):
            out.append(0.0)
            continue
        m = abs(s)
        down = (w > 0) if pred == 1 else (w < 0)  # coordinates that must go down
        room = torch.where(down, xi, 1 - xi)
        a = w.abs()
        if float((a * room).sum()) < m:
            out.append(math.inf)
            continue
        if norm == "l1":
            total, left = 0.0, m
            for k in torch.argsort(a, descending=True).tolist():
                step = min(float(room[k]), left / float(a[k]))
                total += step
                left -= step * float(a[k])
                if left <= 1e-15:
                    break
            out.append(total)
            continue
        lo, hi = 0.0, 1e6
        for _ in range(200):
            lam = (lo + hi) / 2
            move = torch.minimum(lam * (a if norm == "l2" else torch.ones_like(a)), room)
            if float((a * move).sum()) >= m:
                hi = lam
            else:
                lo = lam
        move = torch.minimum(hi * (a if norm == "l2" else torch.ones_like(a)), room)
        out.append(float(move.norm(p=2 if norm == "l2" else math.inf)))
    return torch.tensor(out, dtype=torch.float64)


@pytest.fixture(scope="module")
def linear():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(D, generator=g, dtype=torch.float64)
    x = 0.1 + 0.8 * torch.rand(30, D, generator=g, dtype=torch.float64)
    s = x @ w
    b = -s.mean()  # no example exactly on the boundary
    y = (s + b > 0).long()
    y[:3] = 1 - y[:3]  # three misclassified examples
    return Linear2(w, b.clone()), w, float(b), x, y


@pytest.mark.parametrize("norm", ["linf", "l2", "l1"])
def test_linear_known_answer_with_the_box(linear, norm):
    model, w, b, x, y = linear
    rtol = 0.05
    res = minimal_distortion(
        model,
        x,
        y,
        norm,
        max_eps={"linf": 1.0, "l2": 4.0, "l1": 12.0}[norm],
        rtol=rtol,
        attack_options=FAST_OPTIONS,
        min_norm_attacks=False,
    )
    exact = _exact(w, b, x, y, norm)
    d = res.distances
    assert d.dtype == torch.float64 and d.shape == (30,)
    assert torch.equal(d[:3], torch.zeros(3, dtype=torch.float64))
    assert res.found_by[:3] == ["clean"] * 3
    pos = exact > 0
    # No adversarial can be closer than the decision boundary ...
    assert bool((d[pos] >= exact[pos] * (1 - 1e-5)).all()), (d, exact)
    # ... and the bisection gets within its grid spacing of it (or to the grid's lowest
    # level, max_eps / 1000 by default, for examples closer than that).
    bound = torch.clamp(exact[pos] * (1 + rtol), min=res.eps_min * (1 + 1e-6))
    assert bool((d[pos] <= bound).all()), d / exact
    assert res.median == float(d.median())


def test_certificates_and_consistency_on_mnist(mnist_model, mnist_test):
    x, y = mnist_test.images[:10], mnist_test.labels[:10]
    res = minimal_distortion(
        mnist_model, x, y, "l2", attack_options=FAST_OPTIONS, seed=1, min_norm_attacks=False
    )
    d = res.distances
    broken = torch.isfinite(d) & (d > 0)
    assert int(broken.sum()) >= 8
    rows = broken.nonzero().flatten()
    # The kept adversarials certify the distances: misclassified, inside the box, at norm d.
    with torch.no_grad():
        pred = mnist_model(res.x_adv[rows]).argmax(1)
    assert bool((pred != y[rows]).all())
    assert float(res.x_adv.min()) >= 0 and float(res.x_adv.max()) <= 1
    norms = (res.x_adv[rows] - x[rows]).flatten(1).double().norm(dim=1)
    assert torch.allclose(norms, d[rows], rtol=1e-5, atol=1e-6)
    assert torch.equal(res.x_adv[~broken], x[~broken])
    # The same attack, fresh (3 random starts), succeeds above the reported minimum. Not at
    # 1.05x: there a fresh APGD run missed example 5 on another processor (its floating-point
    # results decide which random start lands where), a boundary, not a property. At 1.5x
    # the ball holds a known adversarial with half its radius to spare.
    for i in rows.tolist():
        threat = f"l2:{1.5 * float(d[i])!r}"
        atk = attacks.create("apgd", threat=threat, restarts=3, **FAST_OPTIONS)
        assert bool(atk(mnist_model, x[i : i + 1], y[i : i + 1]).success.all()), i
    # Implied robust accuracy is the fraction of distances above ε.
    assert res.robust_accuracy(0.0) == float((d > 0).double().mean())
    assert res.robust_accuracy([0.0, math.inf]) == [res.robust_accuracy(0.0), 0.0]
    counts, edges = res.histogram(bins=5)
    assert sum(counts) == int(broken.sum()) and len(edges) == 6
    assert edges[-1] == pytest.approx(float(d[broken].max()))


def test_never_broken_is_inf_and_median_is_attained(linear):
    model, w, b, x, y = linear
    res = minimal_distortion(
        model, x, y, "linf", max_eps=1e-3, attack_options=FAST_OPTIONS, min_norm_attacks=False
    )
    exact = _exact(w, b, x, y, "linf")
    assert bool(torch.isinf(res.distances[exact > 1e-3]).all())
    assert res.never_broken == float(torch.isinf(res.distances).double().mean()) > 0.5
    assert res.median == math.inf
    assert res.misclassified == pytest.approx(3 / 30)
    summary = res.to_dict()
    assert summary["median"] == math.inf and summary["n"] == 30
    assert json.loads(json.dumps(summary))["distances"][:3] == [0.0, 0.0, 0.0]


@dataclass(frozen=True, kw_only=True)
class _ExactLinear(MinimumNormAttack):
    """A stand-in minimum-norm attack: the exact ℓ2 step to just past the boundary."""

    name = "deepfool-l2"
    supported_threats = (L2Ball,)

    def _run(self, ctx):
        model = ctx.model.model
        w, b = model.w.detach(), model.b.detach()
        s = ctx.x.flatten(1) @ w + b
        delta = -(s * 1.001 / w.dot(w))[:, None] * w[None, :]
        points = (ctx.x + delta.view_as(ctx.x)).clamp(0, 1)
        return points, torch.ones(ctx.x.shape[0], dtype=torch.bool)


@dataclass(frozen=True, kw_only=True)
class _Broken(MinimumNormAttack):
    name = "cw-l2"
    supported_threats = (L2Ball,)
    cost = 100

    def _run(self, ctx):
        raise RuntimeError("this attack cannot run here")


def test_min_norm_attacks_are_kept_when_smaller(linear, monkeypatch):
    model, w, b, x, y = linear
    monkeypatch.setitem(registry._REGISTRY, "deepfool-l2", _ExactLinear)
    monkeypatch.setitem(registry._REGISTRY, "cw-l2", _Broken)
    monkeypatch.setitem(registry._REGISTRY, "fab-l2", _Broken)
    res = minimal_distortion(model, x, y, "l2", max_eps=4.0, rtol=0.2, attack_options=FAST_OPTIONS)
    # The failing one is skipped, the working one runs before the bisection.
    assert res.attacks == ["deepfool-l2", "apgd"]
    exact = _exact(w, b, x, y, "l2")
    inside = exact > 0
    # Points whose unconstrained optimum stays in the box: the min-norm result (1.001 × the
    # distance) beats the grid and is kept.
    s = (x @ w + b).abs()
    step = (s / w.dot(w))[:, None] * w.abs()[None, :] * 1.001
    room = torch.minimum(x, 1 - x)
    free = inside & (step <= room).all(1)
    assert int(free.sum()) >= 5
    assert torch.allclose(res.distances[free], exact[free] * 1.001, rtol=1e-6)
    assert all(res.found_by[i] == "deepfool-l2" for i in free.nonzero().flatten().tolist())
    without = minimal_distortion(
        model,
        x,
        y,
        "l2",
        max_eps=4.0,
        rtol=0.2,
        attack_options=FAST_OPTIONS,
        min_norm_attacks=False,
    )
    assert without.attacks == ["apgd"]
    assert bool((res.distances <= without.distances + 1e-12).all())


def test_bad_arguments_raise_clear_errors(linear):
    model, _, _, x, y = linear
    with pytest.raises(ValueError, match="Invalid norm: 'l3'"):
        minimal_distortion(model, x, y, "l3")
    with pytest.raises(ValueError, match="Invalid rtol"):
        minimal_distortion(model, x, y, "l2", rtol=0)
    with pytest.raises(ValueError, match="Invalid max_eps"):
        minimal_distortion(model, x, y, "l2", max_eps=float("nan"))
    with pytest.raises(ValueError, match="Invalid eps_min"):
        minimal_distortion(model, x, y, "l2", max_eps=1.0, eps_min=2.0)
    with pytest.raises(ValueError, match="Unknown attack 'nope'"):
        minimal_distortion(model, x, y, "l2", attack="nope")
    with pytest.raises(ValueError, match="Unknown min_norm_attacks 'nope'"):
        minimal_distortion(model, x, y, "l2", min_norm_attacks=["nope"])
    with pytest.raises(TypeError, match="Unknown option"):
        minimal_distortion(model, x, y, "l2", attack_options={"bogus": 1})
    with pytest.raises(ValueError, match="NaN"):
        minimal_distortion(model, x * float("nan"), y, "l2")
    with pytest.raises(ValueError, match="Labels out of range"):
        minimal_distortion(model, x, y + 5, "l2")
    with pytest.raises(ValueError, match="Invalid batch_size"):
        minimal_distortion(model, x, y, "l2", batch_size=0)


def test_defaults_and_mode_restored(linear):
    model, _, _, x, y = linear
    assert default_max_eps("l2", 784) == 28.0 and default_max_eps("linf", 5) == 1.0
    assert default_max_eps("l1", 784) == 784.0
    assert DEFAULT_ATTACK_OPTIONS["loss"] == "margin"
    model.train()
    opts = {"attack_options": FAST_OPTIONS, "rtol": 0.5, "min_norm_attacks": False}
    res = minimal_distortion(model, x, y, "linf", **opts)
    assert model.training and all(p.requires_grad for p in model.parameters())
    assert torch.equal(x, linear[3])  # input not mutated
    again = minimal_distortion(model, x, y, "linf", **opts)
    assert torch.equal(res.distances, again.distances)  # seeded, reproducible


def test_evaluate_reports_minimal_distortion(mnist_model, mnist_test, tmp_path):
    x, y = mnist_test.images[:10], mnist_test.labels[:10]
    preset = get("quick").with_options(steps=10, queries=0, target_classes=0)
    report = evaluate(
        mnist_model, x, y, threats=["l2:1"], preset=preset, min_norm=("l2",), progress=False
    )
    md = report.minimal_distortion["l2"]
    assert md["n"] == 10 and len(md["distances"]) == 10
    assert md["median"] == float(torch.tensor(md["distances"], dtype=torch.float64).median())
    # Consistent with the ensemble: an example broken at ε = 1 has a distance not far above 1
    # (the search runs another attack, APGD-margin, on a grid of rtol 5%: it may need a grid
    # step or two more than the ensemble did; 1.5 leaves room for that on any processor, and
    # an unbroken example would still read inf), and clean-wrong ones have distance 0.
    outcome = report.threats["l2:1"]
    for i, d in enumerate(md["distances"]):
        if not report.clean_correct[i]:
            assert d == 0
        elif not outcome.robust[i]:
            assert d <= 1.5
    assert report.settings["min_norm"]["norms"] == ["l2"]
    assert "median minimal l2 distortion" in report.summary()
    back = EvaluationReport.from_json(report.to_json(tmp_path / "r.json"))
    assert back.minimal_distortion == report.minimal_distortion
    page = report.to_html()
    assert "Minimal adversarial distortion" in page
    cell = page.split('id="min-distortion-l2">')[1].split("<")[0]
    assert float(html.unescape(cell)) == pytest.approx(md["median"], rel=1e-3)
    plain = evaluate(mnist_model, x, y, threats=["l2:1"], preset=preset, progress=False)
    assert plain.minimal_distortion == {} and "Minimal adversarial" not in plain.to_html()
    with pytest.raises(ValueError, match="Invalid norm"):
        evaluate(mnist_model, x, y, threats=["l2:1"], preset=preset, min_norm=("l5",))


def test_dyadic_split_picks_shared_levels_in_at_most_log2_rounds():
    from multirobust.attacks.minimal import _dyadic_split

    def zeros(v):
        return (v & -v).bit_length() - 1  # trailing zero bits of v > 0

    lo = torch.tensor([a for a in range(-1, 70) for b in range(a + 2, 72)])
    hi = torch.tensor([b for a in range(-1, 70) for b in range(a + 2, 72)])
    mid = _dyadic_split(lo, hi)
    assert bool(((lo < mid) & (mid < hi)).all())
    for a, b, m in zip(lo.tolist(), hi.tolist(), mid.tolist(), strict=True):
        assert zeros(m + 1) == max(zeros(k + 1) for k in range(a + 1, b))
    k = 143  # levels of the default grid (rtol 0.05 over a factor 1000)
    for true in range(-1, k - 1):  # the attack succeeds at level j exactly when j > true
        a, b, rounds = -1, k - 1, 0
        while b - a > 1:
            m = int(_dyadic_split(torch.tensor([a]), torch.tensor([b]))[0])
            a, b = (a, m) if m > true else (m, b)
            rounds += 1
        assert (a, b) == (true, true + 1) and rounds <= math.ceil(math.log2(k))
