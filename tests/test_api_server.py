"""`multirobust serve` as a real process on 127.0.0.1: protocol, keys, budgets, rate limits,
bad requests, concurrency and the ledger. Everything here goes over TCP to a server process."""

import json
import pickle
import threading
import time

import httpx
import pytest
import torch
from _api import ZOO, auth, infer_body, launch, stop, wait

from multirobust import data
from multirobust.api import Ledger, key_id

KEYS = [f"test-key-{i:02d}-{'x' * 12}" for i in range(48)]
LOAD_KEYS = KEYS[16:48]  # one per load-test client
BUDGET = 200
MAX_BATCH = 32
MAX_BODY = 1_000_000  # a batch of 32 MNIST images is about 0.4 MB of JSON


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    """Two servers, started together: keys + budget + limits, and rate-limited."""
    tmp = tmp_path_factory.mktemp("servers")
    keys = tmp / "keys.txt"
    keys.write_text("# test keys\n" + "\n".join(KEYS) + "\n\n")
    started = {
        "guarded": launch(
            "--keys",
            str(keys),
            "--budget",
            str(BUDGET),
            "--max-batch",
            str(MAX_BATCH),
            "--max-body-bytes",
            str(MAX_BODY),
            ledger=tmp / "guarded.sqlite",
        ),
        "limited": launch(
            "--keys",
            str(keys),
            "--rate-limit",
            "10",
            "--rate-window",
            "1.5",
            "--max-batch",
            "8",
            ledger=tmp / "limited.sqlite",
        ),
    }
    try:
        yield {k: wait(s) for k, s in started.items()}
    finally:
        for s in started.values():
            stop(s)


@pytest.fixture(scope="module")
def images():
    return data.load("mnist", "test", limit=64).images


def _infer(server, body, key=None, headers=None):
    headers = {**(auth(key) if key else {}), **(headers or {})}
    return httpx.post(
        f"{server.url}/v2/models/{server.name}/infer", json=body, headers=headers, timeout=60
    )


def _usage(server, key):
    r = httpx.get(f"{server.url}/v2/usage", headers=auth(key), timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


def test_health_and_metadata(servers):
    s = servers["guarded"]
    assert httpx.get(f"{s.url}/v2/health/live").json() == {"live": True}
    assert httpx.get(f"{s.url}/v2/health/ready").json() == {"ready": True}
    assert s.name == "standard"  # the checkpoint's file stem
    meta = httpx.get(f"{s.url}/v2/models/standard", headers=auth(KEYS[0])).json()
    assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 1, 28, 28]}]
    assert meta["outputs"] == [{"name": "probabilities", "datatype": "FP32", "shape": [-1, 10]}]
    assert meta["parameters"]["max_batch"] == MAX_BATCH
    assert meta["parameters"]["budget"] == BUDGET
    r = httpx.get(f"{s.url}/v2/models/other", headers=auth(KEYS[0]))
    assert r.status_code == 404 and "Unknown model 'other'" in r.json()["error"]
    assert httpx.get(f"{s.url}/v2").json()["models"] == ["standard"]


def test_inference_matches_the_model(servers, images):
    s = servers["guarded"]
    r = _infer(s, infer_body(images[:5]), key=KEYS[0])
    assert r.status_code == 200, r.text
    out = r.json()["outputs"][0]
    assert out["name"] == "probabilities" and out["shape"] == [5, 10]
    from multirobust import models

    with torch.no_grad():
        local = models.load(ZOO / "standard.pt")(images[:5]).softmax(1)
    sent = torch.tensor(out["data"]).view(5, 10)
    assert (sent - local).abs().max() < 1e-6  # the same float32 softmax, up to its last bits


