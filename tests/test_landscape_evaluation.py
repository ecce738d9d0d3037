"""``evaluate(landscapes=K)``: the grid breaks what the attacks left robust behind a
gradient-masking trap, counts it in the numbers and the report, and fires the check."""

import pytest

from multirobust import landscape
from multirobust.evaluation import EvaluationReport, evaluate
from multirobust.evaluation.landscapes import LANDSCAPE_ATTACK
from multirobust.evaluation.presets import AttackSpec

THREATS = ["linf:0.3", "l2:1"]
# APGD-CE alone: the trap's zero gradient leaves it nothing to follow.
ATTACKS = [AttackSpec("apgd-ce", "apgd", {"steps": 10})]


@pytest.fixture(scope="module")
def trap_reports(mnist_model, mnist_test):
    trap = landscape.make_trap("quantised", mnist_model)
    x, y = mnist_test.images[:24], mnist_test.labels[:24]
    common = dict(threats=THREATS, attacks=ATTACKS, progress=False, run_checks=False)
    # landscapes=0: no grid (on a masked model it would run by itself on every robust example)
    plain = evaluate(trap, x, y, landscapes=0, **common)
    grid = evaluate(trap, x, y, landscapes=8, landscape_points=15, **common)
    return plain, grid


def test_grid_breaks_the_trap_and_the_numbers_say_so(trap_reports):
    plain, grid = trap_reports
    key = "linf:0.3"
    before, after = plain.threats[key], grid.threats[key]
    # the same attacks with the same seeds: every difference is the grid's
    assert all(
        a == b or (a == LANDSCAPE_ATTACK and b is None)
        for a, b in zip(after.broken_by, before.broken_by, strict=True)
    )
    broken = after.broken_counts()[LANDSCAPE_ATTACK]
    # the quantised trap around the suite's small_cnn: APGD-CE leaves >= 15 of 24 robust at
    # ℓ∞ 0.3 and the grid breaks at least half of those (test_landscape.py): of the first 8,
    # at least 2 leaves a wide margin
    assert broken >= 2
    assert sum(after.robust) == sum(before.robust) - broken
    assert grid.robust_accuracy[key] == pytest.approx(plain.robust_accuracy[key] - broken / 24)
    assert grid.union_accuracy <= min(grid.robust_accuracy.values())
    # the grid's points are inside the ball (re-checked with threat.contains, atol 1e-5)
    assert all(
        n is not None and n <= 0.3 + 1e-4
        for n, b in zip(after.norm, after.broken_by, strict=True)
        if b == LANDSCAPE_ATTACK
    )
    checks = grid.check("landscape-beats-attacks")
    (check,) = [c for c in checks if c.threat == key]
    assert check.evidence["broken"] == broken
    assert not plain.check("landscape-beats-attacks") and not plain.landscapes
    assert grid.settings["landscapes"] == {"examples": 8, "points": 15}
    ran = {r["threat"] for r in grid.checks_run if r["name"] == "landscape-beats-attacks"}
    assert ran == set(THREATS)  # listed as run (passed or fired) for every searched ball


def test_report_carries_the_section_through_json_and_html(trap_reports):
    _, grid = trap_reports
    again = EvaluationReport.from_json(grid.to_json())
    assert again.landscapes == grid.landscapes
    assert set(again.landscapes["evidence"]) == set(THREATS)
    page = again.to_html()
    assert '<section id="landscapes">' in page and "landscape-beats-attacks" in page
    assert page.count("<img") >= 2  # the section's figures are embedded, not linked


def test_landscapes_argument_is_checked_before_work(mnist_model, mnist_test):
    x, y = mnist_test.images[:2], mnist_test.labels[:2]
    with pytest.raises(
        ValueError, match=r"Invalid landscapes: -1 \(must be an integer >= 0 or None\)"
    ):
        evaluate(mnist_model, x, y, threats="linf:0.1", landscapes=-1, progress=False)
    with pytest.raises(ValueError, match=r"Invalid landscape_points: 1 \(must be >= 2\)"):
        evaluate(
            mnist_model,
            x,
            y,
            threats="linf:0.1",
            landscapes=1,
            landscape_points=1,
            progress=False,
        )
    # Checked whether or not the grid will run (it may start by itself on a masked model).
    with pytest.raises(ValueError, match=r"Invalid landscape_points: 1 \(must be >= 2\)"):
        evaluate(mnist_model, x, y, threats="linf:0.1", landscape_points=1, progress=False)
