"""Progress bars of the long commands: a total, the phase in the title, and the end at 100%.

The bars are recorded (total, titles, every update) rather than read from the terminal: what
tqdm draws depends on how fast the machine is.
"""

import importlib
import re
from pathlib import Path

import torch
from tqdm import tqdm

from multirobust import data, models
from multirobust.attacks.universal import universal_perturbation
from multirobust.robustness.optimizer_study import optimizer_study
from multirobust.training import TrainConfig, fit, robust_accuracy, train_standard

ZOO = Path(__file__).resolve().parents[1] / "zoo"


class _Recorded(tqdm):
    """A tqdm bar that also records its total, titles and every update, whatever the display
    interval lets it draw (which depends on the machine's speed)."""

    bars: list["_Recorded"] = []

    def __init__(self, *args, **kwargs):
        self.updates, self.titles = [], []
        super().__init__(*args, **kwargs)
        self.titles.append(self.desc)
        _Recorded.bars.append(self)

    def update(self, n=1):
        self.updates.append(n)
        return super().update(n)

    def set_description(self, desc=None, refresh=True):
        self.titles.append(desc)
        return super().set_description(desc, refresh)


def _recorded(monkeypatch, module):
    _Recorded.bars = []
    monkeypatch.setattr(importlib.import_module(module), "tqdm", _Recorded)
    return _Recorded.bars


def test_quickstart_training_bar_has_total_epoch_and_eta(monkeypatch):
    bars = _recorded(monkeypatch, "multirobust.training.standard")
    torch.manual_seed(0)
    model = models.for_dataset("small_cnn", "mnist")
    train = data.load("mnist", "train", limit=256)
    train_standard(model, train, epochs=2, batch_size=64, progress=True)
    (bar,) = bars
    assert bar.total == 512 and bar.n == 512  # every image of both epochs
    assert bar.titles[-2:] == ["train epoch 1/2", "train epoch 2/2"]
    assert bar.updates == [64] * 8
    assert re.search(r"512/512 \[\d\d:\d\d<00:00", str(bar))  # elapsed < remaining (ETA)


def test_fit_bars_cover_the_run_and_each_held_out_check(tmp_path, monkeypatch):
    run_bars = _recorded(monkeypatch, "multirobust.training.fit")
    monkeypatch.setattr("multirobust.training.overfitting.tqdm", _Recorded)
    cfg = TrainConfig(
        method="pgd", threats=["linf:0.1"], epochs=2, limit=128, batch_size=64, steps=1,
        eval_n=30, eval_steps=1, out=str(tmp_path), progress=True,
    )  # fmt: skip
    fit(cfg)
    run, held1, held2 = sorted(run_bars, key=lambda b: b.total != 256)
    # one bar over both epochs: its total is every image of the run, its title the epoch
    assert run.total == 256 and run.n == 256 and run.updates == [64] * 4
    assert "epoch 1/2" in run.titles and run.titles[-1] == "epoch 2/2"
    # one bar per held-out check: 30 images x 1 threat
    assert [(b.titles[0], b.total, b.n) for b in (held1, held2)] == [
        ("epoch 1/2 held-out PGD-1", 30, 30),
        ("epoch 2/2 held-out PGD-1", 30, 30),
    ]


def test_held_out_bar_counts_every_attack_on_every_image(monkeypatch):
    bars = _recorded(monkeypatch, "multirobust.training.overfitting")
    model = models.load(ZOO / "standard.pt")
    test = data.load("mnist", "test", limit=20)
    robust_accuracy(
        model, test.images, test.labels, ["linf:0.1", "l2:1"], steps=1, batch_size=10,
        single_step=True, progress=True, desc="check",
    )  # fmt: skip
    (bar,) = bars
    assert bar.total == 80 and bar.n == 80  # 20 images x 2 threats x (PGD + single step)
    assert bar.updates == [10] * 8  # after each attack on each batch, not once per batch


