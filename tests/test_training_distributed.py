"""Data-parallel training: sharding, DDP routing, two gloo processes under torchrun, resume.

The multi-process tests launch ``python -m torch.distributed.run`` (the module behind the
``torchrun`` command) with ``--standalone`` so parallel test sessions never share a port, and
OMP_NUM_THREADS=1 so two processes fit on two cores.
"""

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.distributed as dist
from _helpers import tiny_run
from torch.nn.parallel import DistributedDataParallel

from multirobust import models
from multirobust.training import (
    ConfigError,
    FreeAT,
    fit,
    load_config,
    pgd_at_loss,
    trades_loss,
)
from multirobust.training.distributed import (
    AttackAwareDDP,
    launch_environment,
    per_process_batch,
    setup,
    shard_batches,
    steps_per_epoch,
    weights_checksum,
)

# ----------------------------------------------------------------------------- helpers

# Runs fit() from a TOML file; the process whose rank is KILL_RANK SIGKILLs itself right after
# training step KILL_STEP of epoch KILL_EPOCH: a real kill, mid-epoch, no cleanup code runs.
KILL_SCRIPT = textwrap.dedent(
    """
    import os, signal, sys
    import torch
    from multirobust.training import fit, load_config

    torch.set_num_threads(1)
    cfg = load_config(sys.argv[1])
    kill_rank, kill_epoch, kill_step = (int(a) for a in sys.argv[2:5])
    rank = int(os.environ.get("RANK", "0"))

    def on_batch(epoch, step):
        if rank == kill_rank and (epoch, step) == (kill_epoch, kill_step):
            os.kill(os.getpid(), signal.SIGKILL)

    fit(cfg, on_batch=on_batch)
    """
)


def _env():
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    return env


def _torchrun(nproc, args, timeout=300):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    cmd += ["--nproc_per_node", str(nproc), *args]
    return subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=timeout)


def _python(args, timeout=300):
    return subprocess.run(
        [sys.executable, *args], env=_env(), capture_output=True, text=True, timeout=timeout
    )


def _config(path, out, **kw):
    base = tiny_run(out, **{"epochs": 1, "limit": 256, "steps": 2, "eval_steps": 2, **kw})
    lines = [f"{k} = {json.dumps(v)}" for k, v in base.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def _same_weights(a, b):
    a, b = a.state_dict(), b.state_dict()
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _ok(proc):
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


# ----------------------------------------------------------------------------- sharding


@pytest.mark.parametrize(("n", "world"), [(256, 2), (250, 3), (130, 4), (1, 3)])
def test_shards_cover_each_epoch_and_recombine_into_the_one_process_batches(n, world):
    batch = 12 * world
    shards = [
        shard_batches(n, batch, epoch=2, seed=5, rank=r, world_size=world) for r in range(world)
    ]
    steps = steps_per_epoch(n, batch, world)
    assert all(len(s) == steps for s in shards)
    for step in range(steps):  # every process takes equal shares of every global batch
        assert len({s[step].numel() for s in shards}) == 1
    seen = torch.cat([torch.cat(s) for s in shards])
    assert set(seen.tolist()) == set(range(n))
    assert seen.numel() - n < world  # padding only up to a multiple of the world size
    if n % world == 0:  # the global batches are those of a one-process run
        single = shard_batches(n, batch, epoch=2, seed=5, rank=0, world_size=1)
        for step in range(steps):
            assert torch.equal(torch.cat([s[step] for s in shards]), single[step])


def test_shards_are_seeded_per_epoch():
    first = shard_batches(100, 20, epoch=1, seed=0, rank=1, world_size=2)
    again = shard_batches(100, 20, epoch=1, seed=0, rank=1, world_size=2)
    other = shard_batches(100, 20, epoch=2, seed=0, rank=1, world_size=2)
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(first, other, strict=True))
    with pytest.raises(ValueError, match=r"Invalid batch_size: 21 \(must be a positive multiple"):
        shard_batches(100, 21, epoch=1, seed=0, rank=0, world_size=2)
    with pytest.raises(ValueError, match=r"Invalid rank/world_size: 2/2"):
        shard_batches(100, 20, epoch=1, seed=0, rank=2, world_size=2)


