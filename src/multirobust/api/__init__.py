"""The model behind an API: a served classifier, black-box attacks over HTTP, model extraction.

- :func:`serve` / :func:`create_app` (:mod:`.server`): Open Inference Protocol v2 over HTTP
  (FastAPI on uvicorn) with API keys, budgets, a rate limit and a SQLite query
  :class:`Ledger`.
- :class:`RemoteModel` (:mod:`.client`): the served model as an ``nn.Module`` that score- and
  decision-based attacks call like a local one, counting and reconciling its queries.

The server needs FastAPI and uvicorn, the client httpx (``pip install 'multirobust[api]'``);
they are imported when first used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .ledger import BudgetExhausted, Ledger, RateLimited, RequestConflict, key_id, read_keys
from .outputs import FLOOR, FLOOR_LOG, MODES, OutputSpec, scores
from .protocol import ProtocolError, infer_request, parse_infer_request, parse_infer_response

if TYPE_CHECKING:
    from .client import (
        LedgerMismatch,
        QueryBudgetExceeded,
        RemoteError,
        RemoteGradientError,
        RemoteModel,
    )
    from .server import ApiError, ServerSettings, Service, create_app, serve

_LAZY = {
    "RemoteModel": "client",
    "QueryBudgetExceeded": "client",
    "RemoteError": "client",
    "RemoteGradientError": "client",
    "LedgerMismatch": "client",
    "ServerSettings": "server",
    "Service": "server",
    "ApiError": "server",
    "create_app": "server",
    "serve": "server",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


__all__ = [
    "FLOOR",
    "FLOOR_LOG",
    "MODES",
    "ApiError",
    "BudgetExhausted",
    "Ledger",
    "LedgerMismatch",
    "OutputSpec",
    "ProtocolError",
    "QueryBudgetExceeded",
    "RateLimited",
    "RemoteError",
    "RemoteGradientError",
    "RemoteModel",
    "RequestConflict",
    "ServerSettings",
    "Service",
    "create_app",
    "infer_request",
    "key_id",
    "parse_infer_request",
    "parse_infer_response",
    "read_keys",
    "scores",
    "serve",
]