def test_universal_bar_names_the_pass_and_ends_at_100_percent_when_the_target_is_met(
    monkeypatch,
):
    bars = _recorded(monkeypatch, "multirobust.attacks.universal")
    model = models.load(ZOO / "standard.pt")
    x = data.load("mnist", "test", limit=64).images
    res = universal_perturbation(
        model, x, "linf:0.3", max_passes=5, target_fooling_rate=0.01, check_every=16,
        batch_size=16, progress=True,
    )  # fmt: skip
    assert res.passes == 1  # stopped early, in the first of five passes
    (bar,) = bars
    assert bar.titles[-1] == "universal linf:0.3 pass 1/5"
    assert bar.n == bar.total < 5 * 64  # ended at 100%, not at a fraction of five passes


def test_optimizer_study_bar_moves_inside_a_batch(monkeypatch):
    bars = _recorded(monkeypatch, "multirobust.robustness.optimizer_study")
    model = models.load(ZOO / "standard.pt")
    test = data.load("mnist", "test", limit=8)
    optimizer_study(
        model, test.images, test.labels, attack="cw-l2", optimizers=("adam", "sgd"),
        options={"steps": 5, "binary_search_steps": 2}, batch_size=8, progress=True,
    )  # fmt: skip
    (bar,) = bars
    budget = 8 * (5 * 2 + 2)  # examples x (steps x searches + clean and final passes)
    assert bar.total == 2 * budget and bar.n == 2 * budget
    assert bar.titles[-2:] == ["cw-l2 adam (1/2)", "cw-l2 sgd (2/2)"]
    # one batch per optimiser, yet the bar moved with each of the attack's forward passes
    assert len(bar.updates) > 10


def test_evaluate_bars_move_per_attack_and_end_at_their_totals(monkeypatch):
    # Issue 12: the bar sat at 0/100 for minutes (one update per batch of 500), the checks
    # after the attacks had none, and a curve's bar stopped at 6/7.
    from multirobust.evaluation import Preset, curve, evaluate

    bars = _recorded(monkeypatch, "multirobust.evaluation.runner")
    monkeypatch.setattr("multirobust.evaluation.curves.tqdm", _Recorded)
    model = models.load(ZOO / "standard.pt")
    test = data.load("mnist", "test", limit=12)
    tiny = Preset("tiny", steps=2, target_classes=1, queries=10, rotations=3, translations=1)
    threats = ["linf:0.1", "l2:1"]
    report = evaluate(
        model, test.images, test.labels, threats=threats, preset=tiny, batch_size=12,
        progress=True,
    )  # fmt: skip
    attacks, checks = bars[0], bars[1]
    per_example = sum(len(report.threats[t].attacks) for t in threats)
    assert per_example > 2  # several attacks per threat, so one batch makes several moves
    assert attacks.total == 12 * per_example and attacks.n == attacks.total
    assert len(attacks.updates) >= per_example  # after each attack, one batch though it is
    assert checks.titles[0] == "checks after the attacks"
    assert checks.total == 2 + 2 and checks.n == checks.total  # large ε per norm, 2x steps
    curve(model, test.images, test.labels, threat_type="linf", eps_list=[0, 0.1, 0.2],
          preset=tiny, progress=True)  # fmt: skip
    line = bars[-1]
    assert line.n == line.total > 3  # every attack at each ε, the last one included
    assert line.titles[-1].startswith("curve linf ε=0.2 (3/3)")


