"""Membership inference: scores, ROC, the shadow plan, LiRA's known answers, shadow-only
calibration, and (slow) the attacks against small_cnn models trained by the fit loop."""

from __future__ import annotations

import json
import math

import pytest
import torch
from _browser import rendered

from multirobust.privacy import (
    MembershipConfig,
    MembershipRun,
    available_cores,
    lira_offline,
    lira_online,
    logit_confidence,
    loss_score,
    membership_inference,
    membership_plan,
    roc_curve,
    threshold_at_fpr,
)
from multirobust.training import ConfigError

# --------------------------------------------------------------------------- scores and ROC


def test_logit_confidence_is_log_odds_of_the_true_class_and_stays_finite():
    logits = torch.tensor([[2.0, 0.5, -1.0], [0.0, 0.0, 0.0]])
    y = torch.tensor([0, 2])
    p = logits.double().softmax(1)[torch.arange(2), y]
    assert torch.allclose(logit_confidence(logits, y), torch.log(p / (1 - p)))
    assert torch.allclose(loss_score(logits, y), torch.log(p))
    # p_y rounds to 1 in float32; φ stays finite and exact (z_y − log Σ_{j≠y} e^{z_j})
    extreme = torch.tensor([[60.0, 0.0, 0.0]])
    assert logit_confidence(extreme, torch.tensor([0])).item() == pytest.approx(60 - math.log(2))


def test_roc_curve_against_brute_force_with_ties():
    g = torch.Generator().manual_seed(0)
    scores = torch.randint(0, 12, (200,), generator=g).double()  # many ties
    members = torch.rand(200, generator=g) < 0.4
    roc = roc_curve(scores, members)
    for t, fpr, tpr in zip(roc.thresholds[1:], roc.fpr[1:], roc.tpr[1:], strict=True):
        hit = scores >= t
        assert float(fpr) == pytest.approx(float(hit[~members].double().mean()))
        assert float(tpr) == pytest.approx(float(hit[members].double().mean()))
    assert roc.fpr[0] == 0 and roc.tpr[-1] == 1 and roc.fpr[-1] == 1
    assert roc_curve(members.double(), members).auc == pytest.approx(1.0)


def test_threshold_at_fpr_lets_through_at_most_that_share_of_non_members():
    s = torch.arange(1000).double()
    tau = threshold_at_fpr(s, 0.01)
    assert int((s >= tau).sum()) == 10
    assert threshold_at_fpr(torch.zeros(50).double(), 0.1) > 0  # ties: none may pass
    with pytest.raises(ValueError, match="Invalid fpr: 0"):
        threshold_at_fpr(s, 0.0)


def test_plan_puts_every_example_in_exactly_half_of_the_shadows():
    keep = membership_plan(500, 8, seed=3)
    assert keep.shape == (8, 500)
    assert torch.all(keep.sum(0) == 4)
    assert torch.equal(keep, membership_plan(500, 8, seed=3))
    assert not torch.equal(keep, membership_plan(500, 8, seed=4))
    assert 200 < int(keep[0].sum()) < 300
    with pytest.raises(ValueError, match="must be even"):
        membership_plan(10, 5, seed=0)


# --------------------------------------------------------------------------- LiRA known answers


def _synthetic(n: int = 4000, shadows: int = 16, gap: float = 1.0, seed: int = 0):
    """φ per (model, example): example difficulty d_i ~ N(0, 3²) shared by all models, plus
    ``gap`` when the model trained on it, plus N(0, 0.5²) noise. A global threshold confuses
    easy non-members with members; LiRA compares each example with its own difficulty."""
    g = torch.Generator().manual_seed(seed)
    d = 3.0 * torch.randn(n, generator=g)
    keep = membership_plan(n, shadows, seed)
    shadow = (
        d + gap * keep.double() + 0.5 * torch.randn(shadows, n, generator=g, dtype=torch.float64)
    )
    members = torch.rand(n, generator=g) < 0.5
    target = d + gap * members.double() + 0.5 * torch.randn(n, generator=g, dtype=torch.float64)
    return target, shadow, keep, members


def test_lira_beats_a_global_threshold_when_examples_differ_in_difficulty():
    target, shadow, keep, members = _synthetic()
    online = roc_curve(lira_online(target, shadow, keep), members)
    offline = roc_curve(lira_offline(target, shadow, keep), members)
    glob = roc_curve(target, members)
    # The per-example Gaussians are exactly LiRA's model here: gap/σ = 2 gives AUC Φ(2/√2) = 0.92
    # for the likelihood ratio; the global threshold sees a 1-point shift under 3-point spread.
    assert online.auc > 0.88 and offline.auc > 0.85
    assert glob.auc < 0.65
    assert online.tpr_at(1e-2) > glob.tpr_at(1e-2) + 0.2


