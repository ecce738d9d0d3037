"""`multirobust compare` and the leaderboard: Pareto frontiers and fits against hand
computation, the self-contained page (parsed, and rendered by headless Chromium when present),
the SQLite leaderboard (upserts, transactions, corrupt files) and the evaluate --db path."""

import json
import math
import shutil
import sqlite3
import subprocess
from html.parser import HTMLParser

import numpy as np
import pytest
from click.testing import CliRunner

from multirobust.cli import main
from multirobust.evaluation import EvaluationReport
from multirobust.reports.compare import compare, pareto_front
from multirobust.reports.leaderboard import (
    Entry,
    Leaderboard,
    LeaderboardError,
    default_path,
)

# label: (clean, union, median l2 or None)
MODELS = {
    "standard": (0.99, 0.05, 0.9),
    "trades": (0.95, 0.40, 1.6),
    "weak-at": (0.90, 0.30, 1.2),
    "madry": (0.80, 0.55, None),
}


def _report(clean, union, median, seed=0):
    n = 100
    md = {}
    if median is not None:
        md["l2"] = {
            "norm": "l2",
            "n": n,
            "median": median,
            "never_broken": 0.0,
            "misclassified": 1 - clean,
            "max_eps": 28.0,
            "distances": [median] * n,
            "histogram": {"counts": [n], "edges": [0.0, median]},
            "attacks": ["apgd"],
        }
    return EvaluationReport(
        n=n,
        clean_accuracy=clean,
        robust_accuracy={"linf:0.3": union, "l2:2": union + 0.1},
        union_accuracy=union,
        labels=[0] * n,
        clean_pred=[0] * n,
        clean_correct=[True] * round(clean * n) + [False] * (n - round(clean * n)),
        threats={},
        checks=[],
        minimal_distortion=md,
        settings={
            "threats": ["linf:0.3", "l2:2"],
            "dataset": "mnist",
            "preset": {"name": "standard"},
            "seed": seed,
            "model_sha256": f"{clean}{union}",
            "data_sha256": "d",
        },
    )


@pytest.fixture()
def runs(tmp_path):
    paths = []
    for label, (clean, union, median) in MODELS.items():
        folder = tmp_path / "runs" / label
        _report(clean, union, median).to_json(folder / "report.json")
        paths.append(folder)
    # One given as the report file itself.
    paths[1] = paths[1] / "report.json"
    return paths


class _Cells(HTMLParser):
    """Text of every element with an id."""

    def __init__(self):
        super().__init__()
        self.cells, self._open, self.imgs, self.links = {}, [], [], []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "img":
            self.imgs.append(a.get("src", ""))
        if tag in ("link", "script") and (a.get("href") or a.get("src")):
            self.links.append(a)
        self._open.append(a.get("id"))

    def handle_endtag(self, tag):
        if self._open:
            self._open.pop()

    def handle_data(self, data):
        for key in self._open:
            if key:
                self.cells[key] = self.cells.get(key, "") + data


def test_pareto_front_by_hand():
    xs = [0.99, 0.95, 0.90, 0.80, 0.95]
    ys = [0.05, 0.40, 0.30, 0.55, 0.40]
    # 2 is dominated by 1; 1 and 4 tie exactly and neither beats the other, so both stay.
    assert pareto_front(xs, ys) == [3, 1, 4, 0]
    assert pareto_front([0.5, 0.6], [math.inf, 0.1]) == [1]


