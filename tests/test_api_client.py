"""RemoteModel: scores per output mode, attacks over HTTP, budgets, gradients, retries.

Output modes run in-process (the FastAPI app through Starlette's TestClient, one app per mode);
retries and the ledger reconciliation run against a server process on 127.0.0.1.
"""

import json

import httpx
import pytest
import torch
from _api import ZOO, launch, stop, wait

from multirobust import attacks, data, models
from multirobust.api import (
    FLOOR_LOG,
    Ledger,
    LedgerMismatch,
    OutputSpec,
    QueryBudgetExceeded,
    RemoteError,
    RemoteGradientError,
    RemoteModel,
    ServerSettings,
    create_app,
)
from multirobust.attacks.base import check_logits

KEY = "client-test-key-0123456789"


@pytest.fixture(scope="module")
def victim():
    return models.load(ZOO / "standard.pt")


@pytest.fixture(scope="module")
def batch():
    ds = data.load("mnist", "test", limit=32)
    return ds.images, ds.labels


def _test_client(app):
    import warnings

    with warnings.catch_warnings():
        # Starlette asks for httpx2 in its test client; the httpx it is given works.
        warnings.simplefilter("ignore")
        from fastapi.testclient import TestClient
    return TestClient(app)


def _remote(victim, tmp_path, *, budget=None, key_budget=None, quantize=False, **output):
    keys = {__import__("hashlib").sha256(KEY.encode()).hexdigest(): "k1"}
    settings = ServerSettings(
        name="victim",
        input_shape=(1, 28, 28),
        num_classes=10,
        output=OutputSpec(**output),
        keys=keys,
        budget=key_budget,
        quantize_input=quantize,
    )
    app = create_app(victim, settings, Ledger(tmp_path / "ledger.sqlite"))
    app.state.service.warm_up()
    return RemoteModel("http://testserver", key=KEY, budget=budget, client=_test_client(app))


def _top2_margin(s):
    top = s.topk(2, dim=1).values
    return top[:, 0] - top[:, 1]


def test_logits_travel_exactly(victim, batch, tmp_path):
    x, _ = batch
    remote = _remote(victim, tmp_path, mode="logits")
    assert remote.output == "logits" and remote.num_classes == 10
    with torch.no_grad():
        assert torch.equal(remote(x), victim(x))
    assert remote.queries == 32


def test_probabilities_give_log_probabilities(victim, batch, tmp_path):
    x, _ = batch
    s = _remote(victim, tmp_path, mode="probabilities")(x)
    with torch.no_grad():
        z = victim(x)
    check_logits(s, x.shape[0])  # accepted by the attack contract (not probability rows)
    assert torch.equal(s.argmax(1), z.argmax(1))
    # log p = z − logsumexp(z): margins between classes are the logits' margins.
    assert torch.allclose(_top2_margin(s), _top2_margin(z), atol=1e-3, rtol=1e-4)


def test_top_k_keeps_the_shown_margins(victim, batch, tmp_path):
    x, _ = batch
    s = _remote(victim, tmp_path, mode="top-k", top_k=3)(x)
    with torch.no_grad():
        z = victim(x)
    check_logits(s, x.shape[0])
    assert torch.equal(s.argmax(1), z.argmax(1))
    assert torch.allclose(_top2_margin(s), _top2_margin(z), atol=1e-3, rtol=1e-4)
    shown = s.topk(3, dim=1).values
    hidden = s.topk(10, dim=1).values[:, 3:]
    # Every hidden class gets the same estimate, never above a shown class.
    assert (hidden == hidden[:, :1]).all() and (hidden[:, 0] <= shown[:, 2]).all()


def test_label_only(victim, batch, tmp_path):
    x, _ = batch
    s = _remote(victim, tmp_path, mode="label")(x)
    check_logits(s, x.shape[0])
    with torch.no_grad():
        assert torch.equal(s.argmax(1), victim(x).argmax(1))
    assert set(s.unique().tolist()) == {-1.0, 0.0}


def test_rounding_and_quantisation(victim, batch, tmp_path):
    x, _ = batch
    remote = _remote(victim, tmp_path, mode="probabilities", decimals=2, quantize=True)
    s = remote(x[:4])
    p = s.exp()
    shown = p[s > FLOOR_LOG + 1]
    assert torch.allclose(shown * 100, (shown * 100).round(), atol=1e-4)
    assert (s[p < 0.005] == torch.tensor(FLOOR_LOG)).all()  # rounded to 0: the documented floor
    # The server quantised its inputs: the same answer as for the 8-bit images.
    q = (x[:4] * 255).round() / 255
    with torch.no_grad():
        expect = (victim(q).softmax(1).double() * 100).round() / 100
    assert torch.allclose(p.double(), expect.clamp_min(1e-38), atol=1e-6)


