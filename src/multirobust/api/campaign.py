"""A campaign of black-box attacks against one model, through its API and locally, resumable.

:func:`run_campaign` runs each attack under each threat against each source (served models in
their output modes, and optionally the local model), example by example with a query trace
(:func:`~multirobust.api.lockstep.trace_attack`), adds transfer attacks from a surrogate, and
returns a :class:`~multirobust.api.report.RemoteReport`. With a ``resume_dir`` every finished
chunk of examples is saved, and a rerun with the same settings continues after the last one: the
queries of a finished chunk are never spent again.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import attacks
from ..atomic import write_json_atomic
from ..threats import LpBall, Threat, parse
from .lockstep import Trace, trace_attack
from .report import AttackRun, RemoteReport
from .transfer import transfer_attack
from .transfer import transfer_options as transfer_defaults

#: Attacks run by default under each ℓp threat: every black-box attack that supports it.
DEFAULT_ATTACKS = ("square", "sparse-rs", "rays", "hopskipjump")
#: Queries an attack spends outside its own steps: the contract's clean query, and for the
#: random searches their starting point.
_OVERHEAD = {"square": 2, "sparse-rs": 2}


@dataclass
class Source:
    """A model to attack: a label for the report, the model, and what it reveals."""

    label: str
    model: nn.Module
    output: str


def default_attacks(threat: Threat) -> list[str]:
    """The black-box attacks that support ``threat``."""
    return [name for name in DEFAULT_ATTACKS if attacks.get(name).supports(threat)]


def build_attack(
    name: str, threat: Threat, budget: int, options: dict[str, Any], seed: int
) -> attacks.Attack:
    """The attack ``name`` with its step budget matched to ``budget`` queries per example.

    ``options`` holds options for any attack: each attack takes the ones it has.
    """
    fields = {f.name for f in dataclasses.fields(attacks.get(name))}
    mine = {k: v for k, v in options.items() if k in fields}
    if "steps" in fields and "steps" not in mine:
        mine["steps"] = max(budget - _OVERHEAD.get(name, 1), 1)
    return attacks.create(name, threat=threat, seed=seed, **mine)


def _chunk_file(folder: Path, key: str, start: int) -> Path:
    return folder / key / f"examples-{start:06d}.json"


def _ledger(model: nn.Module) -> tuple[int, int] | None:
    usage = getattr(model, "server_usage", None)
    if usage is None:
        return None
    return int(getattr(model, "queries", 0)), int(usage()["queries_answered"])


def run_campaign(
    sources: Sequence[Source],
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    threats: Sequence[Threat | str],
    budgets: Sequence[int],
    attack_names: Sequence[str] | None = None,
    options: dict[str, Any] | None = None,
    surrogate: nn.Module | None = None,
    transfer: str = "pgd",
    transfer_options: dict[str, Any] | None = None,
    slots: int = 64,
    chunk: int = 100,
    seed: int = 0,
    resume_dir: str | Path | None = None,
    progress: bool = True,
    settings: dict[str, Any] | None = None,
) -> RemoteReport:
    """Black-box attacks on each source under each threat, read at each query budget.

    Args:
        sources: the models to attack (remote in their output modes, or local).
        x, y: examples (N, ...) in [0, 1] and labels.
        threats: ℓp-ball threat models.
        budgets: queries per example at which results are read; the largest is each
            attack's budget.
        attack_names: attacks to run (default: every black-box attack that supports the
            threat: square, sparse-rs, rays, hopskipjump); an attack that does not support a
            threat is skipped there.
        options: attack options (each attack takes those it has).
        surrogate: a local model to craft transfer attacks on (one query per candidate).
        transfer, transfer_options: the white-box attack run on the surrogate.
        slots: examples attacked at once (one model call per round for all).
        chunk: examples per saved piece of work (with ``resume_dir``).
        seed: randomness of every attack (example i of a run uses the seed (seed, i)).
        resume_dir: folder for finished chunks; a rerun continues from them.
        settings: recorded in the report as given.

    Returns:
        A :class:`RemoteReport` (white-box numbers left for the caller to add).
    """
    budgets = sorted(set(int(b) for b in budgets))
    if not budgets or budgets[0] < 1:
        raise ValueError(f"Invalid budgets: {budgets} (positive query counts)")
    threat_list = [parse(t) if isinstance(t, str) else t for t in threats]
    for t in threat_list:
        if not isinstance(t, LpBall):
            raise ValueError(f"Attacks through an API need ℓp-ball threats, got {t}")
    options = dict(options or {})
    folder = Path(resume_dir) if resume_dir is not None else None
    record = {
        "n": int(x.shape[0]),
        "budgets": budgets,
        "threats": [str(t) for t in threat_list],
        "sources": [s.label for s in sources],
        "attacks": list(attack_names) if attack_names else None,
        "options": options,
        "transfer": transfer if surrogate is not None else None,
        "seed": seed,
        "chunk": chunk,
    }
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
        recorded = folder / "campaign.json"
        if recorded.exists():
            if json.loads(recorded.read_text()) != json.loads(json.dumps(record)):
                raise ValueError(
                    f"{folder} holds a campaign with other settings; use another folder or "
                    "the same settings to resume"
                )
        else:
            write_json_atomic(recorded, record)

    report = RemoteReport(budgets=budgets, settings={**record, **(settings or {})})
    top = budgets[-1]
    for threat in threat_list:
        names = [
            n for n in (attack_names or default_attacks(threat)) if attacks.get(n).supports(threat)
        ]
        for si, source in enumerate(sources):
            for name in names:
                atk = build_attack(name, threat, top, options, seed)
                key = f"{threat}-{si}-{name}".replace(":", "_")
                shown = {
                    f.name: getattr(atk, f.name)
                    for f in dataclasses.fields(atk)
                    if f.name != "threat"
                }

                def run(
                    xs: torch.Tensor, ys: torch.Tensor, offset: int, atk=atk, source=source
                ) -> list[Trace]:
                    traces = trace_attack(
                        atk,
                        source.model,
                        xs,
                        ys,
                        budget=top,
                        slots=slots,
                        seed=seed,
                        progress=progress,
                        desc=f"{atk.name} · {source.output}",
                    )
                    for t in traces:
                        t.index += offset
                    return traces

                report.runs.append(
                    _run_chunks(
                        run, source, name, str(threat), _json_ready(shown), x, y, chunk, folder, key
                    )
                )
            if surrogate is not None:
                key = f"{threat}-{si}-transfer".replace(":", "_")
                topts = transfer_defaults(transfer, transfer_options)

                def run_t(
                    xs: torch.Tensor,
                    ys: torch.Tensor,
                    offset: int,
                    source=source,
                    threat=threat,
                    topts=topts,
                ) -> list[Trace]:
                    traces = transfer_attack(
                        surrogate,
                        source.model,
                        xs,
                        ys,
                        threat=threat,
                        attack=transfer,
                        options=topts,
                        seed=seed,
                        progress=progress,
                    )
                    for t in traces:
                        t.index += offset
                    return traces

                report.runs.append(
                    _run_chunks(
                        run_t,
                        source,
                        f"transfer {transfer} (surrogate)",
                        str(threat),
                        topts,
                        x,
                        y,
                        chunk,
                        folder,
                        key,
                    )
                )
    return report


def _json_ready(d: dict[str, Any]) -> dict[str, Any]:
    return {
        k: (v if isinstance(v, int | float | str | bool | type(None)) else str(v))
        for k, v in d.items()
    }


def _run_chunks(
    run: Any,
    source: Source,
    label: str,
    threat: str,
    options: dict[str, Any],
    x: torch.Tensor,
    y: torch.Tensor,
    chunk: int,
    folder: Path | None,
    key: str,
) -> AttackRun:
    """Run one attack over the examples chunk by chunk, reusing finished chunks."""
    n = x.shape[0]
    traces: list[Trace] = []
    seconds = 0.0
    client = server = 0
    reconciled = True
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        saved = _chunk_file(folder, key, start) if folder is not None else None
        if saved is not None and saved.exists():
            data = json.loads(saved.read_text())
            traces += [Trace.from_dict(t) for t in data["traces"]]
            seconds += data["seconds"]
            if data.get("ledger"):
                client += data["ledger"]["client"]
                server += data["ledger"]["server"]
            else:
                reconciled = False
            continue
        before = _ledger(source.model)
        t0 = time.perf_counter()
        part = run(x[start:stop], y[start:stop], start)
        took = time.perf_counter() - t0
        after = _ledger(source.model)
        ledger = None
        if before is not None and after is not None:
            ledger = {"client": after[0] - before[0], "server": after[1] - before[1]}
            client += ledger["client"]
            server += ledger["server"]
        else:
            reconciled = False
        traces += part
        seconds += took
        if saved is not None:
            write_json_atomic(
                saved, {"traces": [t.to_dict() for t in part], "seconds": took, "ledger": ledger}
            )
    ledger_total = (
        {"client": client, "server": server, "difference": server - client} if reconciled else None
    )
    return AttackRun(
        source=source.label,
        output=source.output,
        attack=label,
        threat=threat,
        options=options,
        traces=traces,
        seconds=seconds,
        ledger=ledger_total,
    )


def white_box_from_report(
    path: str | Path, threats: Sequence[str], labels: torch.Tensor
) -> dict[str, dict[str, Any]]:
    """White-box numbers per threat from an ``evaluate`` report.json of the same images.

    The report may cover more images than were attacked (evaluate the first 500, attack the
    first 100 through the API): its per-example outcomes for the first ``len(labels)`` are used.

    Raises:
        ValueError: when the report's first images are not these (their labels differ) or it
            holds none of the threats.
    """
    from ..evaluation import EvaluationReport

    report = EvaluationReport.from_json(path)
    n = labels.shape[0]
    if report.n < n or report.labels[:n] != labels.tolist():
        raise ValueError(
            f"{path} evaluated other images ({report.n} examples whose labels differ from the "
            f"{n} attacked here): evaluate the same split from its start, with --n >= {n}"
        )
    preset = report.settings.get("preset", {})
    name = preset.get("name", "?") if isinstance(preset, dict) else str(preset)
    out = {
        t: {
            "robust_accuracy": sum(report.threats[t].robust[:n]) / n,
            "clean_accuracy": sum(report.clean_correct[:n]) / n,
            "source": f"evaluate, preset {name}"
            + (f" (first {n} of its {report.n} images)" if report.n > n else ""),
        }
        for t in threats
        if t in report.threats
    }
    if not out:
        raise ValueError(
            f"{path} holds none of the threats {', '.join(threats)} "
            f"(it has {', '.join(report.threats)})"
        )
    return out