def test_keys(servers, images):
    s = servers["guarded"]
    body = infer_body(images[:1])
    r = _infer(s, body)
    assert r.status_code == 401 and "Missing API key" in r.json()["error"]
    assert r.headers["www-authenticate"].startswith("Bearer")
    r = _infer(s, body, headers={"Authorization": "Basic abc"})
    assert r.status_code == 401 and "Malformed Authorization" in r.json()["error"]
    r = _infer(s, body, key="not-a-key")
    assert r.status_code == 403 and r.json()["error"] == "Unknown API key"
    r = httpx.get(f"{s.url}/v2/models/standard")
    assert r.status_code == 401  # metadata needs a key too
    assert Ledger(s.ledger).answered() == Ledger(s.ledger).answered()  # readable while serving


def _raw(first: str) -> bytes:
    """A one-image request whose first value is written as ``first`` (JSON text)."""
    values = ",".join([first] + ["0.5"] * 783)
    return (
        '{"inputs":[{"name":"input","shape":[1,1,28,28],"datatype":"FP32","data":['
        + values
        + "]}]}"
    ).encode()


def _case(images):
    one = infer_body(images[:1])

    def edit(**changes):
        body = json.loads(json.dumps(one))
        body["inputs"][0].update(changes)
        return body

    good_data = one["inputs"][0]["data"]
    return {
        "malformed JSON": (b'{"inputs": [', 400, "Malformed JSON"),
        "not an object": (b"[1, 2, 3]", 400, "must be a JSON object"),
        "no inputs": (json.dumps({"id": "x"}).encode(), 400, "exactly one tensor"),
        "two inputs": (
            json.dumps({"inputs": [one["inputs"][0]] * 2}).encode(),
            400,
            "exactly one tensor",
        ),
        "wrong name": (edit(name="image"), 400, "Unknown input 'image'"),
        "wrong datatype": (edit(datatype="FP16"), 400, "Unsupported datatype 'FP16'"),
        "wrong shape": (edit(shape=[1, 3, 28, 28]), 400, "Invalid shape [1, 3, 28, 28]"),
        "shape not ints": (edit(shape=[1, 1, 28.0, 28]), 400, "Invalid shape"),
        "empty batch": (edit(shape=[0, 1, 28, 28], data=[]), 400, "Empty input"),
        "too few values": (edit(data=good_data[:-1]), 400, "holds 783 values"),
        "NaN literal": (_raw("NaN"), 400, "NaN"),
        "overflow": (_raw("1e999"), 400, "NaN or infinite"),
        "strings": (edit(data=["0.5"] * 784), 400, "string values"),
        "booleans": (edit(data=[True] * 784), 400, "boolean values"),
        "above 1": (edit(data=[1.5] + good_data[1:]), 400, "must lie in [0, 1]"),
        "below 0": (edit(data=[-0.1] + good_data[1:]), 400, "must lie in [0, 1]"),
        "bad id": ({**one, "id": 5}, 400, '"id" must be a string'),
        "unknown output": ({**one, "outputs": [{"name": "logits"}]}, 400, "Unknown output"),
        "batch over the limit": (
            infer_body(images[: MAX_BATCH + 1]),
            413,
            f"maximum batch size {MAX_BATCH}",
        ),
    }


@pytest.mark.parametrize("case", list(_case(torch.zeros(1, 1, 28, 28)).keys()))
def test_bad_requests_are_refused_and_not_counted(servers, images, case):
    s = servers["guarded"]
    key = KEYS[1]
    before = _usage(s, key)
    body, status, message = _case(images)[case]
    if isinstance(body, bytes):
        r = httpx.post(
            f"{s.url}/v2/models/standard/infer",
            content=body,
            headers={**auth(key), "Content-Type": "application/json"},
            timeout=60,
        )
    else:
        r = _infer(s, body, key=key)
    assert r.status_code == status, r.text
    assert message in r.json()["error"], r.json()
    assert _usage(s, key)["queries_spent"] == before["queries_spent"]
    # The server keeps serving.
    assert _infer(s, infer_body(images[:1]), key=KEYS[2]).status_code == 200


