"""benchmarks/peers.py runs end to end on a tiny model and a few images, with every peer."""

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "peers.py"


def _load():
    spec = importlib.util.spec_from_file_location("peers_bench", _PATH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)
    return module


def test_peer_comparison_runs_end_to_end():
    peers = _load()
    missing = [k for k, ok in peers.available_peers().items() if not ok]
    if missing:
        pytest.skip(
            f"bench extras not installed ({', '.join(missing)}): "
            "bash scripts/setup-venv.sh test,bench"
        )
    from multirobust import models

    torch.manual_seed(0)
    model = models.for_dataset("small_cnn", "mnist")
    x = torch.rand(8, 1, 28, 28)
    y = torch.randint(0, 10, (8,))
    rows = peers.measure(model, x, y, list(peers.CASES.values()), repeats=1)
    libs = {r["library"] for r in rows}
    assert {"bare loop", "multirobust", "torchattacks", "foolbox", "art"} <= libs
    for r in rows:
        assert 0.0 <= r["robust_accuracy"] <= 1.0
        eps = 0.3 if "linf" in r["case"] else 2.0
        assert r["max_norm"] <= eps + 1e-4
    text = peers.markdown(rows, "tiny")
    assert "| FGSM linf 0.3 | torchattacks |" in text
