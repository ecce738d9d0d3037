"""Certification: known answers on linear models, soundness of the bounds on small networks,
bad inputs, determinism, the union, the runner (resume), the report and the training methods."""

import json
import math

import pytest
import torch
from scipy.stats import binom, norm
from torch import nn

from multirobust import certify, models
from multirobust.certify import (
    ABSTAIN,
    CertificationReport,
    Noise,
    Smooth,
    UnsupportedLayerError,
    bound_margins,
    interval_bounds,
    verified_radius,
    verify,
)
from multirobust.certify.stats import lower_bound
from multirobust.models.architectures import PreActBlock
from multirobust.threats import L1Ball, L2Ball, LinfBall


def _linear_binary(w: torch.Tensor, b: float) -> nn.Module:
    """Two logits whose difference is w·x + b: class 0 iff w·x + b > 0 (inputs (N, d))."""
    lin = nn.Linear(w.numel(), 2)
    with torch.no_grad():
        lin.weight.copy_(torch.stack([w / 2, -w / 2]))
        lin.bias.copy_(torch.tensor([b / 2, -b / 2]))
    return lin.eval()


# ----------------------------------------------------------------------- smoothing: known answers


def test_gaussian_smoothing_of_a_linear_classifier_is_the_linear_classifier_with_its_radius():
    # For f(x) = [w·x + b > 0], P(f(x + η) = f(x)) = Φ(|w·x + b| / (σ‖w‖)) > ½, so g = f and the
    # ℓ2 radius Cohen et al.'s theorem gives with the exact p_A is |w·x + b| / ‖w‖ (tight).
    torch.manual_seed(0)
    d, sigma, n, alpha = 20, 0.5, 100_000, 0.001
    w = torch.randn(d)
    b = 0.1
    x = torch.rand(6, d)
    margin = x @ w + b
    true = (margin.abs() / w.norm()).double()
    keep = (true > 0.1 * sigma) & (true < 1.5 * sigma)  # away from a tie and from the cap
    x, margin, true = x[keep], margin[keep], true[keep]
    assert x.shape[0] >= 3
    smooth = Smooth(_linear_binary(w, b), Noise("gaussian", sigma), batch_size=4096)
    res = smooth.certify(x, n0=100, n=n, alpha=alpha, generator=torch.Generator().manual_seed(1))
    expected_class = (margin < 0).long().tolist()
    assert res.prediction == expected_class
    for r, t in zip(res.radius, true.tolist(), strict=True):
        p_a = norm.cdf(t / sigma)
        # The certified radius is below the true one (it fails with probability ≤ α), and above
        # what a count at the 1e-6 quantile of Binomial(n, p_A) would give: the Clopper–Pearson
        # slack at this n. Both are margins no floating-point detail can cross.
        worst_count = int(binom.ppf(1e-6, n, p_a))
        floor = sigma * norm.ppf(lower_bound(worst_count, n, alpha))
        assert floor <= r < t
        assert t - r < 0.05 * sigma  # the slack at n = 100,000 is small
    assert res.cap == pytest.approx(sigma * norm.ppf(alpha ** (1 / n)))


@pytest.mark.parametrize("name", ["uniform", "laplace"])
def test_l1_smoothing_of_a_one_coordinate_classifier_meets_the_true_l1_radius(name):
    # f(x) = [x_0 − 0.5 > 0]: the true ℓ1 (and ℓ∞) radius is |x_0 − 0.5|. For uniform noise
    # p_A = ½ + m/(2λ), so 2λ(p_A − ½) = m; for Laplace p_A = 1 − ½e^{−m/λ}, so
    # −λ log(2(1 − p_A)) = m: both certificates are tight with the exact p_A (Yang et al. 2020).
    lam = 1.0
    w = torch.zeros(8)
    w[0] = 1.0
    model = _linear_binary(w, -0.5)
    x = torch.rand(4, 8)
    x[:, 0] = torch.tensor([0.9, 0.75, 0.2, 0.05])
    true = (x[:, 0] - 0.5).abs()
    smooth = Smooth(model, f"{name}:{lam}", batch_size=8192)
    res = smooth.certify(x, n=100_000, generator=torch.Generator().manual_seed(3))
    assert res.prediction == [0, 0, 1, 1]
    for r, t in zip(res.radius, true.tolist(), strict=True):
        assert r < t
        assert t - r < 0.06  # Clopper–Pearson slack at n = 100,000 for these p_A
    assert smooth.noise.norm == "l1"