def test_square_over_http_is_the_local_attack(victim, batch, tmp_path):
    """Logits travel exactly, so the same seed gives the same adversarial examples."""
    x, y = batch
    atk = attacks.create("square", threat="linf:0.3", steps=40)
    remote = _remote(victim, tmp_path, mode="logits")
    a = atk(remote, x[:8], y[:8])
    b = atk(victim, x[:8], y[:8])
    assert torch.equal(a.x_adv, b.x_adv) and torch.equal(a.success, b.success)
    assert remote.queries == a.queries


def test_rays_over_a_label_only_api_is_the_local_attack(victim, batch, tmp_path):
    x, y = batch
    atk = attacks.create("rays", threat="linf:0.3", steps=60)
    remote = _remote(victim, tmp_path, mode="label")
    a = atk(remote, x[:6], y[:6])
    b = atk(victim, x[:6], y[:6])
    assert torch.equal(a.x_adv, b.x_adv)


def test_no_gradients(victim, batch, tmp_path):
    x, y = batch
    remote = _remote(victim, tmp_path, mode="logits")
    xg = x[:2].clone().requires_grad_(True)
    with pytest.raises(RemoteGradientError, match="no gradients"):
        remote(xg).sum().backward()
    with pytest.raises(RemoteGradientError, match="no gradients"):
        attacks.create("pgd", threat="linf:0.3", steps=2)(remote, x[:2], y[:2])


def test_client_budget_stops_before_sending(victim, batch, tmp_path):
    x, _ = batch
    remote = _remote(victim, tmp_path, budget=10, mode="label")
    remote(x[:8])
    with pytest.raises(QueryBudgetExceeded, match="8 of 10 spent, the call needs 4 more"):
        remote(x[:4])
    assert remote.queries == 8 and remote.server_usage()["queries_answered"] == 8


def test_server_budget_is_not_retried(victim, batch, tmp_path):
    x, _ = batch
    remote = _remote(victim, tmp_path, key_budget=10, mode="label")
    remote(x[:8])
    with pytest.raises(QueryBudgetExceeded, match="has 2 of its 10 left"):
        remote(x[:4])
    assert remote.retries_used == 0 and remote.reconcile()["server"] == 8


def test_shape_and_url_errors(victim, tmp_path):
    remote = _remote(victim, tmp_path, mode="label")
    with pytest.raises(ValueError, match=r"shape \(N, 1, 28, 28\)"):
        remote(torch.zeros(2, 3, 28, 28))
    with pytest.raises(ValueError, match="Invalid server URL"):
        RemoteModel("ftp://example")
    with pytest.raises(ValueError, match="Invalid output"):
        RemoteModel("http://127.0.0.1:9", output="scores")
    with pytest.raises(ValueError, match="returns 'label' outputs, not 'logits'"):
        RemoteModel("http://testserver", key=KEY, output="logits", client=remote._client)
    with pytest.raises(RemoteError, match="HTTP 403"):
        RemoteModel("http://testserver", key="wrong", client=remote._client)


class Flaky(httpx.BaseTransport):
    """Every third inference request fails with a 503 before reaching the server, and every
    third after it reached the server and was answered (the response is lost on the way)."""

    def __init__(self):
        self.inner = httpx.HTTPTransport()
        self.infers = 0

    def handle_request(self, request):
        if request.url.path.endswith("/infer"):
            self.infers += 1
            if self.infers % 3 == 1:
                return httpx.Response(503, json={"error": "temporarily unavailable"})
            if self.infers % 3 == 2:
                self.inner.handle_request(request).read()
                raise httpx.ReadError("connection reset after the server answered")
        return self.inner.handle_request(request)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("client-server")
    keys = [KEY] + [f"{w}-{KEY}" for w in ("second", "third", "fourth")]
    (tmp / "keys.txt").write_text("\n".join(keys) + "\n")
    s = launch("--keys", str(tmp / "keys.txt"), ledger=tmp / "ledger.sqlite")
    try:
        yield wait(s)
    finally:
        stop(s)


def test_retries_count_once_on_both_sides(server, victim, batch):
    x, _ = batch
    flaky = Flaky()
    with httpx.Client(base_url=server.url, transport=flaky, timeout=60) as http:
        remote = RemoteModel(server.url, key=KEY, backoff=0.01, client=http)
        for i in range(4):
            s = remote(x[i * 5 : (i + 1) * 5])
            with torch.no_grad():
                assert torch.equal(s.argmax(1), victim(x[i * 5 : (i + 1) * 5]).argmax(1))
        assert remote.queries == 20 and remote.requests == 4
        assert remote.retries_used == 8  # two failures per request
        assert flaky.infers == 12
        report = remote.reconcile()
        assert report["client"] == report["server"] == 20
    # The lost responses were answered once and replayed once, never charged twice.
    rows = Ledger(server.ledger).rows()
    assert sum(r["images"] for r in rows if r["status"] == "answered") == 20