def test_lira_cannot_tell_members_of_a_model_that_never_saw_them():
    target, shadow, keep, members = _synthetic(gap=1.0)
    g = torch.Generator().manual_seed(9)
    unseen = target - members.double()  # the target trained on none of them
    labels = torch.rand(len(target), generator=g) < 0.5
    roc = roc_curve(lira_online(unseen, shadow, keep), labels)
    # 4000 examples: the AUC of a useless score has a standard deviation of about 0.009.
    assert abs(roc.auc - 0.5) < 0.04


def test_lira_refuses_examples_without_in_or_out_shadows():
    target, shadow, keep, _ = _synthetic(n=10, shadows=4)
    keep[:, 0] = True
    with pytest.raises(ValueError, match="IN some shadow models and OUT of others"):
        lira_online(target, shadow, keep)
    with pytest.raises(ValueError, match="do not match"):
        lira_online(target[:5], shadow, keep)


def _logits_from_phi(phi: torch.Tensor, labels: torch.Tensor, k: int = 10) -> torch.Tensor:
    """Logits whose logit-scaled confidence for ``labels`` is ``phi``: z_y = φ + log(k − 1)."""
    z = torch.zeros(*phi.shape, k, dtype=torch.float64)
    z.scatter_(-1, labels.expand(phi.shape).unsqueeze(-1), (phi + math.log(k - 1)).unsqueeze(-1))
    return z


def test_membership_inference_never_uses_the_targets_members_to_choose_thresholds():
    target, shadow, keep, members = _synthetic(n=2000)
    labels = torch.zeros(2000, dtype=torch.long)
    tl, sl = _logits_from_phi(target, labels), _logits_from_phi(shadow, labels)
    res = membership_inference(tl, labels, members, sl, keep, fprs=(1e-2,))
    flipped = membership_inference(tl, labels, ~members, sl, keep, fprs=(1e-2,))
    for m in ("loss", "lira-offline", "lira-online"):
        a = res.outcomes[m].operating_points[0]
        b = flipped.outcomes[m].operating_points[0]
        assert a["threshold"] == b["threshold"]  # calibrated on shadows only
        assert a["achieved_fpr"] == pytest.approx(b["tpr"])  # same threshold, roles swapped
    point = res.outcomes["lira-online"].operating_points[0]
    # The shadows mimic the target exactly here, so the calibrated threshold keeps its promise
    # up to sampling noise (1% of ~1000 non-members is ~10 ± 3 examples).
    assert point["achieved_fpr"] < 0.03
    assert res.tpr("lira-online", 1e-2) > res.tpr("loss", 1e-2) + 0.2


# --------------------------------------------------------------------------- the run folder


def test_bad_settings_fail_before_any_training(tmp_path):
    with pytest.raises(ConfigError, match="Invalid shadows: 3"):
        MembershipRun.start(tmp_path / "a", MembershipConfig(shadows=3))
    with pytest.raises(ConfigError, match="Unknown membership attack 'lira-x'"):
        MembershipRun.start(tmp_path / "a", MembershipConfig(methods=["lira-x"]))
    with pytest.raises(ConfigError, match="Invalid members: 'first:99'"):
        MembershipRun.start(
            tmp_path / "a",
            MembershipConfig(pool=50, target="zoo/standard.pt", members="first:99"),
        )
    with pytest.raises(ConfigError, match="Invalid fpr: 1.5"):
        MembershipRun.start(tmp_path / "a", MembershipConfig(fprs=[1.5]))
    with pytest.raises(ConfigError, match="Invalid workers: 999"):
        MembershipRun.start(tmp_path / "a", MembershipConfig(workers=999))
    assert not (tmp_path / "a").exists()


def _tiny(**overrides):
    settings = dict(
        pool=64,
        shadows=4,
        train={"epochs": 1, "batch_size": 32, "eval_n": 16},
        workers=1,
        progress=False,
        fprs=[0.1],
    )
    settings.update(overrides)
    return MembershipConfig(**settings)