def test_a_constant_classifier_is_certified_exactly_at_the_cap():
    class Constant(nn.Module):
        def forward(self, x):
            out = torch.zeros(x.shape[0], 3)
            out[:, 1] = 1.0
            return out

    n, alpha = 1000, 0.01
    for noise in (Noise("gaussian", 0.25), Noise("uniform", 1.0), Noise("laplace", 0.5)):
        res = Smooth(Constant(), noise).certify(torch.zeros(2, 4), n0=10, n=n, alpha=alpha)
        assert res.prediction == [1, 1]
        assert res.radius[0] == pytest.approx(noise.radius_cap(n, alpha), rel=1e-9)
        assert res.cap == pytest.approx(noise.radius_cap(n, alpha), rel=1e-12)


def test_noise_radius_formulas_and_thresholds_are_inverse():
    g, u, lap = Noise("gaussian", 0.5), Noise("uniform", 2.0), Noise("laplace", 0.5)
    assert g.radius(0.8) == pytest.approx(0.5 * norm.ppf(0.8))
    assert u.radius(0.8) == pytest.approx(2 * 2.0 * 0.3)
    assert lap.radius(0.8) == pytest.approx(-0.5 * math.log(2 * 0.2))
    for noise in (g, u, lap):
        assert noise.radius(0.5) == 0.0 and noise.radius(0.3) == 0.0
        for r in (0.1, 0.4):
            assert noise.radius(noise.threshold(r)) == pytest.approx(r)


def test_predict_abstains_on_a_tie_and_answers_a_clear_case():
    class Coin(nn.Module):  # f(x + η) = [η_0 > 0]: a fair coin, g undefined
        def forward(self, x):
            return torch.stack([x[:, 0], -x[:, 0]], 1)

    smooth = Smooth(Coin(), "gaussian:1.0")
    pred = smooth.predict(torch.tensor([[0.0], [5.0]]), n=2000, alpha=0.001)
    assert pred.tolist() == [ABSTAIN, 0]


def test_noise_is_drawn_in_chunks_and_counts_every_sample():
    model = _linear_binary(torch.ones(5), 0.0)
    smooth = Smooth(model, "gaussian:0.25", batch_size=7)
    counts = smooth.sample_counts(torch.full((5,), 0.1), 100, torch.Generator().manual_seed(0))
    assert int(counts.sum()) == 100


def test_same_seed_gives_the_same_certificate():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 4)).eval()
    x = torch.rand(3, 1, 4, 4)
    smooth = Smooth(model, "gaussian:0.5", batch_size=64)

    def run(seed):
        return smooth.certify(x, n0=20, n=500, generator=torch.Generator().manual_seed(seed))

    a, b, c = run(5), run(5), run(6)
    assert (a.prediction, a.radius, a.p_lower) == (b.prediction, b.radius, b.p_lower)
    assert a.p_lower != c.p_lower


def test_sequential_certification_stops_early_and_never_beats_the_true_radius():
    torch.manual_seed(0)
    d, sigma = 10, 0.5
    w = torch.randn(d)
    model = _linear_binary(w, 0.0)
    x = torch.rand(4, d) - 0.5
    true = ((x @ w).abs() / w.norm()).tolist()
    smooth = Smooth(model, Noise("gaussian", sigma), batch_size=4096)
    target = 0.05
    res = smooth.certify_sequential(
        x, [target], n_max=102_400, futility_alpha=0.001, generator=torch.Generator().manual_seed(2)
    )
    for r, t, used in zip(res.radius, true, res.samples, strict=True):
        assert r < t
        if t > 2 * target:  # clearly certifiable: decided long before n_max
            assert r >= target and used < 10_000
    assert res.cap < Noise("gaussian", sigma).radius_cap(102_400, 0.001)  # α split over looks
    assert certify.checkpoints(100, 1000) == [100, 200, 400, 800, 1000]


# --------------------------------------------------------------------------- bad inputs


