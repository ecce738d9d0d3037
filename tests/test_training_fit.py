"""The fit loop and `multirobust train`: exact resume, early stopping, logs, config errors."""

import importlib
import json
import shlex
import signal
import subprocess
import sys

import pytest
import torch
from _helpers import tiny_run
from click.testing import CliRunner

from multirobust import models
from multirobust.cli import main
from multirobust.training import ConfigError, TrainConfig, fit, load_config, methods

fit_module = importlib.import_module("multirobust.training.fit")


def _cfg(out, **kw):
    return TrainConfig(**tiny_run(out, **kw))


class _Kill(Exception):
    pass


@pytest.mark.parametrize("method", ["pgd", "free"])
def test_killed_run_resumes_to_the_same_weights(tmp_path, method):
    full = fit(_cfg(tmp_path / "full", method=method))

    def kill(epoch, step):
        if epoch == 2 and step == 9:  # part-way through the second epoch (6 batches per epoch)
            raise _Kill

    with pytest.raises(_Kill):
        fit(_cfg(tmp_path / "cut", method=method), on_batch=kill)
    assert not (tmp_path / "cut" / "model.pt").exists()
    # A different global RNG state before resuming must not matter: it is restored.
    torch.manual_seed(12345)
    resumed = fit(_cfg(tmp_path / "cut", method=method), resume=True)

    a, b = full.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    final_a = models.load(tmp_path / "full" / "model.pt").state_dict()
    final_b = models.load(tmp_path / "cut" / "model.pt").state_dict()
    assert all(torch.equal(final_a[k], final_b[k]) for k in final_a)
    rows = [json.loads(x) for x in (tmp_path / "cut" / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    csv_lines = (tmp_path / "cut" / "log.csv").read_text().splitlines()
    assert len(csv_lines) == 3 and csv_lines[0].startswith("epoch,")
    full_rows = full.history
    assert rows[1]["union_accuracy"] == full_rows[1]["union_accuracy"]


def test_checkpoint_holds_optimizer_schedule_and_rng_states(tmp_path):
    fit(_cfg(tmp_path, epochs=1))
    ckpt = models.read_checkpoint(tmp_path / "checkpoint.pt")
    assert ckpt["epoch"] == 1 and ckpt["step"] == 6
    assert ckpt["optimizer"]["state"]  # momentum buffers
    assert ckpt["scheduler"]["last_epoch"] == 6
    rng = ckpt["rng"]
    assert rng["torch"].dtype == torch.uint8 and rng["shuffle"].dtype == torch.uint8
    assert isinstance(rng["python"], list) and rng["numpy"]["keys"].numel() == 624
    model = models.load(tmp_path / "model.pt")
    assert model.multirobust_checkpoint["dataset"] == "mnist"
    assert model.multirobust_checkpoint["metadata"]["method"] == "pgd"


def test_resume_removes_the_temporary_file_of_a_write_that_crashed(tmp_path):
    """A process killed inside ``models.save`` leaves ``.checkpoint.pt.<pid>.<hex>.tmp``; the
    resumed run deletes it (its writer is gone) and keeps another running process's."""
    fit(_cfg(tmp_path, epochs=1))
    dead = subprocess.Popen([sys.executable, "-c", ""])
    dead.wait()  # a process id that no longer runs, like the crashed writer's
    orphan = tmp_path / f".checkpoint.pt.{dead.pid}.0badc0de.tmp"
    orphan.write_bytes(b"half a checkpoint")
    busy = tmp_path / ".best.pt.1.0123abcd.tmp"  # pid 1 always runs: a write in progress
    busy.write_bytes(b"")
    fit(_cfg(tmp_path, epochs=1), resume=True)
    assert not orphan.exists()
    assert busy.exists()


def test_existing_checkpoint_needs_resume_and_same_settings(tmp_path):
    fit(_cfg(tmp_path, epochs=1))
    with pytest.raises(ConfigError, match="already holds a training checkpoint"):
        fit(_cfg(tmp_path, epochs=1))
    with pytest.raises(ConfigError, match=r"settings differ.*lr: 0.05 -> 0.01"):
        fit(_cfg(tmp_path, epochs=1, lr=0.01), resume=True)


def test_collapse_stops_early_and_keeps_the_best_weights(tmp_path, monkeypatch):
    """Catastrophic overfitting in the loop: held-out robust accuracy 0.5, 0.6, then 0.1."""
    values = iter([0.5, 0.6, 0.1, 0.1])

    def fake(model, x, y, threats, **kw):
        v = next(values)
        return {"clean": 0.9, **{t: v for t in threats}, "union": v}

    monkeypatch.setattr(fit_module, "robust_accuracy", fake)
    result = fit(_cfg(tmp_path, method="fast", epochs=4))
    assert result.stopped_early and result.best_epoch == 2
    assert [r["catastrophic_overfitting"] for r in result.history] == [False, False, True]
    best = models.read_checkpoint(tmp_path / "best.pt")
    final = models.read_checkpoint(tmp_path / "model.pt")
    assert best["metadata"]["epoch"] == 2
    assert all(torch.equal(best["state_dict"][k], v) for k, v in final["state_dict"].items())
    last = models.read_checkpoint(tmp_path / "checkpoint.pt")
    assert not all(torch.equal(last["state_dict"][k], v) for k, v in final["state_dict"].items())


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"method": "madry"}, r"Unknown method 'madry' \(available: standard, pgd"),
        ({"threats": ["linf:-0.3"]}, r"Invalid threat 'linf:-0.3'.*must be a finite number >= 0"),
        ({"threats": ["spatial:30,3"]}, r"must be an ℓp ball"),
        ({"threats": ["linf:0.3", "l2:2"]}, r"method 'pgd': 2 given \(needs exactly 1\)"),
        ({"dataset": "imagenet"}, r"Unknown dataset 'imagenet'"),
        ({"arch": "resnet50"}, r"Unknown arch 'resnet50' \(available: "),
        ({"activation": "tanh"}, r"Invalid model: .*tanh"),
        ({"optimiser": "rmsprop"}, r"Unknown optimiser 'rmsprop' \(available: adam, sgd\)"),
        ({"epochs": 0}, r"Invalid epochs: 0 \(must be an integer >= 1\)"),
        ({"beta": -1.0}, r"Invalid beta: -1.0 \(must be a number >= 0\)"),
        ({"method": "ensemble"}, r"'ensemble' needs at least one checkpoint"),
        ({"method": "ensemble", "static_models": ["nope.pt"]}, r"checkpoint 'nope.pt' not found"),
    ],
)
def test_bad_configs_fail_before_training(tmp_path, change, match):
    out = tmp_path / "out"
    with pytest.raises(ConfigError, match=match):
        fit(_cfg(out, **change))
    assert not out.exists()


