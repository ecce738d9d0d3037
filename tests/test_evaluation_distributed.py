"""Distributed evaluation: torchrun with 2 CPU processes on gloo gives the single-process report,
resumes per rank, and the building blocks refuse misuse."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from multirobust.evaluation import distributed, evaluate

TORCHRUN = Path(sys.executable).with_name("torchrun")
ARGS = [
    "evaluate",
    "--dataset",
    "mnist",
    "--threat",
    "linf:0.1",
    "--threat",
    "spatial:20,2",
    # --num-examples, not --n: torchrun's parser (Python 3.11) would take --n for its own option
    "--num-examples",
    "20",
    "--batch-size",
    "5",
    "--preset",
    "quick",
    "--device",
    "cpu",
    "--quiet",
]


def _env():
    env = dict(os.environ)
    for var in distributed.ENV_VARS + ("TORCHELASTIC_RUN_ID", "GROUP_RANK", "LOCAL_WORLD_SIZE"):
        env.pop(var, None)
    env["OMP_NUM_THREADS"] = "1"
    return env


def _run(cmd, **kw):
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300, **kw)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def _torchrun(ckpt, out, *extra):
    return _run(
        [str(TORCHRUN), "--standalone", "--nproc_per_node", "2", "-m", "multirobust"]
        + ARGS
        + ["--checkpoint", str(ckpt), "--out", str(out), *extra]
    )


def _numbers(path):
    """What must not depend on the number of processes: every number and per-example outcome."""
    rep = json.loads(Path(path).read_text())
    for t in rep["threats"].values():
        t.pop("seconds")
    for c in rep["curves"]:
        c.pop("seconds")
    rep.pop("timings")
    settings = rep.pop("settings")
    return rep, settings


@pytest.fixture(scope="module")
def single(mnist_checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("single")
    _run(
        [sys.executable, "-m", "multirobust"]
        + ARGS
        + ["--checkpoint", str(mnist_checkpoint), "--out", str(out)]
    )
    return out


@pytest.mark.skipif(not TORCHRUN.exists(), reason="torchrun is not installed beside the Python")
def test_two_gloo_processes_give_the_single_process_report(mnist_checkpoint, single, tmp_path):
    out = tmp_path / "dist"
    proc = _torchrun(mnist_checkpoint, out, "--resume")
    # only rank 0 prints and writes
    assert proc.stdout.count("union (worst case)") == 1
    assert sorted(p.name for p in out.iterdir()) == ["partial", "report.html", "report.json"]
    one, one_settings = _numbers(single / "report.json")
    two, two_settings = _numbers(out / "report.json")
    assert one_settings["world_size"] == 1 and two_settings["world_size"] == 2
    for key in ("clean_accuracy", "robust_accuracy", "union_accuracy", "clean_correct"):
        assert two[key] == one[key], key
    for key, t in one["threats"].items():
        assert two["threats"][key] == t, key  # robust, broken_by, norms, params, passes
    assert two["threats"]["linf:0.1"]["backward_passes"] > 0
    assert 0 < one["robust_accuracy"]["linf:0.1"] < one["clean_accuracy"]
    assert [c["threat_type"] for c in two["curves"]] == ["linf"]
    assert two == one  # checks, examples and curves included

    # Resume per rank: batch 1 (rank 1) and batch 2 (rank 0) were "interrupted"; the kept ones
    # are read back, not recomputed (a marker planted in them survives into the report).
    partial = out / "partial"
    assert sorted(p.name for p in partial.glob("batch_*.json")) == [
        f"batch_0000{b}.json" for b in range(4)
    ]
    # each rank computed its own strided share of the batches
    ranks = [json.loads((partial / f"batch_0000{b}.json").read_text())["rank"] for b in range(4)]
    assert ranks == [0, 1, 0, 1]
    for b in (1, 2):
        (partial / f"batch_0000{b}.json").unlink()
    kept = partial / "batch_00003.json"
    record = json.loads(kept.read_text())
    record["threats"]["linf:0.1"]["seconds"] = 1e6
    kept.write_text(json.dumps(record))
    (out / "report.json").unlink()
    _torchrun(mnist_checkpoint, out, "--resume", "--no-curves")
    ranks = [json.loads((partial / f"batch_0000{b}.json").read_text())["rank"] for b in (1, 2)]
    assert ranks == [1, 0]
    resumed = json.loads((out / "report.json").read_text())
    assert resumed["threats"]["linf:0.1"]["seconds"] >= 1e6
    assert _numbers(out / "report.json")[0] == {**one, "curves": []}

    # The batch files do not depend on the number of processes: one process resumes them too.
    _run(
        [sys.executable, "-m", "multirobust"]
        + ARGS
        + ["--checkpoint", str(mnist_checkpoint), "--out", str(out), "--resume", "--no-curves"]
    )
    assert json.loads((out / "report.json").read_text())["threats"]["linf:0.1"]["seconds"] >= 1e6
    assert _numbers(out / "report.json")[0] == {**one, "curves": []}


def test_batches_are_strided_over_ranks_and_merged_once():
    shards = [distributed.Shard(r, 3) for r in range(3)]
    assert [s.batches(7) for s in shards] == [[0, 3, 6], [1, 4], [2, 5]]
    assert sorted(b for s in shards for b in s.batches(7)) == list(range(7))
    assert shards[0].is_main and not shards[1].is_main
    assert distributed.merge([{0: "a", 2: "c"}, {1: "b"}]) == {0: "a", 1: "b", 2: "c"}
    with pytest.raises(RuntimeError, match="Batch 2 was evaluated by two ranks"):
        distributed.merge([{2: "a"}, {2: "b"}])
    single = distributed.Shard()
    assert distributed.all_gather({1: 2}, single) == [{1: 2}]
    assert distributed.broadcast([3], single) == [3]


def test_misuse_raises_clear_errors(mnist_model, monkeypatch):
    x, y = torch.rand(4, 1, 28, 28), torch.zeros(4, dtype=torch.long)
    with pytest.raises(ValueError, match="distributed=True needs an initialised"):
        evaluate(mnist_model, x, y, threats="linf:0.1", distributed=True, progress=False)
    for var in distributed.ENV_VARS:
        monkeypatch.delenv(var, raising=False)
    assert not distributed.launched()
    with pytest.raises(ValueError, match="Cannot join a process group: RANK and WORLD_SIZE not"):
        distributed.init_from_env("cpu")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ValueError, match="RANK and WORLD_SIZE must be set together"):
        distributed.init_from_env("cpu")
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(ValueError, match="MASTER_ADDR, MASTER_PORT not set"):
        distributed.init_from_env("cpu")
    monkeypatch.setenv("RANK", "two")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", "9")
    with pytest.raises(ValueError, match="RANK='two', WORLD_SIZE='2' \\(must be integers"):
        distributed.init_from_env("cpu")
    monkeypatch.setenv("RANK", "2")
    with pytest.raises(ValueError, match="RANK=2, WORLD_SIZE=2"):
        distributed.init_from_env("cpu")
    with pytest.raises(ValueError, match="Invalid device: 'gpu0'"):
        distributed.device_for("gpu0")
    assert distributed.device_for("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            distributed.device_for("cuda")