def test_bad_smoothing_settings_are_clear_errors():
    model = _linear_binary(torch.ones(3), 0.0)
    x = torch.rand(2, 3)
    with pytest.raises(ValueError, match="sigma"):
        Noise("gaussian", 0.0)
    with pytest.raises(ValueError, match="sigma"):
        Smooth(model, "gaussian:-0.5")
    with pytest.raises(ValueError, match="lambda"):
        Noise("laplace", float("nan"))
    with pytest.raises(ValueError, match="Unknown noise"):
        Noise("cauchy", 1.0)
    smooth = Smooth(model, "gaussian:0.25")
    with pytest.raises(ValueError, match="n0"):
        smooth.certify(x, n0=200, n=100)
    for alpha in (0.0, 1.0, 1.5, -0.1):
        with pytest.raises(ValueError, match="alpha"):
            smooth.certify(x, n0=10, n=100, alpha=alpha)
    with pytest.raises(ValueError, match="alpha"):
        smooth.predict(x, n=100, alpha=2.0)
    with pytest.raises(ValueError, match="NaN"):
        smooth.certify(torch.tensor([[0.1, float("nan"), 0.2]]), n0=10, n=100)
    with pytest.raises(ValueError, match="radii"):
        smooth.certify_sequential(x, [0.0])


def test_bounds_refuse_unsupported_layers_naming_them_and_nan_inputs():
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 4), nn.Softmax(dim=1), nn.Linear(4, 2))
    x = torch.rand(2, 1, 2, 2)
    y = torch.tensor([0, 1])
    with pytest.raises(UnsupportedLayerError, match=r"'2' \(Softmax\)"):
        verify(model, x, y, "linf:0.1")

    class Custom(nn.Module):
        def forward(self, x):
            return x

    with pytest.raises(UnsupportedLayerError, match="Model Custom"):
        interval_bounds(Custom(), x, "linf:0.1")
    nested = nn.Sequential(
        nn.Flatten(), nn.Sequential(nn.Linear(4, 3), nn.Upsample(scale_factor=2))
    )
    with pytest.raises(UnsupportedLayerError, match=r"'1\.1' \(Upsample\)"):
        verify(nested, x, y, "l2:0.1", "crown-ibp")
    ok = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    with pytest.raises(ValueError, match="NaN"):
        verify(ok, torch.full((1, 1, 2, 2), float("nan")), y[:1], "linf:0.1")
    with pytest.raises(ValueError, match="ℓ∞, ℓ2 and ℓ1 balls"):
        verify(ok, x, y, "spatial:10,2")
    with pytest.raises(ValueError, match="Unknown bound method"):
        verify(ok, x, y, "linf:0.1", "deeppoly")
    bn = nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.BatchNorm1d(3), nn.Linear(3, 2)).train()
    with pytest.raises(UnsupportedLayerError, match="batch statistics"):
        interval_bounds(bn, x, "linf:0.1")


# --------------------------------------------------------------------------- bounds: known answers


def test_ibp_on_a_linear_layer_is_exact():
    torch.manual_seed(0)
    lin = nn.Linear(6, 3)
    model = nn.Sequential(nn.Flatten(), lin).eval()
    x = 0.3 + 0.4 * torch.rand(4, 1, 2, 3)  # ε below keeps the box [0, 1] inactive
    eps = 0.05
    b = interval_bounds(model, x, LinfBall(eps))
    w = lin.weight.detach()
    center = model(x).detach()
    spread = eps * w.abs().sum(1)
    torch.testing.assert_close(b.lower, center - spread)
    torch.testing.assert_close(b.upper, center + spread)
    # ... and attained: x + ε sign(w_i) reaches the upper bound of logit i.
    for i in range(3):
        corner = x + eps * torch.sign(w[i]).view(1, 1, 2, 3)
        torch.testing.assert_close(model(corner)[:, i].detach(), b.upper[:, i])