def test_body_over_the_limit(servers):
    s = servers["guarded"]
    key = KEYS[1]
    before = _usage(s, key)["queries_spent"]
    big = b'{"inputs": [' + b" " * (MAX_BODY + 10) + b"]}"
    r = httpx.post(f"{s.url}/v2/models/standard/infer", content=big, headers=auth(key), timeout=60)
    assert r.status_code == 413 and "exceeds the limit" in r.json()["error"]

    def chunks():  # no Content-Length: the server counts while it reads
        yield b'{"inputs": ['
        for _ in range(MAX_BODY // 65536 + 2):
            yield b" " * 65536

    r = httpx.post(
        f"{s.url}/v2/models/standard/infer", content=chunks(), headers=auth(key), timeout=60
    )
    assert r.status_code == 413
    r = httpx.post(
        f"{s.url}/v2/models/standard/infer",
        content=b"{}",
        headers={**auth(key), "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert r.status_code == 415
    assert _usage(s, key)["queries_spent"] == before


def test_a_pickle_is_never_unpickled(servers, tmp_path):
    """A pickled body whose loading would create a file: refused, and no file appears."""
    s = servers["guarded"]
    marker = tmp_path / "unpickled"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    body = pickle.dumps({"inputs": [Evil()]}, protocol=2)
    for ctype, status in (
        ("application/json", 400),
        ("application/octet-stream", 415),
        ("application/python-pickle", 415),
    ):
        r = httpx.post(
            f"{s.url}/v2/models/standard/infer",
            content=body,
            headers={**auth(KEYS[9]), "Content-Type": ctype},
            timeout=60,
        )
        assert r.status_code == status, r.text
    assert not marker.exists()
    assert _usage(s, KEYS[9])["queries_spent"] == 0


def test_budget_cannot_be_bypassed_by_batching(servers, images):
    s = servers["guarded"]
    key = KEYS[3]
    for _ in range(BUDGET // MAX_BATCH):  # 6 batches of 32 = 192
        assert _infer(s, infer_body(images[:MAX_BATCH]), key=key).status_code == 200
    left = BUDGET - (BUDGET // MAX_BATCH) * MAX_BATCH
    r = _infer(s, infer_body(images[: left + 1]), key=key)
    assert r.status_code == 429
    assert r.json()["budget_remaining"] == left and r.json()["budget"] == BUDGET
    assert _infer(s, infer_body(images[:left]), key=key).status_code == 200
    r = _infer(s, infer_body(images[:1]), key=key)
    assert r.status_code == 429 and r.json()["budget_remaining"] == 0
    assert "Query budget exhausted" in r.json()["error"]
    usage = _usage(s, key)
    assert usage["queries_answered"] == BUDGET and usage["budget_remaining"] == 0


def test_concurrent_requests_race_the_budget(servers, images):
    """40 simultaneous batches of 10 against a budget of 200: exactly 20 are answered."""
    s = servers["guarded"]
    key = KEYS[4]
    body = infer_body(images[:10])
    start = threading.Barrier(40)
    codes = []

    def one():
        with httpx.Client(timeout=120) as c:
            start.wait()
            r = c.post(f"{s.url}/v2/models/standard/infer", json=body, headers=auth(key))
            codes.append(r.status_code)

    threads = [threading.Thread(target=one) for _ in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=180)
    assert sorted(set(codes)) == [200, 429] and len(codes) == 40
    assert codes.count(200) == BUDGET // 10
    assert Ledger(s.ledger).answered(key_id(KEYS[4])) == (BUDGET, BUDGET // 10)


def test_retries_with_the_same_id_are_not_charged_twice(servers, images):
    s = servers["guarded"]
    key = KEYS[5]
    first = _infer(s, infer_body(images[:4], request_id="req-1"), key=key)
    assert first.status_code == 200 and first.json()["id"] == "req-1"
    again = _infer(s, infer_body(images[:4], request_id="req-1"), key=key)
    assert again.status_code == 200 and again.json()["outputs"] == first.json()["outputs"]
    assert _usage(s, key)["queries_answered"] == 4
    other = _infer(s, infer_body(images[4:8], request_id="req-1"), key=key)
    assert other.status_code == 409 and "other images" in other.json()["error"]
    # Ids are per key: another key's "req-1" is a new request.
    assert _infer(s, infer_body(images[4:8], request_id="req-1"), key=KEYS[6]).status_code == 200
    assert _usage(s, key)["queries_answered"] == 4


def test_ledger_rows(servers, images):
    s = servers["guarded"]
    key = KEYS[7]
    r = _infer(s, infer_body(images[:3], request_id="ledger-1"), key=key)
    rows = Ledger(s.ledger).rows(key_id(key))
    assert len(rows) == 1
    row = rows[0]
    assert row["images"] == 3 and row["status"] == "answered" and row["output"] == "probabilities"
    assert row["request_id"] == "ledger-1" and abs(row["time"] - time.time()) < 600
    assert json.loads(row["returned"]) == r.json()["outputs"]
    assert KEYS[7] not in s.ledger.read_bytes().decode("latin-1")  # only the key's hash prefix


def test_rate_limit(servers, images):
    s = servers["limited"]
    key = KEYS[8]
    assert _infer(s, infer_body(images[:8]), key=key).status_code == 200
    r = _infer(s, infer_body(images[:8]), key=key)
    assert r.status_code == 429
    body = r.json()
    assert "Rate limit" in body["error"] and 0 < body["retry_after"] <= 1.5
    assert body["budget_remaining"] is None  # no budget on this server
    assert int(r.headers["retry-after"]) >= 1
    time.sleep(body["retry_after"] + 0.1)
    assert _infer(s, infer_body(images[:8]), key=key).status_code == 200
    assert _usage(s, key)["queries_answered"] == 16


@pytest.mark.parametrize("clients", [1, 8, 32])
def test_load_concurrent_clients(servers, images, clients):
    """N clients (a key each), 6 requests each (batches of 1–4), bounded to 60 s: every request
    answered, no 5xx, and the ledger grows by exactly the images answered."""
    s = servers["guarded"]
    book = Ledger(s.ledger)
    before = book.answered()
    answered, codes, errors = [], [], []
    deadline = time.monotonic() + 60

    def run(i):
        headers = auth(LOAD_KEYS[i])
        with httpx.Client(base_url=s.url, timeout=60, headers=headers) as c:
            for j in range(6):
                if time.monotonic() > deadline:
                    return
                k = 1 + (i + j) % 4
                try:
                    r = c.post(f"/v2/models/{s.name}/infer", json=infer_body(images[:k]))
                except httpx.HTTPError as err:
                    errors.append(repr(err))
                    continue
                codes.append(r.status_code)
                if r.status_code == 200:
                    answered.append(k)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=90)
    assert not errors and all(c == 200 for c in codes), (errors, set(codes))
    assert len(codes) == 6 * clients
    after = book.answered()
    assert after[0] - before[0] == sum(answered)
    assert after[1] - before[1] == len(answered)


def test_refuses_an_unsafe_checkpoint(tmp_path):
    """The command stops before any server starts (in-process: nothing listens)."""
    from click.testing import CliRunner

    from multirobust.cli import main

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    bad = tmp_path / "evil.pt"
    bad.write_bytes(pickle.dumps({"format": "multirobust-checkpoint", "x": Evil()}, protocol=2))
    result = CliRunner().invoke(main, ["serve", "--checkpoint", str(bad), "--port", "0"])
    assert result.exit_code == 1
    assert "pwned" not in result.output
    assert "Cannot read checkpoint" in result.output or "Refusing" in result.output, result.output
    assert "serving" not in result.output
