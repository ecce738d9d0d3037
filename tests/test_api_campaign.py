"""Query traces per example, campaigns with resume, transfer, extraction and the reports.

These run on local models (the trace and the campaign treat a RemoteModel the same way; the
HTTP path is covered by test_api_client.py and test_api_server.py).
"""

import json
import math
import shutil
import subprocess

import pytest
import torch
from torch import nn

from multirobust import attacks, data, models
from multirobust.api.campaign import Source, run_campaign
from multirobust.api.extraction import extract
from multirobust.api.lockstep import Trace, norm_at, success_at, trace_attack
from multirobust.api.report import RemoteReport, render_extraction, summarize
from multirobust.api.transfer import transfer_attack

D = 64


class Linear2(nn.Module):
    def __init__(self, w, b):
        super().__init__()
        self.w = nn.Parameter(w)
        self.b = nn.Parameter(torch.tensor(float(b)))

    def forward(self, x):
        z = x.flatten(1) @ self.w + self.b
        return torch.stack([z, -z], 1)


class Counting(nn.Module):
    """Counts the images a model is asked about."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.images = 0

    def forward(self, x):
        self.images += x.shape[0]
        return self.model(x)


@pytest.fixture
def linear():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(D, generator=g)
    x = 0.4 + 0.2 * torch.rand(12, 1, 8, 8, generator=g)
    z = x.flatten(1) @ w
    model = Linear2(w, -float(z.median()))
    y = torch.zeros(12, dtype=torch.long)  # about half are misclassified already
    margin = (z - z.median()).clamp_min(0)
    return model, x, y, margin / w.abs().sum()


def test_budget_is_exact_per_example(linear):
    model, x, y, _ = linear
    atk = attacks.create("rays", threat="linf:1", steps=1000, early_stop=False)
    traces = trace_attack(atk, model, x, y, budget=77, slots=5, progress=False)
    assert all(t.queries <= 77 for t in traces)
    # RayS keeps querying until stopped: every clean-correct example used its whole budget.
    assert all(t.queries == 77 for t in traces if t.clean_met is False)


def test_traces_are_deterministic_and_match_what_queries_showed(linear):
    model, x, y, opt = linear
    atk = attacks.create("rays", threat="linf:0.05", steps=300)
    a = trace_attack(atk, model, x, y, budget=300, slots=4, progress=False)
    b = trace_attack(atk, model, x, y, budget=300, slots=7, progress=False)
    assert [t.to_dict() for t in a] == [t.to_dict() for t in b]  # slots do not change results
    for t, o in zip(a, opt, strict=True):
        if t.clean_met:
            assert t.first_success == 1  # the clean image itself
            continue
        if t.first_success is not None:
            assert t.x_adv is not None
            assert (t.x_adv - x[t.index]).abs().max() <= 0.05 + 1e-6
            with torch.no_grad():
                assert model(t.x_adv).argmax(1).item() != y[t.index].item()
        # The optimum is |z|/‖w‖₁: an example 20% inside ε is found, one 20% outside is not.
        if o < 0.8 * 0.05:
            assert t.first_success is not None
        if o > 1.2 * 0.05:
            assert t.first_success is None


def test_clean_misclassified_examples(linear):
    model, x, y, _ = linear
    atk = attacks.create("square", threat="linf:0.01", steps=5)
    traces = trace_attack(atk, model, x, y, budget=20, progress=False)
    with torch.no_grad():
        wrong = (model(x).argmax(1) != y).tolist()
    assert [t.clean_met for t in traces] == wrong
    s = summarize(traces, [20])
    assert s["clean_accuracy"] == pytest.approx(1 - sum(wrong) / 12)


def test_summary_known_answer():
    traces = [
        Trace(0, queries=3, clean_met=True, first_success=1),
        Trace(1, queries=12, clean_met=False, first_success=10, norm=0.2, best=[(10, 0.2)]),
        Trace(
            2, queries=50, clean_met=False, first_success=40, norm=0.1, best=[(5, 0.9), (40, 0.1)]
        ),
        Trace(3, queries=100, clean_met=False),
    ]
    s = summarize(traces, [20, 100])
    assert s["clean_accuracy"] == 0.75
    assert s["robust_accuracy"] == {"20": 0.5, "100": 0.25}
    assert s["success_rate"] == {"20": pytest.approx(1 / 3), "100": pytest.approx(2 / 3)}
    assert s["median_queries"] == 25.0 and s["successes"] == 2
    assert s["median_norm"]["20"] == 0.9  # median of (0.2, 0.9, inf)
    assert s["median_norm"]["100"] == 0.2  # median of (0.2, 0.1, inf)
    assert s["queries_spent"] == 165
    assert success_at(traces, 20) == [False, True, False, False]
    assert norm_at(traces[2], 30) == 0.9 and math.isinf(norm_at(traces[3], 100))


def test_transfer_from_the_model_itself_is_white_box(mnist_model, mnist_test):
    x, y = mnist_test.images[:30], mnist_test.labels[:30]
    victim = Counting(mnist_model)
    traces = transfer_attack(
        mnist_model, victim, x, y, threat="linf:0.3", options={"steps": 10}, progress=False
    )
    res = attacks.create("pgd", threat="linf:0.3", steps=10, early_stop=False)(mnist_model, x, y)
    with torch.no_grad():
        correct = mnist_model(x).argmax(1) == y
    assert [t.first_success == 2 for t in traces] == (res.success & correct).tolist()
    assert victim.images == 60 and all(t.queries == 2 for t in traces)


def test_campaign_resumes_without_querying_again(linear, tmp_path):
    model, x, y, _ = linear
    counted = Counting(model)
    src = [Source("local", counted, "logits")]
    kw = dict(
        threats=["linf:0.05"],
        budgets=[50, 100],
        attack_names=["rays", "square"],
        chunk=5,
        slots=3,
        progress=False,
    )
    first = run_campaign(src, x, y, resume_dir=tmp_path, **kw)
    spent = counted.images
    assert spent == sum(t.queries for r in first.runs for t in r.traces)
    # Lose the last chunk of the second attack, as if interrupted there.
    chunks = sorted((tmp_path / "linf_0.05-0-square").glob("examples-*.json"))
    lost = json.loads(chunks[-1].read_text())
    chunks[-1].unlink()
    counted.images = 0
    second = run_campaign(src, x, y, resume_dir=tmp_path, **kw)
    assert counted.images == sum(t["queries"] for t in lost["traces"])
    assert first.to_dict()["worst_case"] == second.to_dict()["worst_case"]
    assert [r.summary([50, 100]) for r in first.runs] == [r.summary([50, 100]) for r in second.runs]
    with pytest.raises(ValueError, match="other settings"):
        run_campaign(src, x, y, resume_dir=tmp_path, **{**kw, "budgets": [100]})


def test_report_json_round_trip_and_html(linear, tmp_path):
    model, x, y, _ = linear
    report = run_campaign(
        [Source("local", model, "logits")],
        x,
        y,
        threats=["linf:0.05"],
        budgets=[10, 60],
        attack_names=["rays"],
        progress=False,
    )
    black = report.worst_case()[0]["robust_accuracy"]["60"]
    wb = {"robust_accuracy": black, "clean_accuracy": 0.5, "source": "evaluate"}
    report.white_box = {"linf:0.05": wb}
    assert not report.checks()  # the white-box number is the lower one: nothing to flag
    wb["robust_accuracy"] = black + 2 / 12  # two examples more than the black-box attacks left
    assert [c["name"] for c in report.checks()] == ["black-box-beats-white-box"]
    report.to_json(tmp_path / "r.json")
    again = RemoteReport.from_json(tmp_path / "r.json")
    assert again.to_dict() == report.to_dict()
    html = report.to_html(tmp_path / "r.html")
    assert 'id="runs-linf:0.05"' in html and "white-box ensemble" in html and "<img" in html
    assert "black-box-beats-white-box" in html
    _check_in_browser(tmp_path, tmp_path / "r.html", ["robust @ 60", "white-box ensemble", "rays"])


def test_extraction_and_resume(tmp_path, mnist_model, mnist_test):
    pool = data.load("mnist", "train", limit=30600).images[30000:]  # images the fixture never saw
    ex, ey = mnist_test.images[:200], mnist_test.labels[:200]
    with torch.no_grad():
        ref = mnist_model(ex).argmax(1)
    victim = Counting(mnist_model)
    kw = dict(
        eval_x=ex,
        eval_y=ey,
        reference_labels=ref,
        budgets=(200, 600),
        epochs=2,
        min_steps=30,
        progress=False,
    )
    result, surrogate = extract(victim, pool, resume_dir=tmp_path, **kw)
    assert victim.images == 600
    assert [p.queries for p in result.points] == [200, 600]
    # Far above chance (10%) after 30 steps on 600 answers (about 0.8 measured), and no worse
    # than with 200 by a wide margin.
    assert result.points[1].agreement > 0.5
    assert result.points[1].agreement >= result.points[0].agreement - 0.1
    assert (tmp_path / "surrogate-600.pt").exists() and models.load(tmp_path / "surrogate-600.pt")
    victim.images = 0
    again, _ = extract(victim, pool, resume_dir=tmp_path, **kw)
    assert victim.images == 0 and again.points == result.points
    (tmp_path / "surrogate-600.pt").unlink()  # interrupted while training the last surrogate
    third, _ = extract(victim, pool, resume_dir=tmp_path, **kw)
    assert victim.images == 0 and third.points[1].agreement == pytest.approx(
        result.points[1].agreement
    )
    html = render_extraction(result.to_dict())
    assert 'id="points"' in html
    with pytest.raises(ValueError, match="other settings"):
        extract(victim, pool, resume_dir=tmp_path, **{**kw, "answers": "labels"})


def _check_in_browser(tmp_path, page, texts):
    """Render ``page`` in headless Chromium with no network; every text shown, images loaded."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("Chromium is not installed")
    probe = page.with_name("probe.html")
    script = (
        "<script>window.addEventListener('load',()=>{const p=document.createElement('pre');"
        "p.id='probe';p.textContent=JSON.stringify({text:document.body.innerText,"
        "images:[...document.images].map(i=>i.complete&&i.naturalWidth>0)});"
        "document.body.appendChild(p);});</script>"
    )
    probe.write_text(page.read_text().replace("</body>", script + "</body>"))
    proc = subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--proxy-server=127.0.0.1:9",
            "--host-resolver-rules=MAP * ~NOTFOUND",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--virtual-time-budget=10000",
            "--dump-dom",
            probe.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    import html as html_lib
    import re

    found = re.search(r'<pre id="probe">(.*?)</pre>', proc.stdout, re.S)
    assert found, proc.stdout[-2000:]
    shown = json.loads(html_lib.unescape(found.group(1)))
    for text in texts:
        assert text in shown["text"], text
    assert shown["images"] and all(shown["images"])