def test_l2_margin_bound_of_a_linear_model_is_the_exact_distance_to_the_boundary():
    torch.manual_seed(1)
    w = torch.randn(12)
    model = nn.Sequential(nn.Flatten(), _linear_binary(w, 0.05)).eval()
    x = 0.4 + 0.2 * torch.rand(5, 1, 3, 4)
    margin = model(x).detach()
    y = margin.argmax(1)
    eps = 0.02
    low = bound_margins(model, x, y, L2Ball(eps))
    exact = (margin[:, 0] - margin[:, 1]).abs() - eps * w.norm()
    other = 1 - y
    torch.testing.assert_close(low.gather(1, other[:, None]).squeeze(1), exact)
    # The verified radius found by bisection is within the grid step of the true radius.
    true = (margin[:, 0] - margin[:, 1]).abs() / w.norm()
    r = verified_radius(model, x, y, "l2", upper=1.0, steps=14)
    assert bool(((true.double() - r) >= 0).all()) and bool(((true.double() - r) < 2e-4).all())


def _small_nets():
    torch.manual_seed(3)
    nets = {
        "conv-relu-pool": models.create("madry_cnn", input_size=8, mean=[0.5], std=[0.25]),
        "softplus": models.create("small_cnn", input_size=8, activation="softplus"),
        "silu": models.create("small_cnn", input_size=8, activation="silu"),
        "gelu": models.create("small_cnn", input_size=8, activation="gelu"),
        "resnet-block": nn.Sequential(
            models.Normalize([0.5], [0.3]),
            nn.Conv2d(1, 4, 3, padding=1),
            PreActBlock(4, 8, 2, "relu"),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.AvgPool2d(2),
            nn.Flatten(),
            nn.Linear(8 * 2 * 2, 5),
        ),
    }
    for net in nets.values():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):  # non-trivial running statistics
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.data.uniform_(-1.5, 1.5)  # negative scales too
        net.eval()
    return nets


@pytest.mark.parametrize("name", list(_small_nets()))
def test_bounds_contain_every_sampled_output_on_small_networks(name):
    net = _small_nets()[name]
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(6, 1, 8, 8, generator=gen)
    with torch.no_grad():
        y = net(x).argmax(1)
        for threat in (LinfBall(0.03), L2Ball(0.3), L1Ball(1.0)):
            b = interval_bounds(net, x, threat)
            ibp = bound_margins(net, x, y, threat, "ibp")
            crown = bound_margins(net, x, y, threat, "crown-ibp")
            # CROWN-IBP keeps the better of its bound and IBP's: never looser.
            assert bool((crown >= ibp - 1e-5).all())
            for _ in range(30):
                xs = threat.random_init(x, gen)
                z = net(xs)
                # 1e-4: float32 rounding of sums over a few hundred terms, far below the gaps.
                assert bool((z >= b.lower - 1e-4).all() and (z <= b.upper + 1e-4).all())
                m = z.gather(1, y[:, None]) - z
                assert bool((m >= crown - 1e-4).all())


def test_full_crown_is_sound_and_tighter_than_ibp_on_a_normally_trained_net():
    torch.manual_seed(4)
    net = models.create("small_cnn", input_size=8).eval()
    x = torch.rand(4, 1, 8, 8)
    with torch.no_grad():
        y = net(x).argmax(1)
    threat = LinfBall(0.02)
    ibp = bound_margins(net, x, y, threat, "ibp")
    full = bound_margins(net, x, y, threat, "crown")
    assert bool((full >= ibp - 1e-5).all()) and float((full - ibp).mean()) > 0
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for _ in range(30):
            z = net(threat.random_init(x, gen))
            assert bool((z.gather(1, y[:, None]) - z >= full - 1e-4).all())


# --------------------------------------------------------------------------- union, runner, report


def test_norm_conversions_cover_the_contained_balls():
    d = 784
    assert certify.covered_eps("l2", 1.0, math.inf, d) == pytest.approx(1 / 28)
    assert certify.covered_eps("l2", 1.0, 1.0, d) == 1.0
    assert certify.covered_eps("l1", 2.0, 2.0, d) == pytest.approx(2 / 28)
    assert certify.covered_eps("l1", 2.0, math.inf, d) == pytest.approx(2 / 784)
    assert certify.union_certified({"a": [True, True, False], "b": [True, False, False]}) == [
        True,
        False,
        False,
    ]


def _tiny_problem():
    torch.manual_seed(0)
    net = models.create("small_cnn", input_size=8, num_classes=3).eval()
    x = torch.rand(6, 1, 8, 8)
    with torch.no_grad():
        y = net(x).argmax(1)
    y[0] = (y[0] + 1) % 3  # one misclassified example
    return net, x, y