def test_compare_writes_json_png_and_a_page_with_the_numbers(runs, tmp_path):
    out = tmp_path / "cmp"
    models, summary = compare(runs, out)
    labels = [m.label for m in models]
    assert labels == list(MODELS)
    saved = json.loads((out / "compare.json").read_text())
    assert saved == json.loads(json.dumps(summary))
    assert saved["pareto"]["union"] == ["madry", "trades", "standard"]
    assert saved["pareto"]["min_distortion"]["l2"] == ["trades", "standard"]
    # Least-squares line over all four models, by numpy independently, in the axes' units (%).
    acc = np.array([100 * v[0] for v in MODELS.values()])
    rob = np.array([100 * v[1] for v in MODELS.values()])
    b, a = np.polyfit(acc, rob, 1)
    assert saved["fits"]["union"]["form"] == "union (%) = a + b * clean (%)"
    assert saved["fits"]["union"]["a"] == pytest.approx(a)
    assert saved["fits"]["union"]["b"] == pytest.approx(b)
    assert saved["fits"]["union"]["models"] == 4
    # Only three models have a median: too few for Su et al.'s log fit.
    assert saved["fits"]["min_distortion"]["l2"] is None
    assert saved["warnings"] == []
    assert (out / "compare.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    page = (out / "compare.html").read_text()
    parser = _Cells()
    parser.feed(page)
    assert parser.links == []  # self-contained: no external CSS or scripts
    assert len(parser.imgs) == 1 and parser.imgs[0].startswith("data:image/png;base64,")
    for i, (label, (clean, union, median)) in enumerate(MODELS.items()):
        assert parser.cells[f"model-{i}-label"] == label
        assert parser.cells[f"model-{i}-clean"] == f"{100 * clean:.2f}%"
        assert parser.cells[f"model-{i}-union"] == f"{100 * union:.2f}%"
        want = f"{median:.4g}" if median is not None else "—"
        assert parser.cells[f"model-{i}-median-l2"] == want
        # every threat of the reports has its own column
        assert parser.cells[f"model-{i}-robust-linf:0.3"] == f"{100 * union:.2f}%"
        assert parser.cells[f"model-{i}-robust-l2:2"] == f"{100 * (union + 0.1):.2f}%"
        assert parser.cells[f"model-{i}-preset"] == "standard"
    assert f"a = {a:.4g}, b = {b:.4g}" in parser.cells["fits"]
    assert "R² = " in parser.cells["fits"] and "over 4 models" in parser.cells["fits"]
    assert "not fitted (needs at least 4 models" in parser.cells["fits"]  # the l2 median
    # the notes describe the union line that is drawn, not a distortion fit that is not
    assert "Union: least-squares line" in parser.cells["fit-notes"]
    assert "Minimal distortion" not in parser.cells["fit-notes"]


def test_distortion_fit_in_the_axes_units_with_four_medians(tmp_path):
    rows = [(0.99, 0.05, 0.9), (0.95, 0.40, 1.6), (0.90, 0.30, 1.2), (0.85, 0.35, 1.3)]
    paths = []
    for k, (clean, union, median) in enumerate(rows):
        _report(clean, union, median).to_json(tmp_path / f"m{k}" / "report.json")
        paths.append(tmp_path / f"m{k}")
    _, summary = compare(paths, tmp_path / "cmp")
    fit = summary["fits"]["min_distortion"]["l2"]
    # Su et al.: d = a + b ln(1 − clean/100), clean in % as on the x axis
    b, a = np.polyfit(np.log([1 - 100 * r[0] / 100 for r in rows]), [r[2] for r in rows], 1)
    assert fit["form"] == "median = a + b * ln(1 - clean (%) / 100)"
    assert fit["a"] == pytest.approx(a) and fit["b"] == pytest.approx(b)
    notes = (tmp_path / "cmp" / "compare.html").read_text()
    assert "Minimal distortion: least squares of the median" in notes


def test_two_models_get_no_trend_line_and_mixed_runs_are_named(tmp_path):
    # The newcomer's case: a quick-preset run on 1000 examples beside a standard one on 100.
    quick = _report(0.98, 0.10, None)
    quick.n = 1000
    quick.settings = {**quick.settings, "preset": {"name": "quick"}, "threats": ["linf:0.3"]}
    _report(0.95, 0.40, None).to_json(tmp_path / "eval-max" / "report.json")
    quick.to_json(tmp_path / "quickstart" / "report.json")
    runner = CliRunner()
    args = ["compare", str(tmp_path / "eval-max"), str(tmp_path / "quickstart")]
    res = runner.invoke(main, [*args, "--out", str(tmp_path / "cmp"), "--no-db"])
    assert res.exit_code == 0, res.output
    summary = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert summary["fits"]["union"] is None  # no R² = 1.00 through two points
    warnings = " ".join(summary["warnings"])
    assert "2 model(s): no trend line is fitted (a fit needs at least 4 models" in warnings
    assert "n = 100 (eval-max); n = 1000 (quickstart)" in warnings
    assert "standard (eval-max); quick (quickstart)" in warnings and "upper bounds" in warnings
    assert "linf:0.3, l2:2 (eval-max); linf:0.3 (quickstart)" in warnings
    for w in summary["warnings"]:
        assert f"warning: {w}" in res.output
    assert "trend over" not in res.output
    # per threat, on the terminal too
    assert "eval-max (n = 100, standard preset): clean 95.00%, linf:0.3 40.00%, l2:2 50.00%, " in (
        res.output
    )
    page = (tmp_path / "cmp" / "compare.html").read_text()
    assert "fit-notes" not in page and "Su et al." not in page  # nothing fitted, nothing told
    assert page.count("not fitted (needs at least 4 models") == 1


@pytest.mark.skipif(
    shutil.which("chromium") is None and shutil.which("chromium-browser") is None,
    reason="headless Chromium is not installed here (CI installs it)",
)
def test_chromium_renders_the_compare_page(runs, tmp_path):
    out = tmp_path / "cmp"
    compare(runs, out)
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    dom = subprocess.run(
        [exe, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom"]
        + [(out / "compare.html").resolve().as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    assert "Accuracy and robustness of 4 model(s)" in dom
    for label, (clean, union, _) in MODELS.items():
        assert label in dom and f"{100 * clean:.2f}%" in dom and f"{100 * union:.2f}%" in dom
    assert "data:image/png;base64," in dom


def test_cli_compare_records_into_the_leaderboard_once(runs, tmp_path):
    db = tmp_path / "board.sqlite"
    runner = CliRunner()
    args = ["compare", *map(str, runs), "--out", str(tmp_path / "cmp"), "--db", str(db)]
    first = runner.invoke(main, args)
    assert first.exit_code == 0, first.output
    assert "Pareto frontier (clean vs union): madry, trades, standard" in first.output
    assert f"recorded 4 result(s) in {db}" in first.output
    again = runner.invoke(main, args)  # the same evaluations: updated, not duplicated
    assert again.exit_code == 0, again.output
    with Leaderboard(db) as board:
        entries = board.entries()
    assert [e.label for e in entries] == ["madry", "trades", "weak-at", "standard"]
    assert entries[1].min_distortion == {"l2": 1.6}
    assert entries[0].robust_accuracy == {"linf:0.3": 0.55, "l2:2": pytest.approx(0.65)}
    shown = runner.invoke(main, ["leaderboard", "--db", str(db)])
    assert shown.exit_code == 0, shown.output
    lines = shown.output.splitlines()
    assert "(4 result(s))" in lines[0]
    row = {line.split()[1]: i for i, line in enumerate(lines[2:], 2)}
    assert row["madry"] < row["trades"] < row["weak-at"] < row["standard"]  # by union accuracy
    assert "1.6" in lines[row["trades"]] and "55.00%" in lines[row["madry"]]
    # A different seed is a different evaluation: a new row.
    other = tmp_path / "other"
    _report(0.5, 0.1, None, seed=1).to_json(other / "report.json")
    added = runner.invoke(main, ["leaderboard", "--db", str(db), "--add", str(other)])
    assert added.exit_code == 0 and "(5 result(s))" in added.output
    nodb = runner.invoke(main, ["compare", str(runs[0]), "--out", str(tmp_path / "c2"), "--no-db"])
    assert nodb.exit_code == 0 and "recorded" not in nodb.output


def test_default_database_location(monkeypatch, tmp_path, runs):
    monkeypatch.setenv("MULTIROBUST_HOME", str(tmp_path / "home"))
    assert default_path() == tmp_path / "home" / "leaderboard.sqlite"
    runner = CliRunner()
    empty = runner.invoke(main, ["leaderboard"])
    assert empty.exit_code == 0 and "no leaderboard at" in empty.output
    done = runner.invoke(main, ["compare", str(runs[0]), "--out", str(tmp_path / "c")])
    assert done.exit_code == 0, done.output
    assert (tmp_path / "home" / "leaderboard.sqlite").is_file()
    monkeypatch.delenv("MULTIROBUST_HOME")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert default_path() == tmp_path / "cache" / "multirobust" / "leaderboard.sqlite"


def test_corrupt_or_foreign_databases_are_refused(runs, tmp_path):
    runner = CliRunner()
    bad = tmp_path / "bad.sqlite"
    bad.write_bytes(b"this is not an sqlite file at all" * 100)
    res = runner.invoke(
        main, ["compare", str(runs[0]), "--out", str(tmp_path / "c"), "--db", str(bad)]
    )
    assert res.exit_code != 0
    assert "not a usable multirobust leaderboard database" in res.output
    assert bad.read_bytes().startswith(b"this is not")  # never overwritten
    foreign = tmp_path / "foreign.sqlite"
    with sqlite3.connect(foreign) as conn:
        conn.execute("CREATE TABLE notes (x TEXT)")
    conn.close()
    with pytest.raises(LeaderboardError, match="another program"):
        Leaderboard(foreign)
    shown = runner.invoke(main, ["leaderboard", "--db", str(bad)])
    assert shown.exit_code != 0 and "corrupt" in shown.output
    with pytest.raises(LeaderboardError, match="is a folder"):
        Leaderboard(tmp_path)


def test_writes_are_all_or_nothing(tmp_path):
    good = Entry(label="a", clean_accuracy=0.9, union_accuracy=0.5, n=10)
    broken = Entry(label=None, clean_accuracy=0.8, union_accuracy=0.4, n=10)  # NOT NULL fails
    with Leaderboard(tmp_path / "db.sqlite") as board:
        with pytest.raises(LeaderboardError, match="nothing was recorded"):
            board.record(good, broken)
        assert board.entries() == []
        board.record(good)
        assert [e.label for e in board.entries()] == ["a"]


def test_bad_report_arguments(tmp_path):
    runner = CliRunner()
    out = ["--out", str(tmp_path / "c"), "--no-db"]
    res = runner.invoke(main, ["compare", str(tmp_path / "missing"), *out])
    assert res.exit_code != 0 and "no such report file or run folder" in res.output
    (tmp_path / "empty").mkdir()
    res = runner.invoke(main, ["compare", str(tmp_path / "empty"), *out])
    assert res.exit_code != 0 and "without report.json" in res.output
    (tmp_path / "x.json").write_text('{"format": "something-else"}')
    res = runner.invoke(main, ["compare", str(tmp_path / "x.json"), *out])
    assert res.exit_code != 0 and "not a multirobust evaluation report" in res.output


def test_evaluate_with_min_norm_and_db_then_compare(mnist_checkpoint, tmp_path):
    runner = CliRunner()
    db = tmp_path / "board.sqlite"
    run = tmp_path / "small_cnn"
    args = ["evaluate", "--checkpoint", str(mnist_checkpoint), "--threat", "linf:0.1"]
    args += ["--n", "8", "--preset", "quick", "--no-curves", "--quiet", "--min-norm", "l2"]
    args += ["--out", str(run), "--db", str(db)]
    res = runner.invoke(main, args)
    assert res.exit_code == 0, res.output
    assert (
        "median minimal l2 distortion" in res.output
        and f"recorded the result in {db}" in res.output
    )
    report = EvaluationReport.from_json(run / "report.json")
    median = report.minimal_distortion["l2"]["median"]
    assert 0 < median < 28
    page = (run / "report.html").read_text()
    assert f'id="min-distortion-l2">{median:.4g}<' in page
    with Leaderboard(db) as board:
        (entry,) = board.entries()
    assert entry.label == "small_cnn" and entry.min_distortion == {"l2": median}
    cmp = runner.invoke(
        main, ["compare", str(run), "--out", str(tmp_path / "cmp"), "--db", str(db)]
    )
    assert cmp.exit_code == 0, cmp.output
    assert f"median l2 {median:.4g}" in cmp.output
    with Leaderboard(db) as board:
        assert len(board.entries()) == 1  # the same evaluation, recorded once


def _record_rows(folder, worker, rounds, rows, start, failures):
    """One writer process: in each round, open a database nobody has created yet at the same
    moment as the other writers, and record ``rows`` rows there."""
    try:
        for r in range(rounds):
            start.wait(timeout=60)
            with Leaderboard(folder / f"board-{r}.sqlite") as board:
                for i in range(rows):
                    board.record(
                        Entry(label=f"w{worker}-{i}", clean_accuracy=0.9, union_accuracy=0.5, n=1)
                    )
    except Exception as err:  # reported to the test, which names it
        failures.put(f"worker {worker}: {type(err).__name__}: {err}")


def test_eight_processes_create_and_fill_new_leaderboards_together(tmp_path):
    """8 real processes open the same new database at the same moment and record into it, ten
    times over (240 rows): every row arrives and no writer takes the half-created database for
    "an SQLite database of another program" (the first version lost one writer's rows in about
    a third of such rounds: it created the schema outside one transaction)."""
    import multiprocessing

    # fork: the children need only sqlite3 and the already imported module (spawn would
    # import torch eight times over on a 2-core machine).
    ctx = multiprocessing.get_context("fork")
    workers, rounds, rows = 8, 10, 3
    start, failures = ctx.Barrier(workers), ctx.Queue()
    procs = [
        ctx.Process(target=_record_rows, args=(tmp_path, w, rounds, rows, start, failures))
        for w in range(workers)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)  # bounded: a deadlock fails the test instead of hanging it
    alive = [p.pid for p in procs if p.is_alive()]
    for p in procs:
        if p.is_alive():
            p.kill()
    assert not alive, f"writers still running after 120 s: {alive}"
    errors = []
    while not failures.empty():
        errors.append(failures.get())
    assert errors == []
    assert all(p.exitcode == 0 for p in procs)
    for r in range(rounds):
        with Leaderboard(tmp_path / f"board-{r}.sqlite") as board:
            labels = {e.label for e in board.entries()}
        assert labels == {f"w{w}-{i}" for w in range(workers) for i in range(rows)}


def test_leaderboard_names_models_by_checkpoint_and_hash_with_the_folder_beside(tmp_path):
    runner = CliRunner()
    db = tmp_path / "board.sqlite"
    report = _report(0.97, 0.61, None)
    report.settings = {
        **report.settings,
        "checkpoint": "zoo/max.pt",
        "model_sha256": "0123456789abcdef" * 4,
    }
    report.to_json(tmp_path / "eval-max" / "report.json")
    res = runner.invoke(main, ["leaderboard", "--db", str(db), "--add", str(tmp_path / "eval-max")])
    assert res.exit_code == 0, res.output
    head, row = res.output.splitlines()[1:3]
    assert head.split()[1:6] == ["model", "(checkpoint)", "sha256", "folder", "dataset"]
    assert row.split()[:5] == ["1", "zoo/max.pt", "0123456789", "eval-max", "mnist"]
    with Leaderboard(db) as board:
        (entry,) = board.entries()
    assert entry.checkpoint == "zoo/max.pt" and entry.model == "zoo/max.pt"


def test_a_version_1_leaderboard_gains_the_checkpoint_column(tmp_path):
    db = tmp_path / "old.sqlite"
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA application_id = 0x6D726C62")
    conn.execute("PRAGMA user_version = 1")
    conn.execute(
        "CREATE TABLE results (key TEXT PRIMARY KEY, label TEXT NOT NULL, recorded_at TEXT NOT "
        "NULL, report_path TEXT, dataset TEXT, n INTEGER NOT NULL, preset TEXT, seed INTEGER, "
        "threats TEXT NOT NULL, clean_accuracy REAL NOT NULL, union_accuracy REAL NOT NULL, "
        "robust_accuracy TEXT NOT NULL, min_distortion TEXT NOT NULL, model_sha256 TEXT, "
        "data_sha256 TEXT)"
    )
    conn.execute(
        "INSERT INTO results VALUES ('k', 'eval-old', '2026-01-01', NULL, 'mnist', 10, 'quick',"
        " 0, '[\"linf:0.3\"]', 0.9, 0.5, '{}', '{}', NULL, NULL)"
    )
    conn.commit()
    conn.close()
    with Leaderboard(db) as board:
        (old,) = board.entries()
        assert old.checkpoint is None and old.model == "eval-old"  # the folder, as before
        board.record(Entry(label="eval-new", checkpoint="new.pt", clean_accuracy=0.8,
                           union_accuracy=0.6, n=10))  # fmt: skip
        assert [e.model for e in board.entries()] == ["new.pt", "eval-old"]
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 2
    conn.close()
