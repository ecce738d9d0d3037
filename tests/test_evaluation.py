"""evaluate(): exact per-threat and union numbers, checks on gradient-masking models, resume,
JSON/HTML reports, curves and the command line."""

import html
import json
import re

import pytest
import torch
from click.testing import CliRunner
from torch import nn

from multirobust import attacks
from multirobust.cli import main
from multirobust.evaluation import EvaluationReport, Preset, curve, evaluate, runner
from multirobust.evaluation.presets import get
from multirobust.threats import LinfBall, parse

# Small budgets: the behaviour under test does not depend on them.
FAST = get("standard").with_options(
    steps=10,
    target_classes=3,
    queries=300,
    rotations=7,
    translations=3,
    affine_lambdas=3,
    affine_steps=10,
    masked_queries=300,
    masked_restarts=1,
)
THREATS = ["linf:0.1", "l2:1", "spatial:20,2", "affine(linf:0.1,l1:5)"]


class Wrap(nn.Module):
    """A trained model behind one of the defences that only mask gradients."""

    def __init__(self, model, kind):
        super().__init__()
        self.model, self.kind = model, kind

    def forward(self, x):
        if self.kind == "saturated":  # softmax underflows: CE gradients are exactly 0
            return self.model(x) * 1e4
        if self.kind == "quantised":  # torch.round has zero gradient everywhere
            return self.model(torch.round(x * 255) / 255)
        if self.kind == "blocked":  # no gradient path at all
            return self.model(x.detach())
        if self.kind == "softmax":
            return self.model(x).softmax(1)
        if self.kind == "noisy":
            return self.model(x + 0.01 * torch.randn_like(x))
        raise AssertionError(self.kind)


def _without_times(report):
    d = report.to_dict()
    d.pop("timings")
    for t in d["threats"].values():
        t.pop("seconds")
    return d


@pytest.fixture(scope="module")
def data(mnist_test):
    return mnist_test.images[:120], mnist_test.labels[:120]


@pytest.fixture(scope="module")
def report(mnist_model, data):
    x, y = data
    return evaluate(mnist_model, x, y, threats=THREATS, preset=FAST, batch_size=60, progress=False)


def test_union_is_the_per_example_worst_case(report, data):
    _, y = data
    assert report.n == len(y) == len(report.union_robust)
    union = [all(t.robust[i] for t in report.threats.values()) for i in range(report.n)]
    assert report.union_accuracy == sum(union) / report.n
    assert report.union_accuracy <= min(report.robust_accuracy.values())
    assert set(report.robust_accuracy) == set(THREATS)
    for key, t in report.threats.items():
        assert report.robust_accuracy[key] == sum(t.robust) / report.n
        # robust implies clean-correct; broken_by names an attack exactly when not robust
        for i in range(report.n):
            assert not t.robust[i] or report.clean_correct[i]
            assert (t.broken_by[i] is not None) == (report.clean_correct[i] and not t.robust[i])
            assert t.broken_by[i] is None or t.broken_by[i] in t.attacks
    # norms within the ball for broken ℓp examples; spatial params within range
    lin = report.threats["linf:0.1"]
    assert all(v <= 0.1 + 1e-5 for v in lin.norm if v is not None)
    assert any(v is not None for v in lin.norm)
    spatial = report.threats["spatial:20,2"]
    for p in spatial.params:
        assert p is None or (abs(p[0]) <= 20 + 1e-4 and max(abs(p[1]), abs(p[2])) <= 2 + 1e-4)
    assert report.clean_accuracy > 0.8
    assert report.robust_accuracy["linf:0.1"] < report.clean_accuracy


def test_per_threat_numbers_equal_evaluating_that_threat_alone(mnist_model, data, report):
    x, y = data
    alone = evaluate(
        mnist_model,
        x,
        y,
        threats="l2:1",
        preset=FAST,
        batch_size=60,
        progress=False,
        run_checks=False,
    )
    assert alone.threats["l2:1"].robust == report.threats["l2:1"].robust
    assert alone.threats["l2:1"].broken_by == report.threats["l2:1"].broken_by
    assert alone.union_accuracy == alone.robust_accuracy["l2:1"]


