"""``evaluate`` corrects the number on models that mask gradients, not only flags it: EOT for a
randomised model, the transfer fallback where gradients are zero, and the affine carry-over."""

from pathlib import Path

import pytest
import torch
from _traps import GaussianNoise, ZeroGradient
from click.testing import CliRunner

from multirobust import data, models
from multirobust.cli import main as cli
from multirobust.evaluation import curve, evaluate, presets
from multirobust.evaluation.passes import PassCounter
from multirobust.evaluation.presets import AttackSpec

ZOO = Path(__file__).resolve().parents[1] / "zoo"


# ---------------------------------------------------------------------------- EOT
@pytest.fixture(scope="module")
def robust_model():
    return models.load(ZOO / "pgd-linf.pt").eval()


@pytest.fixture(scope="module")
def first20():
    test = data.load("mnist", "test", limit=20)
    return test.images, test.labels


def test_randomised_model_is_evaluated_with_eot(robust_model, first20):
    """σ = 0.1 input noise around the zoo's ℓ∞-trained model, ℓ∞ 0.3, first 20 test images,
    quick preset without its black box. Measured: 65% with eot_samples=1 (one call per
    gradient and per verdict), 35% with EOT over 10 calls and majority verdicts; the asserted
    gap (≥ 15 points, 3 of 20 examples) is half the measured one."""
    x, y = first20
    quick = presets.get("quick").with_options(queries=0)
    common = dict(threats=["linf:0.3"], preset=quick, progress=False, run_checks=False)
    plain = evaluate(GaussianNoise(robust_model, sigma=0.1, seed=0), x, y, eot_samples=1, **common)
    eot = evaluate(GaussianNoise(robust_model, sigma=0.1, seed=0), x, y, **common)
    assert eot.robust_accuracy["linf:0.3"] <= plain.robust_accuracy["linf:0.3"] - 0.15
    # The report says what was done, with K (the quick preset's 10).
    assert eot.settings["eot"] == {"samples": 10, "verdict": "majority of 10 calls"}
    assert plain.settings["eot"] is None
    (check,) = eot.check("randomised-model")
    assert check.evidence["eot_samples"] == 10 and "switched to expectation" in check.message
    white = [a for a in eot.settings["attacks"]["linf:0.3"] if a["attack"] in ("apgd", "apgd-t")]
    assert white and all(a["options"]["eot_samples"] == 10 for a in white)


def test_curves_of_a_randomised_model_use_eot_like_the_table(robust_model, first20):
    """The same noisy model and images as above, as an accuracy-vs-ε curve at ε = 0.3: the
    curve must not contradict the table's EOT number. Measured: 55% with eot_samples=1, 35%
    with EOT over 10 calls (the table's 35%); asserted: at least 10 points lower (2 of 20
    examples, half the measured gap)."""
    from multirobust.evaluation import curve

    x, y = first20
    quick = presets.get("quick").with_options(queries=0)
    common = dict(threat_type="linf", eps_list=[0.0, 0.3], preset=quick, progress=False)
    noisy = GaussianNoise(robust_model, sigma=0.1, seed=0)
    plain = curve(noisy, x, y, eot_samples=1, **common)
    eot = curve(GaussianNoise(robust_model, sigma=0.1, seed=0), x, y, **common)
    assert plain.eot_samples == 1 and eot.eot_samples == 10
    assert eot.accuracy[1] <= plain.accuracy[1] - 0.10
    deterministic = curve(robust_model, x[:4], y[:4], eot_samples=20, **common)
    assert deterministic.eot_samples == 1  # no EOT where outputs do not change
    with pytest.raises(ValueError, match="Invalid eot_samples"):
        curve(robust_model, x[:2], y[:2], eot_samples=0, **common)


def test_deterministic_model_gets_no_eot(robust_model, first20):
    x, y = first20
    rep = evaluate(
        robust_model,
        x[:4],
        y[:4],
        threats=["linf:0.1"],
        attacks=["apgd"],
        progress=False,
        run_checks=False,
        eot_samples=20,
    )
    assert rep.settings["eot"] is None
    assert "eot_samples" not in rep.settings["attacks"]["linf:0.1"][0]["options"]


@pytest.mark.parametrize("bad", [0, -3, 2.5, True])
def test_invalid_eot_samples(robust_model, first20, bad):
    x, y = first20
    with pytest.raises(ValueError, match="Invalid eot_samples"):
        evaluate(robust_model, x[:2], y[:2], threats=["linf:0.1"], eot_samples=bad)


def test_cli_passes_eot_samples(tmp_path):
    result = CliRunner().invoke(cli, ["evaluate", "--help"])
    assert result.exit_code == 0 and "--eot-samples" in result.output
    result = CliRunner().invoke(
        cli,
        [
            "evaluate",
            "--checkpoint",
            str(ZOO / "pgd-linf.pt"),
            "--threat",
            "linf:0.1",
            "--out",
            str(tmp_path),
            "--eot-samples",
            "0",
        ],
    )
    assert result.exit_code != 0 and "--eot-samples" in result.output


