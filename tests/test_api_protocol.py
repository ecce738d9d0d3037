"""OIP v2 parsing and the client's scores, as pure functions (the HTTP path is in
test_api_server.py and test_api_client.py)."""

import json
import math

import numpy as np
import pytest
import torch

from multirobust.api import (
    FLOOR_LOG,
    OutputSpec,
    ProtocolError,
    infer_request,
    parse_infer_request,
    scores,
)
from multirobust.api.ledger import BudgetExhausted, Ledger, RateLimited, Replay, Reservation


def _body(images, **extra):
    return json.dumps({**infer_request(images), **extra}).encode()


def test_round_trip_is_exact_and_nested_data_is_accepted():
    rng = np.random.default_rng(0)
    x = rng.random((2, 1, 3, 3), dtype=np.float32)
    req = parse_infer_request(_body(x), input_shape=(1, 3, 3), max_batch=4)
    assert req.images.dtype == np.float32 and np.array_equal(req.images, x)
    nested = json.loads(_body(x))
    nested["inputs"][0]["data"] = x.tolist()  # OIP allows nested rows too
    again = parse_infer_request(json.dumps(nested).encode(), input_shape=(1, 3, 3), max_batch=4)
    assert np.array_equal(again.images, x) and again.digest == req.digest


def test_errors_carry_a_status():
    x = np.zeros((5, 1, 3, 3), dtype=np.float32)
    with pytest.raises(ProtocolError, match="maximum batch size 4") as err:
        parse_infer_request(_body(x), input_shape=(1, 3, 3), max_batch=4)
    assert err.value.status == 413
    deep = b'{"inputs": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    with pytest.raises(ProtocolError, match="Malformed JSON") as err:
        parse_infer_request(deep, input_shape=(1, 3, 3), max_batch=4)
    assert err.value.status == 400
    huge = _body(np.zeros((1, 1, 3, 3), np.float32)).replace(b"0.0", b"1" * 5000, 1)
    with pytest.raises(ProtocolError, match="Malformed JSON|NaN or infinite|must lie in"):
        parse_infer_request(huge, input_shape=(1, 3, 3), max_batch=4)


def test_top_k_scores_known_answer():
    outputs = {
        "top_k_labels": np.array([[2, 0]]),
        "top_k_probabilities": np.array([[0.5, 0.3]], dtype=np.float32),
    }
    s = scores(outputs, "top-k", 4, torch.zeros(1))
    # Hidden classes 1 and 3 share the 0.2 left: 0.1 each (below the shown 0.3).
    expect = torch.tensor([[0.3, 0.1, 0.5, 0.1]], dtype=torch.float64).log().float()
    assert torch.allclose(s, expect, atol=1e-6)
    # Rounded probabilities may sum above 1: the hidden classes get the floor.
    outputs["top_k_probabilities"] = np.array([[0.7, 0.31]], dtype=np.float32)
    s = scores(outputs, "top-k", 4, torch.zeros(1))
    assert s[0, 1] == s[0, 3] == torch.tensor(FLOOR_LOG)


def test_label_scores_and_bad_labels():
    s = scores({"label": np.array([2, 0])}, "label", 3, torch.zeros(1, dtype=torch.float64))
    assert s.dtype == torch.float64 and s.tolist() == [[-1, -1, 0], [0, -1, -1]]
    with pytest.raises(ValueError, match="labels outside 0..2"):
        scores({"label": np.array([3])}, "label", 3, torch.zeros(1))


def test_output_spec_encodes_rounded_values():
    logits = torch.tensor([[2.0, 0.0, -1.0]])
    out = OutputSpec("probabilities", decimals=3).encode(logits)[0]
    p = logits.softmax(1)[0].tolist()
    assert out["data"] == [round(v, 3) for v in p]
    assert json.dumps(out["data"]) == json.dumps([round(v, 3) for v in p])  # short decimals
    with pytest.raises(ValueError, match="Invalid output mode"):
        OutputSpec("scores")
    with pytest.raises(ValueError, match="Invalid top_k: 5"):
        OutputSpec("top-k", top_k=5).check_classes(3)


def test_ledger_reserve_answer_fail_replay(tmp_path):
    book = Ledger(tmp_path / "l.sqlite")
    held = book.reserve("k", 3, budget=5, request_id="a", digest="d1")
    assert isinstance(held, Reservation) and book.spent("k") == 3
    with pytest.raises(BudgetExhausted, match="needs 3 queries and the key has 2 of its 5 left"):
        book.reserve("k", 3, budget=5)
    book.fail(held, "model error")
    assert book.spent("k") == 0 and book.answered("k") == (0, 0)
    held = book.reserve("k", 3, budget=5, request_id="a", digest="d1")  # a failed id is free
    book.answer(held, output="label", returned="[1]")
    assert book.reserve("k", 3, budget=5, request_id="a", digest="d1") == Replay("[1]")
    assert book.answered("k") == (3, 1) and book.spent("k") == 3
    with pytest.raises(RateLimited) as err:
        book.reserve("k", 2, rate_limit=4, rate_window=60)
    assert 0 < err.value.retry_after <= 60 and not math.isnan(err.value.retry_after)
    # A crash leaves a reservation behind: recovered as interrupted, not counted.
    book.reserve("k", 1)
    assert book.recover() == 1 and book.spent("k") == 3


class Flaky(torch.nn.Module):
    """Fails on an all-zero image, returns NaN logits on an all-one image."""

    def forward(self, x):
        if bool((x.flatten(1).sum(1) == 0).any()):
            raise RuntimeError("boom")
        z = x.flatten(1)[:, :3] * 10
        return torch.where((x.flatten(1).min(1).values == 1).unsqueeze(1), float("nan"), z)


def test_a_failed_inference_is_not_counted(tmp_path):
    from multirobust.api import ApiError, ServerSettings, Service

    settings = ServerSettings(name="m", input_shape=(1, 3, 3), num_classes=3, budget=10)
    service = Service(Flaky(), settings, Ledger(tmp_path / "l.sqlite"))
    for fill, detail in ((0.0, "boom"), (1.0, "NaN")):
        with pytest.raises(ApiError, match="nothing was counted") as err:
            service.infer("k", _body(np.full((2, 1, 3, 3), fill, np.float32)))
        assert err.value.status == 500
        assert service.ledger.spent("k") == 0
        assert detail in service.ledger.rows("k")[0]["reason"]
    reply = json.loads(service.infer("k", _body(np.full((2, 1, 3, 3), 0.5, np.float32))))
    assert reply["outputs"][0]["shape"] == [2, 3] and service.ledger.spent("k") == 2