def test_attacks_run_cheapest_first_only_on_robust_examples(report):
    lin = report.threats["linf:0.1"]
    # The transfer fallback sits after the white-box attacks (it only runs on examples whose
    # gradient is masked, none here).
    # The black box's second run comes after it (only where its first run broke something),
    # and its longer run last (only where the gradient is masked: none here, so none broken).
    again = ["square-2", "square-3", "square-4"]
    assert lin.attacks == [
        "apgd-ce",
        "apgd-t",
        "fab-t",
        "transfer",
        "square",
        *again,
        "square-masked",
    ]
    assert "square-masked" not in lin.broken_by
    counts = lin.broken_counts()
    # nearly everything falls to the first attack; the later ones only see the rest
    later = counts["apgd-t"] + counts["square"] + sum(counts.get(a, 0) for a in again)
    assert counts["apgd-ce"] >= later


@pytest.mark.parametrize(
    "threat, black_box", [("linf:0.3", "square"), ("l2:2", "square"), ("l1:10", "sparse-rs")]
)
def test_every_lp_ensemble_ends_with_a_black_box_attack(threat, black_box):
    specs = get("standard").attacks_for(parse(threat), num_classes=10)
    # AutoAttack's standard suite (APGD-CE, APGD-T, FAB-T), then the black box, and the black
    # box again (another seed) while the run before broke something, up to 3 more runs.
    # Where the input gradient is masked, a longer run of it on those examples only.
    again = [f"{black_box}-{k}" for k in (2, 3, 4)]
    labels = ["apgd-ce", "apgd-t", "fab-t", black_box, *again, f"{black_box}-masked"]
    assert [s.label for s in specs] == labels
    assert [s.white_box for s in specs] == [True, True, True] + [False] * 5
    assert [s.masked_only for s in specs] == [False] * 7 + [True]
    # Square with AutoAttack's standard schedule (p halved at absolute iteration counts).
    expected = {"steps": 5000, "restarts": 1}
    if black_box == "square":
        expected["rescale_schedule"] = False
    assert all(s.options == expected for s in specs[3:7])
    assert specs[7].options == {"steps": 20000, "restarts": 3}
    assert [s.follows for s in specs[3:]] == [None, black_box, *again[:2], None]
    assert [s.label for s in get("quick").attacks_for(parse(threat), 10)][-1] == black_box
    # AutoAttack's ℓ1 version: APGD-CE with 5 restarts. APGD-T is stronger than AutoAttack's:
    # 2 runs per target, 9 targets under ℓ1 too (AutoAttack's ℓ1 version: 1 run, 5 targets).
    l1 = threat.startswith("l1")
    assert specs[0].options["restarts"] == (5 if l1 else 1)
    assert specs[1].options["target_classes"] == 9
    assert specs[1].options["restarts"] == 2
    assert get("quick").attacks_for(parse(threat), 10)[1].options["restarts"] == 1
    with pytest.raises(ValueError, match="Invalid targeted_restarts"):
        get("standard").with_options(targeted_restarts=0)
    # The more-steps check reruns APGD-T (not the FAB-T after it) with twice the steps.
    again = get("standard").more_steps_attack(parse(threat), num_classes=10)
    assert again is not None and again.label == "apgd-t" and again.options["steps"] == 200
    assert get("standard").with_options(queries=0).attacks_for(parse(threat), 10)[-1].white_box


@pytest.mark.parametrize(
    "kind, check",
    [
        ("saturated", "zero-gradients"),
        ("quantised", "black-box-beats-white-box"),
        ("blocked", "no-gradient-path"),
    ],
)
def test_gradient_masking_gets_low_accuracy_and_a_check(mnist_model, data, kind, check):
    x, y = data[0][:60], data[1][:60]
    model = Wrap(mnist_model, kind)
    naive = attacks.create("pgd", threat="linf:0.3", steps=10)
    if kind != "blocked":  # plain CE PGD is fooled by the mask
        assert naive(model, x, y).robust.float().mean() > 0.5
    rep = evaluate(model, x, y, threats=["linf:0.3"], preset=FAST, progress=False)
    assert rep.clean_accuracy > 0.8
    assert rep.robust_accuracy["linf:0.3"] <= 0.05
    names = {c.name for c in rep.checks}
    assert check in names, names
    if kind in ("saturated", "quantised"):
        assert "zero-gradients" in names
        assert "large-eps-not-zero" in names
        (zero,) = rep.check("zero-gradients")
        assert zero.evidence["zero"] > 0.5 * zero.evidence["examples"]