def test_reconcile_notices_another_client(server, batch):
    x, _ = batch
    key = f"second-{KEY}"
    with RemoteModel(server.url, key=key) as a, RemoteModel(server.url, key=key) as b:
        a(x[:3])
        b(x[:2])
        with pytest.raises(LedgerMismatch, match="counted 3 queries but the server's ledger has 5"):
            a.reconcile()
        assert a.reconcile(strict=False)["difference"] == 2


def _cli(args):
    from click.testing import CliRunner

    from multirobust.cli import main

    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    return result


def test_attack_remote_command(server, tmp_path):
    key = f"third-{KEY}"
    out = tmp_path / "run"
    args = (
        f"attack --remote {server.url} --key {key} --budget 60 --budgets 20,60 --threat linf:0.3 "
        f"--attack square,rays --n 6 --checkpoint {ZOO / 'standard.pt'} --out {out} --quiet"
    ).split()
    _cli(args)
    report = json.loads((out / "remote-attack.json").read_text())
    assert [(r["output"], r["attack"]) for r in report["runs"]] == [
        ("probabilities", "square"),
        ("probabilities", "rays"),
        ("logits", "square"),
        ("logits", "rays"),
    ]
    spent = 0
    for run in report["runs"][:2]:
        assert run["ledger"]["client"] == run["ledger"]["server"] > 0
        assert all(t["queries"] <= 60 for t in run["traces"])
        spent += run["ledger"]["server"]
    assert "robust @ 60" in (out / "remote-attack.html").read_text()
    usage = httpx.get(f"{server.url}/v2/usage", headers={"Authorization": f"Bearer {key}"}).json()
    assert usage["queries_answered"] == spent
    from click.testing import CliRunner

    from multirobust.cli import main

    again = CliRunner().invoke(main, args)
    assert again.exit_code != 0 and "--resume" in again.output
    _cli(args + ["--resume"])  # every chunk is done: nothing is queried again
    usage = httpx.get(f"{server.url}/v2/usage", headers={"Authorization": f"Bearer {key}"}).json()
    assert usage["queries_answered"] == spent


@pytest.mark.slow  # extraction itself is covered in-process by test_api_campaign.py
def test_extract_command(server, tmp_path):
    key = f"fourth-{KEY}"
    out = tmp_path / "extract"
    args = (
        f"extract --remote {server.url} --key {key} --budgets 60,120 --pool mnist "
        f"--pool-offset 30000 --eval-n 40 --victim-checkpoint {ZOO / 'standard.pt'} --epochs 1 "
        f"--min-steps 10 --transfer-threat linf:0.3 --transfer-n 10 --out {out} --quiet"
    ).split()
    _cli(args)
    result = json.loads((out / "extraction.json").read_text())
    assert [p["queries"] for p in result["points"]] == [60, 120]
    assert result["transfer"]["linf:0.3"]["queries"] == 20  # one clean query, one candidate
    assert result["settings"]["queries_this_run"] == 140
    assert 'id="points"' in (out / "extraction.html").read_text()
    usage = httpx.get(f"{server.url}/v2/usage", headers={"Authorization": f"Bearer {key}"}).json()
    assert usage["queries_answered"] == 140


def test_attack_remote_usage_errors(tmp_path):
    from click.testing import CliRunner

    from multirobust.cli import main

    def run(text):
        return CliRunner().invoke(main, text.split())

    r = run("attack --threat linf:0.3")
    assert r.exit_code != 0 and "Pass either --checkpoint FILE" in r.output
    r = run(f"attack --checkpoint {ZOO / 'standard.pt'} --threat linf:0.3 --key k --n 2")
    assert r.exit_code != 0 and "--key only apply with --remote URL" in r.output
    r = run("attack --remote http://127.0.0.1:9 --threat linf:0.3 --dataset mnist")
    assert r.exit_code != 0 and "--remote needs --out" in r.output
    r = run(f"attack --remote http://127.0.0.1:9 --threat linf:0.3 --out {tmp_path / 'o'}")
    assert r.exit_code != 0 and "needs --dataset" in r.output
    r = run(
        f"attack --remote http://127.0.0.1:9 --threat linf:0.3 --dataset mnist --budget 100 "
        f"--budgets 50,500 --out {tmp_path / 'o'}"
    )
    assert r.exit_code != 0 and "budgets must lie in 1..100" in r.output