@pytest.mark.slow  # ~40 s; the certify command's test covers resume in the default suite
def test_certify_reports_per_threat_and_union_and_resumes_without_recomputing(tmp_path):
    net, x, y = _tiny_problem()
    threats = ["linf:0.002", "l2:0.05", "l1:0.1"]
    kwargs = dict(
        threats=threats,
        smoothing=["gaussian:0.1", "laplace:0.1"],
        bounds=["ibp", "crown-ibp"],
        n0=10,
        n=200,
        batch_size=50,
        bound_batch_size=4,
        progress=False,
        resume_dir=tmp_path / "partial",
    )
    report = certify.certify(net, x, y, **kwargs)
    assert set(report.methods) == {
        "ibp",
        "crown-ibp",
        "smoothing gaussian:0.1",
        "smoothing laplace:0.1",
    }
    for m in report.methods.values():
        assert set(m.certified) == set(threats)
        assert m.union == [all(c) for c in zip(*m.certified.values(), strict=True)]
        assert m.union_accuracy <= min(m.certified_accuracy.values())
        assert not any(col[0] for col in m.certified.values())  # the misclassified one
    crown, ibp = report.methods["crown-ibp"], report.methods["ibp"]
    for t in threats:
        assert crown.certified_accuracy[t] >= ibp.certified_accuracy[t]
    g = report.methods["smoothing gaussian:0.1"]
    assert g.classifier == "smoothed" and g.cap["l2"] == pytest.approx(
        Noise("gaussian", 0.1).radius_cap(200, 0.001)
    )
    # Resume: every item comes from the folder, no layer of the model runs again.
    calls = []
    hooks = [m.register_forward_hook(lambda *a: calls.append(1)) for m in net.modules()]
    again = certify.certify(net, x, y, **kwargs)
    for h in hooks:
        h.remove()
    assert calls == []

    def numbers(r):
        return {k: {f: v for f, v in m.items() if f != "seconds"} for k, m in r.items()}

    assert numbers(again.to_dict()["methods"]) == numbers(report.to_dict()["methods"])
    with pytest.raises(ValueError, match="different certification"):
        certify.certify(net, x, y, **{**kwargs, "n": 300})