def test_probabilities_are_detected_and_attacked_through_log(mnist_model, data):
    x, y = data[0][:60], data[1][:60]
    model = Wrap(mnist_model, "softmax")
    with pytest.raises(ValueError, match="probabilities"):
        attacks.create("pgd", threat="linf:0.3")(model, x, y)
    rep = evaluate(model, x, y, threats=["linf:0.3"], preset=FAST, progress=False)
    assert [c.name for c in rep.checks] == ["probability-outputs"]
    assert rep.settings["attacked_log_probabilities"] is True
    assert rep.robust_accuracy["linf:0.3"] <= 0.05


def test_randomised_model_is_reported_with_eot_advice(mnist_model, data):
    x, y = data[0][:40], data[1][:40]
    torch.manual_seed(0)
    rep = evaluate(
        Wrap(mnist_model, "noisy"),
        x,
        y,
        threats=["linf:0.3"],
        preset=FAST,
        progress=False,
        run_checks=False,
        eot_samples=5,  # a few: the behaviour under test is the report, not the strength
    )
    (check,) = rep.check("randomised-model")
    assert "expectation over transformation" in check.message.lower()
    assert check.evidence["max_abs_difference"] > 0
    assert check.evidence["eot_samples"] == 5 and rep.settings["eot"]["samples"] == 5


def test_a_weak_ensemble_fires_the_more_steps_check(mnist_model, data):
    x, y = data
    weak = Preset("weak", steps=2, target_classes=0, queries=0)
    rep = evaluate(mnist_model, x, y, threats=["linf:0.1"], preset=weak, progress=False)
    (check,) = rep.check("more-steps-lower-accuracy")
    assert check.evidence["newly_broken"] > 0 and check.evidence["steps"] == 4


def test_results_outside_the_threat_are_rejected_and_reported(mnist_model, data, monkeypatch):
    x, y = data[0][:30], data[1][:30]
    monkeypatch.setattr(
        LinfBall,
        "contains",
        lambda self, xa, x0, atol=1e-5, params=None: torch.zeros(xa.shape[0], dtype=torch.bool),
    )
    rep = evaluate(
        mnist_model, x, y, threats=["linf:0.3"], preset=FAST, progress=False, run_checks=False
    )
    assert rep.robust_accuracy["linf:0.3"] == rep.clean_accuracy
    assert rep.check("outside-threat-model")


def test_resume_gives_the_same_report_without_redoing_batches(
    mnist_model, data, tmp_path, monkeypatch
):
    x, y = data[0][:90], data[1][:90]
    kwargs = dict(
        threats=["linf:0.1", "spatial:20,2"], preset=FAST, batch_size=30, progress=False, seed=5
    )
    full = evaluate(mnist_model, x, y, **kwargs)

    class Stop(Exception):
        pass

    def interrupt(done, total):
        assert total == 3
        if done == 2:
            raise Stop

    with pytest.raises(Stop):
        evaluate(mnist_model, x, y, resume_dir=tmp_path, on_batch=interrupt, **kwargs)
    assert sorted(p.name for p in tmp_path.glob("batch_*.json")) == [
        "batch_00000.json",
        "batch_00001.json",
    ]
    calls = []
    real = runner._run_batch
    monkeypatch.setattr(
        runner, "_run_batch", lambda *a, **k: calls.append(k["batch_index"]) or real(*a, **k)
    )
    resumed = evaluate(mnist_model, x, y, resume_dir=tmp_path, **kwargs)
    assert calls == [2]
    assert _without_times(resumed) == _without_times(full)
    with pytest.raises(ValueError, match="different evaluation.*seed"):
        evaluate(mnist_model, x, y, resume_dir=tmp_path, **{**kwargs, "seed": 6})


def test_json_round_trip(report, tmp_path):
    path = tmp_path / "r.json"
    text = report.to_json(path)
    assert json.loads(text)["format"] == "multirobust-evaluation"
    assert EvaluationReport.from_json(path) == report
    assert EvaluationReport.from_json(text) == report
    out = report.outcome(0)
    assert set(out["threats"]) == set(THREATS)
    with pytest.raises(ValueError, match="Not a multirobust evaluation report"):
        EvaluationReport.from_json('{"format": "other"}')