# ---------------------------------------------------------------------------- transfer
def test_transfer_breaks_what_zero_gradients_hide(mnist_model, mnist_test):
    """The suite's small_cnn behind a zero-gradient layer, ℓ∞ 0.2, first 30 test images,
    quick preset without its black box. Measured: APGD-CE and APGD-T break nothing (96.7%
    robust, the clean accuracy); the transfer fallback (surrogate distilled with 150 steps)
    breaks 17 (40%), while the bare model falls to 0%. Asserted: it breaks at least 8."""
    x, y = mnist_test.images[:30], mnist_test.labels[:30]
    trap = ZeroGradient(mnist_model)
    quick = presets.get("quick").with_options(queries=0, transfer_distill_steps=150)
    # No landscape grid (it runs by default on masked gradients): the transfer alone.
    common = dict(threats=["linf:0.2"], progress=False, run_checks=False, landscapes=0)
    off = evaluate(trap, x, y, preset=quick.with_options(transfer=False), **common)
    on = evaluate(trap, x, y, preset=quick, **common)
    counts = on.threats["linf:0.2"].broken_counts()
    assert counts["apgd-ce"] == counts["apgd-t"] == 0  # the gradient is zero: they cannot move
    assert counts["transfer"] >= 8
    assert on.robust_accuracy["linf:0.2"] == pytest.approx(
        off.robust_accuracy["linf:0.2"] - counts["transfer"] / 30
    )
    assert "transfer" not in off.threats["linf:0.2"].attacks
    # It runs after the white-box attacks and only where the gradient is masked.
    spec = on.settings["attacks"]["linf:0.2"][2]
    assert spec["attack"] == "transfer" and spec["only_masked_gradients"] is True
    # The black-box check sees it as what it is: an attack that did not need the gradient.
    assert on.check("black-box-beats-white-box")


def test_transfer_does_not_run_where_gradients_are_fine(mnist_model, mnist_test):
    x, y = mnist_test.images[:8], mnist_test.labels[:8]
    quick = presets.get("quick").with_options(queries=0, steps=2, target_classes=0)
    common = dict(threats=["linf:0.02"], progress=False, run_checks=False)
    on = evaluate(mnist_model, x, y, preset=quick, **common)
    off = evaluate(mnist_model, x, y, preset=quick.with_options(transfer=False), **common)
    out = on.threats["linf:0.02"]
    assert "transfer" in out.attacks and sum(out.robust) > 0  # examples were left to it
    # It never ran: no example had a masked gradient, so no query and no pass was spent on it.
    assert out.queries == off.threats["linf:0.02"].queries
    assert out.robust == off.threats["linf:0.02"].robust


def test_a_given_twin_transfers_to_every_still_robust_example(mnist_model, mnist_test):
    """The zero-gradient trap again, with its undefended twin given as the surrogate: PGD on the
    twin runs on every example the white-box attacks left, judged on the trap. The bare model
    falls to 0% at ℓ∞ 0.2 (test above), and the trap's outputs are the twin's, so a transfer
    from the exact twin breaks nearly everything. Measured: 29 of the 29 correctly classified
    (robust accuracy 0%); asserted: at least 25."""
    x, y = mnist_test.images[:30], mnist_test.labels[:30]
    trap = ZeroGradient(mnist_model)
    quick = presets.get("quick").with_options(queries=0, transfer=False)
    common = dict(threats=["linf:0.2"], progress=False, run_checks=False, preset=quick)
    before = {k: v.clone() for k, v in mnist_model.state_dict().items()}
    report = evaluate(trap, x, y, surrogate=mnist_model, **common)
    counts = report.threats["linf:0.2"].broken_counts()
    assert counts["apgd-ce"] == counts["apgd-t"] == 0
    assert counts["transfer-surrogate"] >= 25
    spec = report.settings["attacks"]["linf:0.2"][2]
    assert spec["label"] == "transfer-surrogate" and "only_masked_gradients" not in spec
    assert spec["options"]["surrogate"].startswith(f"{type(mnist_model).__name__} sha256:")
    assert all(torch.equal(before[k], v) for k, v in mnist_model.state_dict().items())