def test_certify_checks_everything_before_working():
    net, x, y = _tiny_problem()
    with pytest.raises(ValueError, match="n0"):
        certify.certify(net, x, y, threats=["l2:0.1"], smoothing=["gaussian:0.1"], n0=10, n=5)
    with pytest.raises(ValueError, match="sigma"):
        certify.certify(net, x, y, threats=["l2:0.1"], smoothing=["gaussian:0"])
    with pytest.raises(ValueError, match="Nothing to certify"):
        certify.certify(net, x, y, threats=["l2:0.1"], bounds=[])
    bad = nn.Sequential(nn.Flatten(), nn.Linear(64, 3), nn.LogSoftmax(1))
    with pytest.raises(UnsupportedLayerError, match="LogSoftmax"):
        certify.certify(bad, x, y, threats=["l2:0.1"], bounds=["ibp"])
    nan = x.clone()
    nan[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        certify.certify(net, nan, y, threats=["l2:0.1"], bounds=["ibp"])


class _FakeOutcome:
    def __init__(self, robust):
        self.robust = robust


class _FakeEvaluation:
    """What attach_empirical reads from an EvaluationReport (duck-typed)."""

    def __init__(self, labels, robust, threats):
        self.n = len(labels)
        self.labels = labels
        self.threats = {t: _FakeOutcome(robust) for t in threats}
        self.robust_accuracy = {t: sum(robust) / len(robust) for t in threats}
        self.union_accuracy = sum(robust) / len(robust)
        self.clean_accuracy = 1.0
        self.clean_correct = [True] * len(labels)
        self.curves = []
        self.settings = {"preset": {"name": "quick"}}


def test_report_round_trips_renders_and_flags_a_certified_example_an_attack_broke(tmp_path):
    net, x, y = _tiny_problem()
    report = certify.certify(
        net, x, y, threats=["linf:0.0002"], bounds=["ibp"], progress=False, radius_steps=4
    )
    flags = report.methods["ibp"].certified["linf:0.0002"]
    assert any(flags)
    robust = list(flags)
    report.attach_empirical(_FakeEvaluation(y.tolist(), robust, ["linf:0.0002"]))
    assert report.checks == []
    broken = [False] * len(robust)
    report.attach_empirical(_FakeEvaluation(y.tolist(), broken, ["linf:0.0002"]))
    assert [c["name"] for c in report.checks] == ["certified-but-broken"]
    report.to_json(tmp_path / "certify.json")
    again = CertificationReport.from_json(tmp_path / "certify.json")
    assert again.summary() == report.summary()
    html = report.to_html(tmp_path / "certify.html")
    assert 'id="certified"' in html and 'id="plot-linf"' in html and "certified-but-broken" in html
    data = json.loads((tmp_path / "certify.json").read_text())
    assert data["format"] == "multirobust-certification"
    with pytest.raises(ValueError, match="other examples"):
        report.attach_empirical(_FakeEvaluation([0] * 3, [True] * 3, ["linf:0.0002"]))


def test_summaries_for_the_evaluation_report_and_leaderboard():
    net, x, y = _tiny_problem()
    report = certify.certify(
        net,
        x,
        y,
        threats=["linf:0.0002", "l2:0.02"],
        bounds=["ibp", "crown-ibp"],
        smoothing=["gaussian:0.1"],
        n0=10,
        n=100,
        progress=False,
        radius_steps=0,
    )
    cols = certify.leaderboard_columns(report)
    assert set(cols) >= {"certified[linf:0.0002]", "certified[union]", "smoothed[l2:0.02]"}
    assert (
        cols["certified[linf:0.0002]"]
        == report.methods["crown-ibp"].certified_accuracy["linf:0.0002"]
    )

    class Ev:
        settings = {"model_sha256": report.settings["model_sha256"], "data_sha256": "other"}

    with pytest.raises(ValueError, match="different examples"):
        certify.attach_to_evaluation(Ev(), report)
    Ev.settings["data_sha256"] = report.settings["data_sha256"]
    summary = certify.attach_to_evaluation(Ev(), report)
    assert Ev.settings["certified"] is summary and summary["n"] == 6


# --------------------------------------------------------------------------- training methods


def test_training_methods_noise_and_ibp_are_registered_and_validated():
    from multirobust.training import TrainConfig, get_method
    from multirobust.training.config import ConfigError

    assert {"noise", "ibp"} <= set(__import__("multirobust.training", fromlist=["x"]).methods())
    assert get_method("ibp").threat_count == (1, 1)
    with pytest.raises(ConfigError, match="sigma"):
        TrainConfig(method="noise", noise="gaussian:0").validate(check_data=False)
    with pytest.raises(ConfigError, match="kappa"):
        TrainConfig(method="ibp", kappa=1.5).validate(check_data=False)


def test_ibp_loss_bounds_the_clean_loss_and_its_schedule_ramps_kappa():
    from multirobust.training import TrainConfig, get_method
    from multirobust.training.ibp import ibp_loss, kappa_at
    from multirobust.training.noise import noise_loss

    torch.manual_seed(0)
    net = models.create("small_cnn", input_size=8)
    x, y = torch.rand(8, 1, 8, 8), torch.randint(0, 10, (8,))
    clean = ibp_loss(net, x, y, "linf:0.0", kappa=0.5)
    robust = ibp_loss(net, x, y, "linf:0.1", kappa=0.0)
    assert float(robust.detach()) > float(
        clean.detach()
    )  # the worst case over the ball bounds the clean loss
    assert kappa_at(0.5, 0.0) == 1.0 and kappa_at(0.5, 0.5) == 0.75 and kappa_at(0.5, 1.0) == 0.5
    step = get_method("ibp").build(TrainConfig(method="ibp", threats=["linf:0.1"], kappa=0.5), [])
    step.eps_scale = 0.25
    assert step._scaled() == {"threat": LinfBall(0.025), "kappa": 0.875}
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    loss = step(net, opt, x, y, torch.Generator())
    assert torch.isfinite(loss)
    g = torch.Generator().manual_seed(0)
    a = noise_loss(net, x, y, "gaussian:0.25", generator=g)
    b = noise_loss(net, x, y, "gaussian:0.25", generator=torch.Generator().manual_seed(0))
    assert float(a.detach()) == float(b.detach())
