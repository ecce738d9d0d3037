"""E-AT (Croce & Hein 2022): sampling by running robust error, its state, the registered
method, and fine-tuning from an initial checkpoint that resumes exactly."""

import json

import pytest
import torch
from _helpers import tiny_run
from torch import nn

from multirobust import models
from multirobust.attacks.apgd_train import apgd_perturb
from multirobust.threats import L1Ball, LinfBall
from multirobust.training import ConfigError, TrainConfig, fit, get_method
from multirobust.training.eat import EAT, extreme_threats
from multirobust.training.max_apgd import max_apgd_loss


def test_probabilities_follow_a_scripted_history_of_robust_errors():
    eat = EAT(["linf:0.3", "l1:10"])
    assert eat.probabilities().tolist() == [0.5, 0.5]
    eat.update(0, robust=30, seen=100)
    # ℓ1 not drawn yet: still uniform.
    assert eat.probabilities().tolist() == [0.5, 0.5]
    eat.update(1, robust=80, seen=100)
    # e = (0.7, 0.2): P = e / Σ e.
    assert torch.allclose(
        eat.probabilities(), torch.tensor([0.7 / 0.9, 0.2 / 0.9], dtype=torch.float64)
    )
    eat.update(0, robust=50, seen=100)
    # Running over the whole history: ℓ∞ 80 robust of 200 -> e = 0.6; ℓ1 still 0.2.
    assert torch.allclose(eat.robust_errors(), torch.tensor([0.6, 0.2], dtype=torch.float64))
    assert torch.allclose(eat.probabilities(), torch.tensor([0.75, 0.25], dtype=torch.float64))
    perfect = EAT(["linf:0.3", "l2:2", "l1:10"])
    for t in range(3):
        perfect.update(t, robust=10, seen=10)
    assert torch.allclose(perfect.probabilities(), torch.full((3,), 1 / 3, dtype=torch.float64))


def test_draws_follow_the_probabilities():
    eat = EAT(["linf:0.3", "l1:10"])
    eat.update(0, robust=40, seen=100)  # e = 0.6
    eat.update(1, robust=80, seen=100)  # e = 0.2 -> P = (0.75, 0.25)
    g = torch.Generator().manual_seed(0)
    draws = [eat.draw(g) for _ in range(4000)]
    share = draws.count(0) / len(draws)
    # Binomial standard deviation sqrt(0.75·0.25/4000) = 0.007: 0.03 is over 4 of them.
    assert abs(share - 0.75) < 0.03
    # The draw alone does not change the statistics.
    assert eat.seen.tolist() == [100, 100]


def test_loss_counts_the_robust_examples_of_the_drawn_threat():
    # Logits independent of the input, class 0 ahead: exactly the examples labelled 0 are
    # robust under any attack.
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 3))
    with torch.no_grad():
        model[1].weight.zero_()
        model[1].bias.copy_(torch.tensor([5.0, 0.0, 0.0]))
    x = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0, 1, 0, 2, 0, 0])
    eat = EAT(["linf:0.3", "l1:10"], steps=2)
    g = torch.Generator().manual_seed(1)
    stats = {}
    loss = eat.loss(model, x, y, generator=g, stats=stats)
    pick = int(stats["threat_index"][0])
    assert eat.seen[pick] == 6 and eat.robust[pick] == 4 and eat.seen[1 - pick] == 0
    assert loss.requires_grad and model.training  # mode restored after the attack
    loss.backward()
    assert model[1].bias.grad is not None


def test_state_round_trip_and_errors():
    eat = EAT(["linf:0.3", "l1:10"])
    eat.update(1, robust=3, seen=8)
    other = EAT(["linf:0.3", "l1:10"])
    other.load_state_dict(eat.state_dict())
    assert torch.equal(other.probabilities(), eat.probabilities())
    with pytest.raises(ValueError, match="does not fit 3"):
        EAT(["linf:0.3", "l2:2", "l1:10"]).load_state_dict(eat.state_dict())
    with pytest.raises(ValueError, match="Invalid batch outcome: 9 robust of 8"):
        eat.update(0, robust=9, seen=8)
    with pytest.raises(ValueError, match="Invalid steps"):
        EAT(["linf:0.3"], steps=0)
    with pytest.raises(ValueError, match="must be an ℓp ball"):
        EAT(["spatial:30,3"])


def test_extreme_threats_keep_linf_and_l1():
    chosen = extreme_threats(["linf:0.3", "l2:2", "l1:10"])
    assert [str(t) for t in chosen] == ["linf:0.3", "l1:10"]
    assert isinstance(chosen[0], LinfBall) and isinstance(chosen[1], L1Ball)
    assert [str(t) for t in extreme_threats(["l2:2"])] == ["l2:2"]