def test_a_surrogate_that_does_not_fit_is_refused_before_any_attack(mnist_model, mnist_test):
    x, y = mnist_test.images[:4], mnist_test.labels[:4]
    wrong_classes = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 3))
    with pytest.raises(ValueError, match=r"Invalid surrogate: it outputs \(3,\) per example"):
        evaluate(mnist_model, x, y, threats=["linf:0.1"], surrogate=wrong_classes, progress=False)
    wrong_input = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(100, 10))
    with pytest.raises(ValueError, match="cannot take the evaluation's inputs"):
        evaluate(mnist_model, x, y, threats=["linf:0.1"], surrogate=wrong_input, progress=False)
    with pytest.raises(ValueError, match="with attacks=, list it yourself"):
        evaluate(mnist_model, x, y, threats=["linf:0.1"], attacks=["pgd"],
                 surrogate=mnist_model, progress=False)  # fmt: skip


def test_cli_surrogate_checkpoint(tmp_path):
    result = CliRunner().invoke(
        cli,
        ["evaluate", "--checkpoint", str(ZOO / "pgd-linf.pt"), "--surrogate",
         str(ZOO / "standard.pt"), "--threat", "linf:0.3", "--n", "6", "--preset", "quick",
         "--no-curves", "--quiet", "--out", str(tmp_path)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    import json

    report = json.loads((tmp_path / "report.json").read_text())
    labels = [a["label"] for a in report["settings"]["attacks"]["linf:0.3"]]
    assert "transfer-surrogate" in labels
    missing = tmp_path / "nothing.pt"
    result = CliRunner().invoke(
        cli,
        ["evaluate", "--checkpoint", str(ZOO / "pgd-linf.pt"), "--surrogate", str(missing),
         "--threat", "linf:0.3", "--n", "2", "--out", str(tmp_path / "b")],
    )  # fmt: skip
    assert result.exit_code != 0 and "nothing.pt" in result.output


def test_masked_gradients_get_a_longer_black_box_run_and_the_grid(mnist_model, mnist_test):
    """The zero-gradient trap, ℓ∞ 0.2, first 30 images, quick preset without the transfer and
    with a 50-query Square: the longer Square (1,000 queries) runs on the examples whose
    gradient is masked and breaks more; the landscape grid runs on every example still robust
    (nobody asked for it); and the zero-gradients check says what was done and what it broke.
    Measured: Square 50 breaks 5, the longer run 24, the grid 0."""
    x, y = mnist_test.images[:30], mnist_test.labels[:30]
    trap = ZeroGradient(mnist_model)
    quick = presets.get("quick").with_options(
        transfer=False, queries=50, black_box_again=0, masked_queries=1000
    )
    rep = evaluate(trap, x, y, threats=["linf:0.2"], preset=quick, progress=False,
                   run_checks=False, landscape_points=5)  # fmt: skip
    out = rep.threats["linf:0.2"]
    counts = out.broken_counts()
    assert out.attacks[-1] == "square-masked"  # the grid is listed only where it broke one
    assert counts.get("square-masked", 0) >= 8, counts
    assert rep.settings["landscapes"] == {"examples": 30, "points": 5, "why": "masked gradients"}
    (check,) = rep.check("zero-gradients")
    assert "What the evaluation did" in check.message and "square-masked" in check.message
    broke = check.evidence["gradient_free_broke"]["linf:0.2"]
    # The grid searched the examples still robust after the attacks (when any were left).
    searched = ["landscape"] if sum(out.robust) + counts.get("landscape", 0) else []
    assert broke == {k: counts.get(k, 0) for k in ["square", "square-masked", *searched]}
    assert check.evidence["masked_only_attacks"] == {"linf:0.2": ["square-masked"]}
    # landscapes=0: no grid, even here.
    none = evaluate(trap, x[:6], y[:6], threats=["linf:0.2"], preset=quick, progress=False,
                    run_checks=False, landscapes=0)  # fmt: skip
    assert "landscape" not in none.threats["linf:0.2"].attacks and "landscapes" not in none.settings


def test_no_grid_and_no_longer_run_where_gradients_are_fine(mnist_model, mnist_test):
    x, y = mnist_test.images[:8], mnist_test.labels[:8]
    quick = presets.get("quick").with_options(transfer=False, queries=20, masked_queries=500)
    common = dict(threats=["linf:0.02"], progress=False, run_checks=False)
    on = evaluate(mnist_model, x, y, preset=quick, **common)
    off = evaluate(mnist_model, x, y, preset=quick.with_options(masked_queries=0), **common)
    out = on.threats["linf:0.02"]
    assert "square-masked" in out.attacks and sum(out.robust) > 0
    assert out.queries == off.threats["linf:0.02"].queries  # it never ran
    assert "landscapes" not in on.settings and "landscape" not in out.attacks
    assert on.check("zero-gradients") == []


def _curve_passes(model, x, y, masked):
    counting = PassCounter(model)
    quick = presets.get("quick").with_options(transfer=False, queries=20, masked_queries=masked)
    c = curve(counting, x, y, threat_type="linf", eps_list=[0.05], progress=False, preset=quick)
    return counting.forward_passes, c.accuracy


def test_curves_skip_the_longer_black_box_where_gradients_are_fine(mnist_model, mnist_test):
    x, y = mnist_test.images[:8], mnist_test.labels[:8]
    with_run, without = _curve_passes(mnist_model, x, y, 2000), _curve_passes(mnist_model, x, y, 0)
    # It never ran: only the gradient test's one pass over the examples left.
    assert with_run[1] == without[1]
    assert with_run[0] <= without[0] + len(y)


def test_curves_run_the_black_box_again_only_after_a_run_that_broke_something(
    mnist_model, mnist_test
):
    """At ε = 0.001 Square breaks nothing, so its "again" runs (square-2, ...) never start, as
    in the table; before, the curve ran them all regardless."""
    x, y = mnist_test.images[:8], mnist_test.labels[:8]

    def passes(again):
        counting = PassCounter(mnist_model)
        quick = presets.get("quick").with_options(
            transfer=False, queries=20, masked_queries=0, black_box_again=again
        )
        c = curve(
            counting, x, y, threat_type="linf", eps_list=[0.001], progress=False, preset=quick
        )
        return counting.forward_passes, c.accuracy

    with_again, without = passes(2), passes(0)
    assert with_again == without
    assert without[1][0] > 0.5  # nothing broke: the case where the reruns are skipped


@pytest.mark.slow
def test_curves_run_the_longer_black_box_where_gradients_are_masked(mnist_model, mnist_test):
    x, y = mnist_test.images[:8], mnist_test.labels[:8]
    trap = ZeroGradient(mnist_model)
    assert _curve_passes(trap, x, y, 2000)[0] > _curve_passes(trap, x, y, 0)[0] + 2000


# ---------------------------------------------------------------------------- carry-over
def test_affine_carries_its_members_outcomes_over(mnist_model, mnist_test):
    """A deliberately weak affine attack (1 step, λ ∈ {0, 1}) next to APGD on its members: the
    examples the members' attacks break are broken under the affine set, which contains them,
    so its accuracy is ≤ each member's, example by example."""
    x, y = mnist_test.images[:24], mnist_test.labels[:24]
    a, b = "linf:0.1", "l2:1"
    affine = f"affine({a},{b})"
    rep = evaluate(
        mnist_model,
        x,
        y,
        threats=[affine, a, b],  # listed first: the runner still attacks the members first
        attacks={
            a: [AttackSpec("apgd-ce", "apgd", {"steps": 20})],
            b: [AttackSpec("apgd-ce", "apgd", {"steps": 20})],
            affine: [AttackSpec("weak", "affine", {"steps": 1, "lambdas": 2})],
        },
        progress=False,
        run_checks=False,
    )
    out = rep.threats[affine]
    for member in (a, b):
        m = rep.threats[member]
        assert all(m_r or not r for m_r, r in zip(m.robust, out.robust, strict=True))
        assert rep.robust_accuracy[affine] <= rep.robust_accuracy[member]
    # The carried-over members are listed first among the "attacks" that broke examples.
    assert out.attacks == [f"carry-over ({a})", f"carry-over ({b})", "weak"]
    counts = out.broken_counts()
    carried = counts.get(f"carry-over ({a})", 0) + counts.get(f"carry-over ({b})", 0)
    # Measured: the weak attack alone leaves 62.5% robust, above the ℓ∞ member's 54.2%; with
    # the carry-over 10 examples come from the ℓ∞ member and the affine number is 54.2%.
    # At least 3 carried over leaves a wide margin.
    assert carried >= 3, counts
    # A carried example's parameter is its endpoint: λ = 1 for the first member, 0 the second.
    lams = {
        lab: p[0]
        for lab, p in zip(out.broken_by, out.params, strict=True)
        if lab is not None and lab.startswith("carry-over")
    }
    assert all(v == (1.0 if a in lab else 0.0) for lab, v in lams.items())
    assert rep.union_accuracy <= min(rep.robust_accuracy.values())


def test_affine_alone_carries_nothing(mnist_model, mnist_test):
    x, y = mnist_test.images[:6], mnist_test.labels[:6]
    affine = "affine(linf:0.1,l2:1)"
    rep = evaluate(
        mnist_model,
        x,
        y,
        threats=[affine],
        attacks=[AttackSpec("weak", "affine", {"steps": 1, "lambdas": 2})],
        progress=False,
        run_checks=False,
    )
    assert not any(
        lab is not None and lab.startswith("carry-over") for lab in rep.threats[affine].broken_by
    )


def test_affine_threat_contains_its_members():
    from multirobust.threats import parse

    t = parse("affine(linf:0.1,l2:1)")
    assert [str(m) for m in t.subsets()] == ["linf:0.1", "l2:1"]
    assert parse("linf:0.1").subsets() == ()
