"""The bottom-layer helpers every report and long command uses: atomic writes and HTML pieces."""

import json
import os

import pytest

from multirobust import atomic, pages


def test_atomic_write_replaces_whole_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "sub" / "r.json"
    atomic.write_json_atomic(target, {"a": 1})
    atomic.write_json_atomic(target, {"a": 2, "b": [1, 2]})
    assert json.loads(target.read_text()) == {"a": 2, "b": [1, 2]}
    assert [p.name for p in target.parent.iterdir()] == ["r.json"]


def test_atomic_write_failure_keeps_old_file(tmp_path):
    target = tmp_path / "r.json"
    atomic.write_json_atomic(target, {"a": 1})
    with pytest.raises(ValueError):
        atomic.write_json_atomic(target, {"a": float("nan")})  # NaN is not JSON
    assert json.loads(target.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write to read-only folders")
def test_check_writable_dir_names_the_folder(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(PermissionError, match="ro"):
            atomic.check_writable_dir(ro / "out")
    finally:
        ro.chmod(0o700)


def test_check_writable_dir_refuses_a_file_in_the_way(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OSError, match="output folder"):
        atomic.check_writable_dir(blocker / "out")
    assert atomic.check_writable_dir(tmp_path / "new") == tmp_path / "new"


def test_table_escapes_cells_and_marks_numeric_columns():
    out = pages.table(["name", "acc"], [["<b>", "1.0"]], table_id="t", numeric=[1])
    assert '<table id="t">' in out
    assert "&lt;b&gt;" in out and "<b>" not in out
    assert '<td class="num">1.0</td>' in out


def test_page_and_figure_are_self_contained():
    plt = pages.pyplot()
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    png = pages.figure_png(fig)
    assert png.startswith(b"\x89PNG")
    doc = pages.page("T & co", pages.img(png, "plot"))
    assert doc.startswith("<!DOCTYPE html>") and "<title>T &amp; co</title>" in doc
    assert 'src="data:image/png;base64,' in doc and "http" not in doc


def test_stale_temporaries_of_dead_writers_are_removed(tmp_path):
    import subprocess
    import sys

    from multirobust.atomic import remove_stale_temps

    dead = subprocess.Popen([sys.executable, "-c", ""])
    dead.wait()
    stale = tmp_path / f".report.json.{dead.pid}.89abcdef.tmp"
    live = tmp_path / f".report.json.{os.getpid()}.89abcdef.tmp"
    other = tmp_path / f".notes.{dead.pid}.tmp"  # not a temporary of ours: left alone
    for p in (stale, live, other):
        p.write_text("x")
    assert remove_stale_temps(tmp_path) == [stale]
    assert live.exists() and other.exists() and not stale.exists()
    assert remove_stale_temps(tmp_path / "missing") == []