def test_html_is_self_contained_and_shows_the_numbers(mnist_model, report, data, tmp_path):
    x, y = data
    report.curves.append(
        curve(
            mnist_model,
            x[:50],
            y[:50],
            threat_type="linf",
            eps_list=[0.1, 0, 0.05],
            preset=FAST,
            progress=False,
        )
    )
    page = report.to_html(tmp_path / "r.html")
    assert (tmp_path / "r.html").read_text() == page
    assert not re.search(r"(src|href)=\"(https?:)?//", page)
    assert "<script" not in page
    # the curves, then per example kept: its clean image once and, per threat that broke it,
    # the adversarial image and its perturbation (the examples table of issue 12 item 10)
    kept = {e.index for e in report.examples}
    columns = sorted(kept, key=[e.index for e in report.examples].index)[:8]
    pairs = sum(1 for e in report.examples if e.index in columns)
    assert page.count("data:image/png;base64,") == 1 + len(columns) + 2 * pairs
    assert f"{100 * report.union_accuracy:.2f}%" in page
    for key, acc in report.robust_accuracy.items():
        assert key in page and f"{100 * acc:.2f}%" in page
    assert '"seed": 0' in html.unescape(page)  # the exact settings


def test_curve_reuses_work_and_is_monotone(mnist_model, data, monkeypatch):
    x, y = data[0][:60], data[1][:60]
    sizes = []
    real = attacks.base.Attack.__call__

    def spy(self, model, xs, ys, **kw):
        sizes.append((str(self.threat), xs.shape[0]))
        return real(self, model, xs, ys, **kw)

    monkeypatch.setattr(attacks.base.Attack, "__call__", spy)
    c = curve(
        mnist_model,
        x,
        y,
        threat_type="l2",
        eps_list=[2.0, 0.5, 0.0, 1.0],
        preset=FAST,
        progress=False,
    )
    assert c.eps == [0.0, 0.5, 1.0, 2.0]
    with torch.no_grad():
        clean = float((mnist_model(x).argmax(1) == y).float().mean())
    assert c.accuracy[0] == pytest.approx(clean)
    assert all(a >= b for a, b in zip(c.accuracy, c.accuracy[1:], strict=False))
    # the first attack at each ε only sees the examples still robust at the previous ε
    first = {}
    for threat, size in sizes:
        first.setdefault(threat, size)
    n_robust = [round(a * 60) for a in c.accuracy]
    assert [first[k] for k in ("l2:0.5", "l2:1", "l2:2")] == n_robust[:3]


def test_data_forms_and_errors(mnist_model, mnist_test, data):
    x, y = data[0][:20], data[1][:20]
    small = Preset("tiny", steps=2, target_classes=0, queries=0)
    ds_rep = evaluate(
        mnist_model,
        mnist_test,
        threats="linf:0.1",
        preset=small,
        progress=False,
        run_checks=False,
        batch_size=500,
    )
    assert ds_rep.n == len(mnist_test) and ds_rep.settings["dataset"] == "mnist"
    loader = torch.utils.data.DataLoader(list(zip(x, y, strict=True)), batch_size=7)
    a = evaluate(
        mnist_model, loader, threats="linf:0.1", preset=small, progress=False, run_checks=False
    )
    b = evaluate(
        mnist_model, x, y, threats="linf:0.1", preset=small, progress=False, run_checks=False
    )
    assert a.threats["linf:0.1"].robust == b.threats["linf:0.1"].robust
    with pytest.raises(ValueError, match="Labels y are required"):
        evaluate(mnist_model, x, threats="linf:0.1")
    with pytest.raises(ValueError, match="Unknown preset 'strong'"):
        evaluate(mnist_model, x, y, threats="linf:0.1", preset="strong")
    with pytest.raises(ValueError, match="allows no perturbation"):
        evaluate(mnist_model, x, y, threats=["linf:0"])
    with pytest.raises(ValueError, match="Invalid batch_size"):
        evaluate(mnist_model, x, y, threats=["linf:0.1"], batch_size=0)
    with pytest.raises(ValueError, match="Unknown threat type"):
        evaluate(mnist_model, x, y, threats=["l3:1"])
    with pytest.raises(ValueError, match="Invalid threat_type"):
        curve(mnist_model, x, y, threat_type="spatial", eps_list=[1])