def test_missing_dataset_files_fail_before_training(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(ConfigError, match=r"Dataset 'mnist' unavailable: .*files missing"):
        fit(_cfg(out, data_root=str(tmp_path / "empty")))
    assert not out.exists()


def test_toml_config_and_unknown_keys(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('[train]\nmethod = "trades"\nthreats = ["l2:2"]\nbeta = 3.0\nepochs = 2\n')
    cfg = load_config(path, epochs=5, seed=None)
    assert (cfg.method, cfg.threats, cfg.beta, cfg.epochs, cfg.seed) == (
        "trades",
        ["l2:2"],
        3.0,
        5,
        0,
    )
    path.write_text('method = "pgd"\nepoch = 3\n')
    with pytest.raises(ConfigError, match=r"Unknown config key\(s\): epoch \(allowed: .*epochs"):
        load_config(path)
    path.write_text("method = \n")
    with pytest.raises(ConfigError, match="Invalid TOML"):
        load_config(path)


def test_methods_registry():
    assert methods() == [
        "standard",
        "pgd",
        "free",
        "fast",
        "trades",
        "max",
        "avg",
        "random",
        "msd",
        "eat",
        "max-apgd",
        "ensemble",
        "distillation",
        "noise",
        "ibp",
    ]


def test_cli_train_end_to_end_and_checkpoint_attacks(tmp_path):
    path = tmp_path / "run.toml"
    out = tmp_path / "run"
    path.write_text(
        'dataset = "mnist"\nmethod = "max"\nthreats = ["linf:0.3"]\nepochs = 1\n'
        "batch_size = 64\nsteps = 2\neval_n = 32\neval_steps = 2\n"
    )
    runner = CliRunner()
    args = ["train", "--config", str(path), "--threat", "linf:0.3", "--threat", "l2:2"]
    args += ["--limit", "192", "--out", str(out), "--quiet", "--seed", "1"]
    result = runner.invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "trained max on mnist for 1 epoch(s)" in result.output
    model = models.load(out / "model.pt")
    assert model.multirobust_checkpoint["metadata"]["config"]["threats"] == ["linf:0.3", "l2:2"]
    row = json.loads((out / "log.jsonl").read_text())
    assert {"robust_accuracy[linf:0.3]", "robust_accuracy[l2:2]", "union_accuracy"} <= set(row)
    attacked = runner.invoke(
        main,
        ["attack", "--checkpoint", str(out / "model.pt"), "--threat", "linf:0.3"]
        + ["--n", "20", "--option", "steps=2", "--quiet"],
    )
    assert attacked.exit_code == 0, attacked.output
    bad = runner.invoke(main, ["train", "--method", "nope", "--out", str(tmp_path / "x")])
    assert bad.exit_code != 0 and "Unknown method 'nope'" in bad.output


def _scalars(logdir):
    """Every scalar TensorBoard shows for ``logdir``: tag -> [(epoch, value)]."""
    accumulator = pytest.importorskip(
        "tensorboard.backend.event_processing.event_accumulator",
        reason="tensorboard is in the test extra: bash scripts/setup-venv.sh test",
    )
    acc = accumulator.EventAccumulator(str(logdir))
    acc.Reload()
    return {t: [(e.step, e.value) for e in acc.Scalars(t)] for t in acc.Tags()["scalars"]}


def test_tensorboard_events_hold_the_logged_metrics_and_survive_resume(tmp_path, monkeypatch):
    pytest.importorskip("tensorboard", reason="bash scripts/setup-venv.sh test installs it")
    cfg = dict(method="standard", epochs=2)
    real_save = fit_module.models.save

    def save(model, path, **kw):
        # Killed after epoch 2's logs were written but before its checkpoint: the resumed run
        # redoes epoch 2, so TensorBoard must show the redone epoch 2 only, once.
        if path.name == fit_module.CHECKPOINT and kw["extra"]["epoch"] == 2:
            raise _Kill
        return real_save(model, path, **kw)

    monkeypatch.setattr(fit_module.models, "save", save)
    with pytest.raises(_Kill):
        fit(_cfg(tmp_path, **cfg))
    first = _scalars(tmp_path / "tensorboard")
    assert [s for s, _ in first["clean_accuracy"]] == [1, 2]
    monkeypatch.setattr(fit_module.models, "save", real_save)
    torch.manual_seed(999)  # the resumed epoch must not depend on the global RNG
    result = fit(_cfg(tmp_path, **cfg), resume=True)
    scalars = _scalars(tmp_path / "tensorboard")
    for key in ("clean_accuracy", "union_accuracy", "train_loss", "lr"):
        steps = [s for s, _ in scalars[key]]
        assert steps == [1, 2], (key, steps)
        for (epoch, value), row in zip(scalars[key], result.history, strict=True):
            assert epoch == row["epoch"] and value == pytest.approx(row[key], rel=1e-6)


def _start_train(args, cwd):
    """``python -m multirobust`` + ``args`` in a process that Ctrl-C (SIGINT) interrupts.

    SIGINT is reset to its default in the child: a test runner started in the background
    may ignore it, and Python only raises KeyboardInterrupt when SIGINT is not ignored.
    """
    return subprocess.Popen(
        [sys.executable, "-m", "multirobust", *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def _interrupt_after(proc, line_start):
    """Read stdout until a line starts with ``line_start``, then SIGINT; (lines, stderr)."""
    lines = []
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line)
        if line.startswith(line_start):
            proc.send_signal(signal.SIGINT)
            break
    out, err = proc.communicate(timeout=120)
    return lines + out.splitlines(keepends=True), err


@pytest.mark.slow  # two Python processes start (importing torch): over 20 s on 2 loaded cores
def test_interrupted_train_process_says_what_it_kept_and_how_to_resume(tmp_path):
    # A real Ctrl-C (SIGINT) on a real process, once an epoch has finished; epochs of four
    # batches of 64 clean images take about a second, 100 of them are never all reached.
    args = ["train", "--method", "standard", "--limit", "256", "--batch-size", "64"]
    args += ["--epochs", "100", "--eval-n", "16", "--eval-steps", "1", "--out", "run", "--quiet"]
    first = _start_train(args, tmp_path)
    lines, err = _interrupt_after(first, "epoch 1/100:")
    assert first.returncode == 130, err
    kept = int(models.read_checkpoint(tmp_path / "run" / "checkpoint.pt")["epoch"])
    assert kept >= 1 and "Aborted!" not in err
    assert "Kept run/checkpoint.pt: " in err, err
    assert f"the checkpoint after epoch {kept}/100" in err, err
    resume = err.strip().splitlines()[-1].strip()
    assert resume.startswith("multirobust train ") and resume.endswith(" --resume"), err
    # The printed command resumes: it says from which epoch, and goes on from there.
    again = _start_train(shlex.split(resume)[1:], tmp_path)
    lines, err = _interrupt_after(again, "epoch ")
    assert lines[0].startswith(f"resuming from epoch {kept + 1}/100: epochs 1-{kept} are in"), (
        lines,
        err,
    )
    assert lines[1].startswith(f"epoch {kept + 1}/100: training loss"), lines
    assert again.returncode == 130 and "Resume with:" in err


def test_interrupted_train_says_what_it_kept_and_how_to_resume(tmp_path, monkeypatch):
    # In-process: Ctrl-C arrives as KeyboardInterrupt in the third training step, i.e. in
    # epoch 2 of two-batch epochs; the checkpoint of epoch 1 is what is kept.
    calls = {"n": 0, "at": 3}
    real_step = fit_module.BatchStep.__call__

    def step(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == calls["at"]:
            raise KeyboardInterrupt
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(fit_module.BatchStep, "__call__", step)
    out = tmp_path / "run"
    args = ["train", "--method", "standard", "--limit", "128", "--batch-size", "64"]
    args += ["--epochs", "5", "--eval-n", "8", "--eval-steps", "1", "--out", str(out), "--quiet"]
    r = CliRunner().invoke(main, args, prog_name="multirobust")
    assert r.exit_code == 130, r.output
    assert "Aborted!" not in r.output
    assert (
        f"Interrupted in epoch 2/5. Kept {out}/checkpoint.pt: the checkpoint after epoch 1/5"
        in (r.output)
    )
    resume = r.output.strip().splitlines()[-1].strip()
    # the same settings (in the order the command declares its flags), plus --resume
    words = shlex.split(resume)
    assert words[:2] == ["multirobust", "train"] and words[-1] == "--resume"
    assert _settings(words[2:-1]) == _settings(args[1:])
    # The printed command resumes from epoch 2 (interrupted again in its second step).
    calls.update(n=0, at=2)
    again = CliRunner().invoke(main, shlex.split(resume)[1:], prog_name="multirobust")
    assert again.exit_code == 130, again.output
    assert again.output.startswith(
        f"resuming from epoch 2/5: epochs 1-1 are in {out}/checkpoint.pt"
    )
    assert "Interrupted in epoch 2/5" in again.output


def _settings(words):
    """``["--a", "1", "--quiet"]`` -> ``{"--a": "1", "--quiet": True}``."""
    settings, i = {}, 0
    while i < len(words):
        if i + 1 < len(words) and not words[i + 1].startswith("--"):
            settings[words[i]], i = words[i + 1], i + 2
        else:
            settings[words[i]], i = True, i + 1
    return settings


def test_interrupted_before_any_checkpoint_says_to_start_again(tmp_path, monkeypatch):
    def step(self, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(fit_module.BatchStep, "__call__", step)
    out = tmp_path / "run"
    r = CliRunner().invoke(
        main,
        ["train", "--method", "standard", "--limit", "64", "--eval-n", "8", "--out", str(out)],
        prog_name="multirobust",
    )
    assert r.exit_code == 130, r.output
    assert "no epoch finished, so no checkpoint was kept" in r.output
    words = shlex.split(r.output.strip().splitlines()[-1])
    assert words[:2] == ["multirobust", "train"] and "--resume" not in words
    assert _settings(words[2:]) == {
        "--method": "standard",
        "--out": str(out),
        "--limit": "64",
        "--eval-n": "8",
    }
