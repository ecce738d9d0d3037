"""zoo/published_smoothing.py: certified accuracy recounted from Cohen-format certify logs."""

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "zoo" / "published_smoothing.py"


def _module():
    spec = importlib.util.spec_from_file_location("published_smoothing", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_counts_correct_predictions_with_a_radius_at_least_r(tmp_path, capsys, monkeypatch):
    log = tmp_path / "noise_0.25_1"
    log.write_text(
        "idx\tlabel\tpredict\tradius\tcorrect\ttime\n"
        "1\t2\t2\t0.3\t1\t0:00:01\n"
        "0\t7\t7\t0.953\t1\t0:00:01\n"
        "2\t1\t-1\t0.0\t0\t0:00:01\n"  # abstained
        "3\t0\t6\t0.8\t0\t0:00:01\n"  # wrong, however large its radius
    )
    m = _module()
    rows = m.read_log(log)
    assert m.certified(rows, 0.0) == pytest.approx(0.5)
    assert m.certified(rows, 0.3) == pytest.approx(0.5)  # the radius itself counts
    assert m.certified(rows, 0.5) == pytest.approx(0.25)
    assert m.certified(rows, 1.0) == 0.0
    argv = ["x", str(log), str(log), "--radii", "0", "0.5", "--first", "2"]
    monkeypatch.setattr("sys.argv", argv)
    m.main()
    out = capsys.readouterr().out
    # The first 2 by index: idx 0 (0.953) and idx 1 (0.3), both correct.
    assert "| noise_0.25_1 | 2 | 100.0 | 50.0 |" in out
    assert "| mean (min–max) of 2, whole logs | | 50.0 (50.0–50.0) | 25.0 (25.0–25.0) |" in out


def test_an_empty_log_is_named(tmp_path):
    log = tmp_path / "empty"
    log.write_text("idx\tlabel\tpredict\tradius\tcorrect\ttime\n")
    with pytest.raises(SystemExit, match="empty: no rows"):
        _module().read_log(log)