def test_registered_method_trains_on_the_extremes_and_checkpoints_its_state():
    cfg = TrainConfig(method="eat", threats=["linf:0.3", "l2:2", "l1:10"], steps=2)
    step = get_method("eat").build(cfg, [])
    assert [str(t) for t in step.eat.threats] == ["linf:0.3", "l1:10"]
    step.eat.update(0, robust=1, seen=2)
    assert step.state_dict()["seen"].tolist() == [2, 0]


class _Kill(Exception):
    pass


def test_fine_tuning_resumes_to_the_same_weights(tmp_path):
    # The starting point: another initialisation (seed 5) saved as a checkpoint; the runs
    # below are seeded 3, so without --init they would start elsewhere.
    torch.manual_seed(5)
    models.save(models.for_dataset("small_cnn", "mnist"), tmp_path / "start.pt", dataset="mnist")
    init = str(tmp_path / "start.pt")
    settings = dict(method="eat", threats=["linf:0.3", "l1:10"], init=init, seed=3)
    full = fit(TrainConfig(**tiny_run(tmp_path / "full", **settings)))

    def kill(epoch, step):
        if epoch == 2 and step == 9:  # part-way through the second epoch (6 batches each)
            raise _Kill

    with pytest.raises(_Kill):
        fit(TrainConfig(**tiny_run(tmp_path / "cut", **settings)), on_batch=kill)
    torch.manual_seed(999)  # the global RNG before resuming must not matter
    resumed = fit(TrainConfig(**tiny_run(tmp_path / "cut", **settings)), resume=True)
    a, b = full.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    ckpt_a = models.read_checkpoint(tmp_path / "full" / "checkpoint.pt")
    ckpt_b = models.read_checkpoint(tmp_path / "cut" / "checkpoint.pt")
    assert torch.equal(ckpt_a["method_state"]["seen"], ckpt_b["method_state"]["seen"])
    assert ckpt_a["method_state"]["seen"].sum() == 2 * 384  # every example, every epoch
    meta = models.load(tmp_path / "full" / "model.pt").multirobust_checkpoint["metadata"]
    assert meta["config"]["init"] == init
    rows = [json.loads(r) for r in (tmp_path / "cut" / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]

    # The run started from init: 12 small steps leave the weights far nearer to it than to
    # the seed-3 initialisation a run without init starts from (independent draws of the
    # same scale: the second distance is several times the first).
    torch.manual_seed(3)
    fresh = models.for_dataset("small_cnn", "mnist").state_dict()
    start = models.read_checkpoint(init)["state_dict"]

    def dist(p, q):
        return sum(float((p[k] - q[k]).pow(2).sum()) for k in p) ** 0.5

    assert 3 * dist(a, start) < dist(a, fresh)


def test_bad_init_fails_before_training(tmp_path):
    with pytest.raises(ConfigError, match="Invalid init: checkpoint .* not found"):
        fit(TrainConfig(**tiny_run(tmp_path / "a", init=str(tmp_path / "missing.pt"))))
    other = models.for_dataset("madry_cnn", "mnist")
    models.save(other, tmp_path / "madry.pt", dataset="mnist")
    with pytest.raises(ConfigError, match="holds a 'madry_cnn' model, the run trains 'small_cnn'"):
        fit(TrainConfig(**tiny_run(tmp_path / "b", init=str(tmp_path / "madry.pt"))))


def test_max_apgd_trains_on_the_worst_threat_per_example():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 3))
    x = torch.rand(8, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    y = torch.arange(8) % 3
    # An empty ball can never be the worst: the ℓ∞ 0.1 examples raise every loss.
    stats = {}
    max_apgd_loss(model, x, y, ["linf:0", "linf:0.1"], steps=2, stats=stats)
    assert stats["threat_index"].tolist() == [1] * 8
    # In general: the threat whose APGD point has the higher loss, example by example.
    stats = {}
    loss = max_apgd_loss(model, x, y, ["linf:0.1", "l1:3"], steps=2, stats=stats)
    model.eval()
    with torch.no_grad():
        per = torch.stack(
            [apgd_perturb(model, x, y, t, steps=2).loss for t in ("linf:0.1", "l1:3")]
        )
    assert stats["threat_index"].tolist() == per.argmax(0).tolist()
    # The training loss is the mean of the chosen losses (train mode = eval mode here).
    assert torch.allclose(loss, per.max(0).values.mean(), atol=1e-5)