def test_a_tiny_run_writes_its_report_and_resumes_without_retraining(tmp_path):
    out = tmp_path / "run"
    run = MembershipRun.start(out, _tiny())
    rep = run.run_all()
    assert rep["kind"] == "membership" and rep["pool"] == 64 and rep["target_members"] == 32
    assert set(rep["result"]["attacks"]) == {"loss", "lira-offline", "lira-online"}
    assert len(rep["cost"]["shadow_train_seconds"]) == 4
    saved = json.loads((out / "report.json").read_text())
    assert saved["evidence"]["html"].endswith("report.html")
    # The target's accuracy on its members and on the others, from its logits on the pool.
    logits, keep = run.target_logits(), run.target_members()
    right = (logits.argmax(1) == run.pool.labels).float()
    acc = saved["target_accuracy"]
    assert acc["members"] == pytest.approx(float(right[keep].mean()))
    assert acc["non_members"] == pytest.approx(float(right[~keep].mean()))
    assert 'id="target-accuracy"' in (out / "report.html").read_text()
    assert "<img" in (out / "report.html").read_text()
    seen = rendered(out / "report.html", tmp_path)
    if seen is not None:  # the ROC figure decoded, the table laid out
        assert len(seen["images"]) == 1 and seen["images"][0]["natural"][0] > 200
        assert "LiRA online" in seen["text"] and "TPR @ 10.00% FPR" in seen["text"]
    stamp = (out / "shadow-000" / "model.pt").stat().st_mtime_ns
    with pytest.raises(ConfigError, match="already holds a membership run"):
        MembershipRun.start(out, _tiny())
    with pytest.raises(ConfigError, match="settings differ"):
        MembershipRun.start(out, _tiny(shadows=6), resume=True)
    again = MembershipRun.start(out, _tiny(), resume=True)
    again.train_shadows()
    assert (out / "shadow-000" / "model.pt").stat().st_mtime_ns == stamp


# --------------------------------------------------------------------------- MNIST behaviour


def _overfit(**overrides):
    settings = dict(
        pool=400,
        shadows=8,
        train={"epochs": 20, "batch_size": 32, "schedule": "constant", "eval_n": 16},
        workers=1,
        progress=False,
    )
    settings.update(overrides)
    return MembershipConfig(**settings)


@pytest.mark.slow
def test_lira_beats_the_loss_threshold_on_an_overfitted_mnist_model(tmp_path):
    res = MembershipRun.start(tmp_path / "run", _overfit()).run_all()["result"]["attacks"]
    lira = res["lira-online"]["operating_points"][0]
    loss = res["loss"]["operating_points"][0]
    assert lira["fpr"] == 1e-3
    # Measured: LiRA online 3-5% TPR at 0.1% FPR, the loss threshold 0% (200 members; one
    # member is 0.5%).
    assert lira["tpr"] >= loss["tpr"] + 0.015
    assert res["lira-online"]["auc"] > res["loss"]["auc"]


@pytest.mark.slow
def test_lira_cannot_tell_members_of_a_model_trained_without_them(tmp_path):
    """The target trained on training images 400..1399, the pool is images 0..399: half of the
    pool is labelled "member" at random, and no attack may do better than chance."""
    from multirobust import data, models
    from multirobust.training import TrainConfig, fit

    other = data.load("mnist", "train", limit=1400)
    outsider = data.ImageDataset(
        name="mnist",
        split="train",
        images=other.images[400:1400],
        labels=other.labels[400:1400],
        num_classes=10,
        class_names=other.class_names,
    )
    cfg = TrainConfig(
        method="standard",
        epochs=20,
        batch_size=32,
        schedule="constant",
        eval_n=16,
        eval_steps=1,
        progress=False,
        out=str(tmp_path / "outsider"),
    )
    fit(cfg, train=outsider)
    assert models.load(tmp_path / "outsider" / "model.pt") is not None
    rep = MembershipRun.start(
        tmp_path / "run",
        _overfit(target=str(tmp_path / "outsider" / "model.pt"), members="none", fprs=[0.05]),
    ).run_all()
    for name in ("lira-online", "lira-offline", "loss"):
        a = rep["result"]["attacks"][name]
        # 200 "members" and 200 non-members: the AUC of chance has a standard deviation of
        # about 0.03, so 0.12 is four of them.
        assert abs(a["auc"] - 0.5) < 0.12
        p = a["operating_points"][0]
        assert abs(p["tpr"] - p["achieved_fpr"]) < 0.08


@pytest.mark.slow
@pytest.mark.skipif(available_cores() < 2, reason="needs 2 cores")
def test_shadows_train_in_parallel_processes_like_in_one(tmp_path):
    one = MembershipRun.start(tmp_path / "one", _tiny(pool=48))
    one.train_shadows()
    two = MembershipRun.start(tmp_path / "two", _tiny(pool=48, workers=2))
    two.train_shadows()
    # Same seeds, one thread each: the same weights, hence the same logits.
    assert torch.equal(one.shadow_logits(), two.shadow_logits())