def test_evaluate_bar_moves_inside_each_attack_with_its_forward_passes(monkeypatch):
    # Issue 12 item 6: per example within a batch, not per attack on the whole batch. One
    # batch, one threat: the bar must move many times while each attack runs, never past the
    # attack's share before it returns, and end exactly at its total.
    from multirobust.evaluation import Preset, evaluate
    from multirobust.evaluation import progress as within

    bars = _recorded(monkeypatch, "multirobust.evaluation.runner")
    shares = []
    real_finish = within.WithinAttack.finish

    def finish(self):
        shares.append(self.moved)  # how far the attack's passes moved the bar on their own
        return real_finish(self)

    monkeypatch.setattr(within.WithinAttack, "finish", finish)
    model = models.load(ZOO / "standard.pt")
    test = data.load("mnist", "test", limit=16)
    preset = Preset("few", steps=20, target_classes=1, queries=0, transfer=False)
    report = evaluate(model, test.images, test.labels, threats=["l2:0.5"], preset=preset,
                      batch_size=16, progress=True)  # fmt: skip
    attacks = bars[0]
    n_attacks = len(report.threats["l2:0.5"].attacks)
    assert attacks.total == 16 * n_attacks and attacks.n == attacks.total
    assert all(isinstance(u, int) and u > 0 for u in attacks.updates)
    # 20 steps of APGD on 16 images at ε = 0.5 (few broken): far more moves than attacks.
    assert len(attacks.updates) >= 5 * n_attacks
    assert shares and max(shares) <= 0.95 * 16  # never ahead of an unfinished attack
    assert max(shares) >= 0.5 * 16  # but most of the way by its passes alone


def test_pass_estimates_learn_from_the_previous_batch():
    from multirobust.evaluation.progress import PassEstimates, WithinAttack, guess_passes

    assert guess_passes({"steps": 100, "restarts": 1, "target_classes": 9}) == 900
    assert guess_passes({"steps": 300, "restarts": 1}) == 300  # Square: steps are queries
    assert guess_passes({"lambdas": 3, "steps": 25, "target_classes": 3, "queries": 300}) == 525
    est = PassEstimates()
    assert est.expected("l2:1", "apgd-ce", {"steps": 10}) == 10
    est.observe("l2:1", "apgd-ce", rows=50, forward_passes=300)  # stopped early: 6 per example
    assert est.expected("l2:1", "apgd-ce", {"steps": 10}) == 6
    moves = []
    bar = WithinAttack(moves.append, share=10, expected=100)
    for _ in range(200):  # twice the expected passes: the bar waits at the cap
        bar(1)
    assert sum(moves) == 9  # floor(0.95 × 10)
    bar.finish()
    assert sum(moves) == 10 and all(isinstance(m, int) for m in moves)


def test_shadow_training_bar_counts_epochs_from_the_workers_logs(tmp_path, monkeypatch):
    # Issue 12 item 6 for `membership`: the bar moved once per finished shadow model (minutes
    # each at the zoo's recipe); it now counts every epoch of every model, read from the
    # models' logs, which the worker processes write once per epoch.
    import json

    from multirobust.privacy import MembershipConfig, MembershipRun
    from multirobust.privacy.shadows import LOGITS, ShadowJob, epochs_done

    job = ShadowJob(folder=str(tmp_path / "m"), dataset="mnist", split="train", pool=[0],
                    train_positions=[0], train={"epochs": 5}, held_out_n=1)  # fmt: skip
    assert epochs_done(job) == 0
    (tmp_path / "m").mkdir()
    rows = [json.dumps({"epoch": e, "train_loss": 1.0}) for e in (1, 2, 3)]
    (tmp_path / "m" / "log.jsonl").write_text("\n".join(rows) + '\n{"epoch": 4, "tr')
    assert epochs_done(job) == 3  # the half-written line is skipped
    (tmp_path / "m" / LOGITS).write_bytes(b"")
    assert epochs_done(job) == 5

    bars = _recorded(monkeypatch, "multirobust.privacy.shadows")
    config = MembershipConfig(pool=48, shadows=4, train={"epochs": 2, "batch_size": 32,
                              "eval_n": 16}, workers=1, progress=True)  # fmt: skip
    MembershipRun.start(tmp_path / "run", config).train_shadows()
    (bar,) = bars
    assert bar.total == 5 * 2  # 4 shadows and the target, 2 epochs each
    assert bar.n == bar.total and bar.titles[-1].startswith("shadow models (5/5 done)")