def test_cli_writes_json_and_html_and_resumes(mnist_checkpoint, tmp_path):
    out = tmp_path / "run"
    args = [
        "evaluate",
        "--checkpoint",
        str(mnist_checkpoint),
        "--dataset",
        "mnist",
        "--threat",
        "linf:0.3",
        "--threat",
        "spatial:20,2",
        "--n",
        "40",
        "--preset",
        "quick",
        "--out",
        str(out),
        "--resume",
        "--batch-size",
        "20",
        "--quiet",
    ]
    first = CliRunner().invoke(main, args)
    assert first.exit_code == 0, first.output
    assert "union (worst case)" in first.output
    rep = EvaluationReport.from_json(out / "report.json")
    assert rep.n == 40 and set(rep.robust_accuracy) == {"linf:0.3", "spatial:20,2"}
    assert [c.threat_type for c in rep.curves] == ["linf"]
    assert (out / "report.html").read_text().startswith("<!DOCTYPE html>")
    assert len(list((out / "partial").glob("batch_*.json"))) == 2
    again = CliRunner().invoke(main, args)
    assert again.exit_code == 0, again.output
    assert EvaluationReport.from_json(out / "report.json").robust_accuracy == rep.robust_accuracy
    bad = CliRunner().invoke(main, args[:5] + ["--threat", "l3:1", "--out", str(out)])
    assert bad.exit_code != 0 and "Unknown threat type" in bad.output


def test_the_black_box_runs_again_in_a_chain_each_run_after_the_one_before():
    specs = get("standard").attacks_for(parse("l2:2"), 10)
    chain = [(s.label, s.follows) for s in specs if s.attack == "square" and not s.masked_only]
    assert chain == [
        ("square", None),
        ("square-2", "square"),
        ("square-3", "square-2"),
        ("square-4", "square-3"),
    ]
    l1 = [s.label for s in get("standard").attacks_for(parse("l1:10"), 10)]
    assert l1[-5:] == ["sparse-rs", "sparse-rs-2", "sparse-rs-3", "sparse-rs-4", "sparse-rs-masked"]
    once = Preset("once", black_box_again=True).attacks_for(parse("linf:0.1"), 10)
    assert [s.label for s in once if s.attack == "square"] == ["square", "square-2"]
    assert not any(s.follows for s in Preset("none").attacks_for(parse("linf:0.1"), 10))
    for bad in (-1, 1.5, "2"):
        with pytest.raises(ValueError, match="Invalid black_box_again"):
            Preset("bad", black_box_again=bad)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="Invalid masked_queries"):
            Preset("bad", masked_queries=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="Invalid masked_restarts"):
        Preset("bad", masked_queries=100, masked_restarts=0)
    assert not any(s.masked_only for s in Preset("none").attacks_for(parse("linf:0.1"), 10))


def test_a_following_attack_runs_only_where_the_one_it_follows_broke_something():
    # The black box's second run (`follows`): on a batch where the first run broke nothing it
    # costs nothing; where it broke something it runs on what is left, with its own seed.
    from multirobust.evaluation.presets import AttackSpec

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
    x = torch.rand(12, 1, 4, 4)
    y = model(x).argmax(1)  # every example correct
    first = AttackSpec("first", "square", {"steps": 1}, white_box=False)
    again = AttackSpec("again", "square", {"steps": 40}, white_box=False, follows="first")
    tiny = evaluate(model, x, y, threats=["linf:0.001"], attacks=[first, again],
                    progress=False, run_checks=False)  # fmt: skip
    alone = evaluate(model, x, y, threats=["linf:0.001"], attacks=[first], progress=False,
                     run_checks=False)  # fmt: skip
    out = tiny.threats["linf:0.001"]
    assert out.broken_counts().get("first", 0) == 0
    assert out.queries == alone.threats["linf:0.001"].queries  # the second never ran
    assert tiny.settings["attacks"]["linf:0.001"][1]["only_after"] == "first"
    large = evaluate(model, x, y, threats=["linf:0.5"], attacks=[first, again],
                     progress=False, run_checks=False)  # fmt: skip
    counts = large.threats["linf:0.5"].broken_counts()
    assert 0 < counts.get("first", 0) < 12  # measured: 9, and the second run breaks 3 more
    alone = evaluate(model, x, y, threats=["linf:0.5"], attacks=[first], progress=False,
                     run_checks=False)  # fmt: skip
    assert large.threats["linf:0.5"].queries > alone.threats["linf:0.5"].queries