def test_batch_size_is_global_and_must_split_evenly():
    assert per_process_batch(64, 2) == 32
    with pytest.raises(ConfigError, match=r"Invalid batch_size: 63 with 2 processes .*global"):
        per_process_batch(63, 2)


def test_launch_environment_is_read_and_checked(monkeypatch):
    assert launch_environment({}) is None
    assert launch_environment({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"}) == (1, 2, 1)
    with pytest.raises(ConfigError, match="RANK and WORLD_SIZE must be set together"):
        launch_environment({"RANK": "0"})
    with pytest.raises(ConfigError, match=r"RANK='a'.*must be integers"):
        launch_environment({"RANK": "a", "WORLD_SIZE": "2"})
    with pytest.raises(ConfigError, match=r"RANK=2, WORLD_SIZE=2"):
        launch_environment({"RANK": "2", "WORLD_SIZE": "2"})
    for name in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    assert setup() is None  # a plain run stays a plain run
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "1")
    with pytest.raises(ConfigError, match="MASTER_ADDR, MASTER_PORT not set"):
        setup()


def test_weights_checksum_sees_any_change():
    torch.manual_seed(0)
    a = models.for_dataset("small_cnn", "mnist")
    torch.manual_seed(0)
    b = models.for_dataset("small_cnn", "mnist")
    assert weights_checksum(a) == weights_checksum(b)
    with torch.no_grad():
        next(b.parameters()).view(-1)[0] += 1e-7
    assert weights_checksum(a) != weights_checksum(b)


# ----------------------------------------------------------------------------- one-process group


@pytest.fixture
def group(tmp_path):
    """A gloo process group of one process, created by the test (fit must use it as it is)."""
    store = dist.FileStore(str(tmp_path / "store"), 1)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    try:
        yield
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def test_attack_passes_bypass_ddp(group, monkeypatch):
    """Only training forward passes reach DDP (and its reducer); attack passes do not."""
    calls = {"ddp": 0, "module": 0}
    real = DistributedDataParallel.forward

    def counting(self, *a, **k):
        calls["ddp"] += 1
        return real(self, *a, **k)

    monkeypatch.setattr(DistributedDataParallel, "forward", counting)
    torch.manual_seed(0)
    model = models.for_dataset("small_cnn", "mnist")
    model.register_forward_hook(lambda *_: calls.__setitem__("module", calls["module"] + 1))
    net = AttackAwareDDP(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x, y = torch.rand(8, 1, 28, 28), torch.arange(8)
    gen = torch.Generator().manual_seed(0)

    def train(loss):
        opt.zero_grad()
        loss.backward()
        opt.step()

    train(pgd_at_loss(net, x, y, "linf:0.3", steps=3, generator=gen))
    assert calls == {"ddp": 1, "module": 4}  # 3 attack passes on the module, 1 through DDP
    train(trades_loss(net, x, y, "linf:0.3", steps=2, generator=gen))
    assert calls == {"ddp": 3, "module": 4 + 1 + 2 + 2}  # p(x) and 2 steps bypass DDP
    FreeAT("linf:0.3", replays=2).step(net, opt, x, y)  # every replay trains the weights
    assert calls["ddp"] == 5
    with torch.no_grad():
        net(x)
    assert calls["ddp"] == 5
    assert all(p.requires_grad for p in model.parameters()) and net.training


def _cfg_dict(out, **kw):
    base = tiny_run(out, **{"steps": 2, "eval_steps": 2, **kw})
    del base["dataset"], base["arch"]  # the defaults, left for TrainConfig to fill in
    return base


class _Stop(Exception):
    pass


def test_distributed_loop_resumes_exactly_and_refuses_another_launch(group, tmp_path):
    full = fit(_cfg_dict(tmp_path / "full"))
    assert full.world_size == 1 and full.rank == 0
    meta = models.read_checkpoint(tmp_path / "full" / "model.pt")["metadata"]
    assert meta["distributed"] == {
        "world_size": 1,
        "weights_sha256": [weights_checksum(full.model)],
    }
    assert dist.is_initialized()  # a group fit did not create is left open

    def stop(epoch, step):
        if (epoch, step) == (2, 9):
            raise _Stop

    with pytest.raises(_Stop):
        fit(_cfg_dict(tmp_path / "cut"), on_batch=stop)
    torch.manual_seed(999)
    resumed = fit(_cfg_dict(tmp_path / "cut"), resume=True)
    assert _same_weights(full.model, resumed.model)
    assert [r["epoch"] for r in resumed.history] == [1, 2]
    assert resumed.history[1]["union_accuracy"] == full.history[1]["union_accuracy"]
    ckpt = models.read_checkpoint(tmp_path / "cut" / "checkpoint.pt")
    assert ckpt["distributed_world_size"] == 1 and len(ckpt["rng_per_rank"]) == 1

    dist.destroy_process_group()  # now a plain run: it must not resume a distributed checkpoint
    with pytest.raises(
        ConfigError, match=r"written by a distributed run of 1 process\(es\), this is a one-proc"
    ):
        fit(_cfg_dict(tmp_path / "cut"), resume=True)


# ----------------------------------------------------------------------------- two processes


@pytest.mark.parametrize("method", ["standard", "pgd"])
def test_two_process_training_runs_and_its_checkpoint_loads(tmp_path, method):
    out = tmp_path / "run"
    cfg = _config(tmp_path / "run.toml", out, method=method)
    proc = _torchrun(2, ["-m", "multirobust", "train", "--config", str(cfg), "--quiet"])
    _ok(proc)
    assert proc.stdout.count(f"trained {method} on mnist for 1 epoch(s) on 2 processes") == 1
    model = models.load(out / "model.pt")
    info = model.multirobust_checkpoint["metadata"]["distributed"]
    # Both ranks ended with identical weights, and they are the ones saved.
    assert info["world_size"] == 2
    assert info["weights_sha256"] == [weights_checksum(model)] * 2
    rows = (out / "log.jsonl").read_text().splitlines()
    assert len(rows) == 1  # written by rank 0 only
    ckpt = models.read_checkpoint(out / "checkpoint.pt")
    assert ckpt["step"] == 4  # 256 images / global batch 64, not / 32 per process
    attack_states = [r["attack"] for r in ckpt["rng_per_rank"]]
    assert len(attack_states) == 2 and not torch.equal(*attack_states)
    if method == "pgd":
        with pytest.raises(ConfigError, match=r"distributed run of 2 process\(es\), this is a"):
            fit(load_config(cfg), resume=True)


@pytest.mark.slow
def test_two_processes_match_one_at_the_same_global_batch(tmp_path):
    """Same model quality: 32 Adam steps of batch 64 with 1 and with 2 processes."""
    results = {}
    for method in ("standard", "pgd"):
        for nproc in (1, 2):
            out = tmp_path / f"{method}{nproc}"
            cfg = _config(
                tmp_path / f"{method}{nproc}.toml",
                out,
                method=method,
                threats=["linf:0.1"],
                limit=2048,
                eval_n=500,
                optimiser="adam",
                lr=1e-3,
                schedule="constant",
                seed=1,
            )
            _ok(_torchrun(nproc, ["-m", "multirobust", "train", "--config", str(cfg), "--quiet"]))
            row = json.loads((out / "log.jsonl").read_text())
            results[method, nproc] = (models.load(out / "model.pt"), row)
    for method in ("standard", "pgd"):
        (one, a), (two, b) = results[method, 1], results[method, 2]
        assert a["clean_accuracy"] > 0.5
        assert abs(a["clean_accuracy"] - b["clean_accuracy"]) <= 0.03, (method, a, b)
        assert abs(a["union_accuracy"] - b["union_accuracy"]) <= 0.05, (method, a, b)
    # Standard training draws no randomness: the same global batches, averaged gradients,
    # the same weights up to float rounding.
    one, two = results["standard", 1][0], results["standard", 2][0]
    a, b = one.state_dict(), two.state_dict()
    diff = max(float((a[k] - b[k]).abs().max()) for k in a)
    assert diff < 1e-4


@pytest.mark.slow
@pytest.mark.parametrize("method", ["pgd", "free"])  # per-rank attack RNGs; per-rank Free-AT δ
def test_two_process_run_killed_mid_epoch_resumes_to_the_same_weights(tmp_path, method):
    script = tmp_path / "kill.py"
    script.write_text(KILL_SCRIPT)
    kw = dict(epochs=2, limit=384, method=method, replays=2)
    full = _config(tmp_path / "full.toml", tmp_path / "full", **kw)
    cut = _config(tmp_path / "cut.toml", tmp_path / "cut", **kw)
    _ok(_torchrun(2, ["-m", "multirobust", "train", "--config", str(full), "--quiet"]))
    killed = _torchrun(2, [str(script), str(cut), "1", "2", "9"])  # rank 1, epoch 2, step 9/12
    assert killed.returncode != 0
    assert not (tmp_path / "cut" / "model.pt").exists()
    assert models.read_checkpoint(tmp_path / "cut" / "checkpoint.pt")["epoch"] == 1
    resumed = _torchrun(2, ["-m", "multirobust", "train", "--config", str(cut), "--resume"])
    _ok(resumed)
    a = models.load(tmp_path / "full" / "model.pt")
    b = models.load(tmp_path / "cut" / "model.pt")
    assert _same_weights(a, b)
    rows = [json.loads(r) for r in (tmp_path / "cut" / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]


# ----------------------------------------------------------------------------- a real kill


def test_process_killed_mid_epoch_resumes_to_the_same_weights(tmp_path):
    """SIGKILL (no exception handler, no finally) part-way through epoch 2, then --resume."""
    script = tmp_path / "kill.py"
    script.write_text(KILL_SCRIPT)
    kw = dict(epochs=2, limit=256, method="free", replays=2)
    full = _config(tmp_path / "full.toml", tmp_path / "full", **kw)
    cut = _config(tmp_path / "cut.toml", tmp_path / "cut", **kw)
    killed = _python([str(script), str(cut), "0", "2", "6"])  # step 6 of 8
    assert killed.returncode == -signal.SIGKILL
    assert not (tmp_path / "cut" / "model.pt").exists()
    assert models.read_checkpoint(tmp_path / "cut" / "checkpoint.pt")["epoch"] == 1
    _ok(_python(["-m", "multirobust", "train", "--config", str(cut), "--resume", "--quiet"]))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the subprocesses' thread count, for bitwise-equal results
    try:
        fit(load_config(full))
    finally:
        torch.set_num_threads(threads)
    assert _same_weights(
        models.load(tmp_path / "full" / "model.pt"), models.load(tmp_path / "cut" / "model.pt")
    )
    rows = [json.loads(r) for r in (tmp_path / "cut" / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]


def test_sharded_held_out_metrics_equal_the_whole_set_counts(group):
    """With one process the sharded evaluation is the plain one (same seed, same counts)."""
    from multirobust import data
    from multirobust.training import robust_accuracy
    from multirobust.training.distributed import Context, sharded_robust_accuracy

    test = data.load("mnist", "test", limit=50)
    torch.manual_seed(0)
    model = models.for_dataset("small_cnn", "mnist").eval()
    ctx = Context(rank=0, world_size=1, device=torch.device("cpu"), owns_group=False)
    threats = ["linf:0.1", "l2:1"]
    got = sharded_robust_accuracy(ctx, model, test.images, test.labels, threats, steps=2, seed=4)
    want = robust_accuracy(model, test.images, test.labels, threats, steps=2, seed=4)
    assert got == pytest.approx(want)
    assert set(got) == {"clean", "linf:0.1", "l2:1", "union"}
    kw = dict(steps=2, seed=4, single_step=True)
    got = sharded_robust_accuracy(ctx, model, test.images, test.labels, threats, **kw)
    assert got == pytest.approx(robust_accuracy(model, test.images, test.labels, threats, **kw))
    assert {"fgsm[linf:0.1]", "fgsm[l2:1]", "fgsm_union"} < set(got)
