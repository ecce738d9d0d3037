"""benchmarks/peers.py runs end to end on a tiny model and a few images, with every peer."""

import dataclasses
import importlib.util
import statistics
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


def _tiny_cases(peers):
    """Every case, cut to a few steps."""
    short = {
        "pgd-linf": {"steps": 5},
        "pgd-l2": {"steps": 5},
        "cw-l2": {"steps": 4, "binary_search_steps": 2},
        "deepfool-l2": {"steps": 3},
        "deepfool-linf": {"steps": 3},
    }
    return [dataclasses.replace(c, **short.get(k, {})) for k, c in peers.CASES.items()]


def _model_and_data():
    from multirobust import models

    torch.manual_seed(0)
    model = models.for_dataset("small_cnn", "mnist").eval()
    x = torch.rand(8, 1, 28, 28)
    with torch.no_grad():
        y = model(x).argmax(1)
    y[0] = (y[0] + 1) % 10  # one example misclassified from the start: never a success
    return model, x, y


def test_peer_comparison_runs_end_to_end():
    peers = _load()
    missing = [k for k, ok in peers.available_peers().items() if not ok]
    if missing:
        pytest.skip(
            f"bench extras not installed ({', '.join(missing)}): "
            "bash scripts/setup-venv.sh test,bench"
        )
    model, x, y = _model_and_data()
    cases = _tiny_cases(peers)
    outputs = {}
    rows = peers.measure(model, x, y, cases, repeats=1, n_min_norm=6, outputs=outputs)
    everyone = {"bare loop", "multirobust", "torchattacks", "foolbox", "art"}
    for case in cases:
        assert everyone <= {r["library"] for r in rows if r["case"] == case.title}, case.key
    unsupported = {(r["case"], r["library"]) for r in rows if r.get("unsupported")}
    linf_df = peers.CASES["deepfool-linf"].title
    assert unsupported == {(linf_df, "torchattacks"), (linf_df, "art")}
    by_title = {c.title: c for c in cases}
    with torch.no_grad():
        clean_ok = model(x).argmax(1) == y
    assert not clean_ok[0]
    for r in rows:
        if r.get("unsupported"):
            continue
        case = by_title[r["case"]]
        n = 6 if case.minimum_norm else 8
        assert r["n"] == n
        assert r["finite"] and 0.0 <= r["robust_accuracy"] <= 1.0
        assert r["timed_runs"] == 1 and r["speed_vs_bare"] > 0
        if not case.minimum_norm:
            assert r["max_norm"] <= case.eps + 1e-4
        # Strength recomputed here from the returned points: a success is clean-correct and
        # misclassified at x_adv, and the distortion is the norm of that very point.
        x_adv = outputs[(r["case"], r["library"])]
        assert x_adv.shape == x[:n].shape
        with torch.no_grad():
            adv_ok = model(x_adv).argmax(1) == y[:n]
        fooled = clean_ok[:n] & ~adv_ok
        norms = peers.sizes(x_adv - x[:n], case.norm)[fooled].tolist()
        assert r["successes"] == len(norms)
        assert r["success_rate"] == pytest.approx(len(norms) / int(clean_ok[:n].sum()))
        assert r["robust_accuracy"] == pytest.approx(float(adv_ok.float().mean()))
        if norms:
            assert r["median_norm"] == pytest.approx(statistics.median(norms), rel=1e-6)
        else:
            assert r["median_norm"] is None
    ours = {r["case"]: r for r in rows if r["library"] == "multirobust"}
    for key in ("cw-l2", "deepfool-l2", "deepfool-linf"):
        assert ours[peers.CASES[key].title]["success_rate"] > 0.5, key  # untrained model
    text = peers.markdown(rows, "tiny")
    assert "| FGSM linf 0.3 | torchattacks |" in text
    assert f"| {linf_df} | art | no such attack |" in text
    assert f"| {peers.CASES['cw-l2'].title} | foolbox | 6 |" in text


def test_strength_counts_only_real_misclassifications():
    peers = _load()
    model, x, y = _model_and_data()
    # Far from x but still classified as before: no success, whatever the distortion.
    same = x.clone()
    s = peers.strength(model, x, y, same, "l2")
    assert s["successes"] == 0 and s["median_norm"] is None
    assert s["robust_accuracy"] == pytest.approx(7 / 8) and s["clean_accuracy"] == 7 / 8
    # Returning a misclassified point for an example that was already misclassified
    # (example 0) is not a success either; the distortion is measured from the clean x.
    moved = x.clone()
    moved[0] = (moved[0] + 0.5).clamp(0, 1)
    s = peers.strength(model, x, y, moved, "linf")
    assert s["successes"] == 0
    assert s["max_norm"] == pytest.approx(float((moved[0] - x[0]).abs().max()))