def test_white_box_numbers_from_an_evaluation_of_more_images(tmp_path):
    from multirobust.api.campaign import white_box_from_report
    from multirobust.evaluation import EvaluationReport, ThreatOutcome

    robust = [True, False, True, False]
    report = EvaluationReport(
        n=4,
        clean_accuracy=0.75,
        robust_accuracy={"linf:0.3": 0.5},
        union_accuracy=0.5,
        labels=[3, 1, 4, 1],
        clean_pred=[3, 1, 4, 0],
        clean_correct=[True, True, True, False],
        threats={
            "linf:0.3": ThreatOutcome("linf:0.3", ["apgd-ce"], robust, [None] * 4, [None] * 4)
        },
        checks=[],
        settings={"preset": {"name": "standard"}},
    )
    report.to_json(tmp_path / "report.json")
    wb = white_box_from_report(tmp_path / "report.json", ["linf:0.3", "l2:2"], torch.tensor([3, 1]))
    assert wb == {
        "linf:0.3": {
            "robust_accuracy": 0.5,  # the first two images: robust, broken
            "clean_accuracy": 1.0,
            "source": "evaluate, preset standard (first 2 of its 4 images)",
        }
    }
    with pytest.raises(ValueError, match="evaluated other images"):
        white_box_from_report(tmp_path / "report.json", ["linf:0.3"], torch.tensor([1, 3]))
    with pytest.raises(ValueError, match="holds none of the threats l1:10"):
        white_box_from_report(tmp_path / "report.json", ["l1:10"], torch.tensor([3]))