def test_fit_refuses_given_datasets_that_do_not_fit_the_configuration(tmp_path):
    from multirobust import data
    from multirobust.training import TrainConfig, fit

    mnist = data.load("mnist", "train", limit=20)
    cfg = TrainConfig(method="standard", epochs=1, out=str(tmp_path / "a"), progress=False)
    with pytest.raises(ConfigError, match="Invalid limit: 10 with a training dataset"):
        fit(TrainConfig(method="standard", limit=10, out=str(tmp_path / "b")), train=mnist)
    small = data.ImageDataset(
        name="x",
        split="train",
        images=torch.zeros(4, 1, 8, 8),
        labels=torch.zeros(4, dtype=torch.long),
        num_classes=10,
        class_names=mnist.class_names,
    )
    with pytest.raises(ConfigError, match=r"Invalid training dataset: images \(1, 8, 8\)"):
        fit(cfg, train=small)
    with pytest.raises(ConfigError, match="Invalid held-out dataset"):
        fit(cfg, train=mnist, held_out=small)
    assert not (tmp_path / "a").exists()


def test_lira_online_is_the_gaussian_log_likelihood_ratio_at_the_medians():
    shadow = torch.tensor([[1.0], [2.0], [4.0], [8.0], [3.0], [5.0]], dtype=torch.float64)
    keep = torch.tensor([[True], [True], [True], [False], [False], [False]])
    target = torch.tensor([2.5], dtype=torch.float64)
    got = lira_online(target, shadow, keep, fixed_variance=False)
    mu_in, mu_out = 2.0, 5.0  # medians of (1, 2, 4) and (8, 3, 5)
    sd_in = torch.tensor([1.0, 2.0, 4.0]).std().item()
    sd_out = torch.tensor([8.0, 3.0, 5.0]).std().item()
    normal = torch.distributions.Normal
    want = normal(mu_in, sd_in).log_prob(torch.tensor(2.5)) - normal(mu_out, sd_out).log_prob(
        torch.tensor(2.5)
    )
    assert got.item() == pytest.approx(want.item(), rel=1e-6)
    # offline: how many OUT standard deviations above the OUT median
    assert lira_offline(target, shadow, keep, fixed_variance=False).item() == pytest.approx(
        (2.5 - 5.0) / sd_out
    )


def test_adversarial_shadows_get_the_training_warm_up_and_standard_ones_none(tmp_path):
    # An adversarial recipe without an ε warm-up stays at chance on MNIST (training/config.py's
    # default_eps_warmup); the shadows must get the same default as `multirobust train`.
    pgd = MembershipConfig(train={"method": "pgd"}).train_config(tmp_path / "s", 0)
    assert pgd.resolved_eps_warmup > 0
    standard = MembershipConfig().train_config(tmp_path / "s", 0)
    assert standard.resolved_eps_warmup == 0
    explicit = MembershipConfig(train={"method": "pgd", "eps_warmup": 5}).train_config(
        tmp_path / "s", 0
    )
    assert explicit.resolved_eps_warmup == 5


def test_shadow_workers_end_when_their_parent_is_killed(tmp_path):
    # SIGKILL (or an unhandled SIGTERM) of `membership run` must not leave spawned workers
    # training into the run folder. The parent here: a pool like train_shadows's, one worker
    # asleep for a minute; the worker must be gone within 15 s of the parent's death (it
    # checks every second).
    import os
    import signal
    import subprocess
    import sys
    import time

    script = tmp_path / "parent.py"
    script.write_text(
        "import os, time\n"
        "from concurrent.futures import ProcessPoolExecutor\n"
        "from multiprocessing import get_context\n"
        "from multirobust.privacy.shadows import _exit_with\n"
        "if __name__ == '__main__':\n"
        "    with ProcessPoolExecutor(1, mp_context=get_context('spawn'), initializer=_exit_with,\n"
        "                             initargs=(os.getpid(),)) as pool:\n"
        "        print(pool.submit(os.getpid).result(), flush=True)\n"
        "        pool.submit(time.sleep, 60).result()\n"
    )
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        worker = int(parent.stdout.readline())
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(timeout=10)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                os.kill(worker, 0)
            except ProcessLookupError:
                break
            time.sleep(0.2)
        else:
            os.kill(worker, signal.SIGKILL)
            raise AssertionError("the worker outlived its parent by 15 s")
    finally:
        if parent.poll() is None:
            parent.kill()
