"""``evaluate``: per-example worst case over an attack ensemble, per threat and over the union.

For each batch and each threat model, the ensemble's attacks run cheapest first, each only on
the examples still robust under that threat. Every threat is evaluated on all clean-correct
examples (an example broken under ℓ∞ is still attacked under ℓ2), so per-threat numbers are
exact and equal those of evaluating that threat alone; the union is robust under every threat.
Each (batch, threat, attack) draws its randomness from its own generator, seeded from the run's
seed and its position, which makes a resumed run give the same numbers as an uninterrupted one.

The orchestrator reads top to bottom: **plan** (every argument checked, the model probed, the
ensembles and settings fixed — before any attack), **resume store**, **batches** (one
:class:`~.records.BatchRecord` each), **assemble** (the report), **checks** (those that need more
attacks, then the optional minimal distortions), **write**.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import math
import platform
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from .. import __version__
from ..atomic import check_writable_dir
from ..attacks import ThreatViolation, create
from ..attacks import get as get_attack
from ..attacks.base import check_labels, check_positive_int, validate_inputs
from ..attacks.eot import robust_over_calls
from ..attacks.minimal import check_norms, minimal_distortion
from ..data import ImageDataset
from ..landscape.masking import CHECK_NAME as LANDSCAPE_CHECK
from ..models.state import attack_mode
from ..threats import Threat, parse
from . import checks as _checks
from . import distributed as _dist
from . import presets
from .inputs import DataArg, as_tensors, on_model, stable_seed
from .landscapes import LandscapePass, apply_landscape_pass, landscape_pass
from .passes import PassCounter
from .progress import PassEstimates, WithinAttack
from .records import BatchRecord, ThreatBatch
from .report import AdversarialExample, Check, EvaluationReport, ThreatOutcome
from .resume import ResumeStore

log = logging.getLogger(__name__)

#: Clean inputs used by the pre-attack checks.
PROBE_SIZE = 64
#: Examples attacked at a large ε by the ``large-eps-not-zero`` check.
LARGE_EPS_SAMPLE = 100
#: Robust examples re-attacked with twice the steps by the ``more-steps-lower-accuracy`` check.
MORE_STEPS_SAMPLE = 50

#: An ensemble given explicitly: one list for every threat, or one per threat (by its text);
#: each entry an :class:`~.presets.AttackSpec` or a registered attack name.
AttackList = Sequence[presets.AttackSpec | str] | Mapping[str, Sequence[presets.AttackSpec | str]]


def carry_over_label(member: Threat) -> str:
    """What ``broken_by`` says for an example broken under a member and so under the threat
    containing it (the affine carry-over), e.g. ``"carry-over (linf:0.3)"``."""
    return f"carry-over ({member})"


# The old name, kept for callers that import it.
_seed = stable_seed


# ---------------------------------------------------------------------------- the plan
@dataclass
class _Plan:
    """Everything fixed before the first attack."""

    x: torch.Tensor
    labels: torch.Tensor
    threats: list[Threat]
    ensembles: dict[str, list[presets.AttackSpec]]
    preset: presets.Preset
    attacked: nn.Module
    probe: _checks.Probe
    settings: dict[str, Any]
    batch_size: int
    seed: int
    shard: _dist.Shard
    min_norms: list[str]
    out: Path | None
    #: Predictions per verdict: the preset's (or the caller's) EOT samples for a randomised
    #: model, judged by majority (:func:`~multirobust.attacks.eot.robust_over_calls`); else 1.
    calls: int = 1

    @property
    def starts(self) -> list[int]:
        return list(range(0, self.x.shape[0], self.batch_size))


def _threat_list(threats: Sequence[Threat | str] | Threat | str) -> list[Threat]:
    """Parse the threats; a union contributes its members (the union is always reported)."""
    if isinstance(threats, str | Threat):
        threats = [threats]
    out: list[Threat] = []
    for t in threats:
        for m in parse(t).members():
            if m.is_trivial:
                raise ValueError(f"Threat {m} allows no perturbation (ε = 0); drop it")
            if str(m) not in {str(o) for o in out}:
                out.append(m)
    if not out:
        raise ValueError("No threats given (e.g. threats=['linf:0.3', 'l2:2'])")
    return out


def _spec(entry: presets.AttackSpec | str) -> presets.AttackSpec:
    if isinstance(entry, presets.AttackSpec):
        return entry
    if isinstance(entry, str):
        get_attack(entry)
        return presets.AttackSpec(entry, entry, {})
    raise TypeError(f"An attack must be an AttackSpec or a registered name, got {entry!r}")


def _explicit_ensembles(
    attacks: AttackList, threat_list: list[Threat]
) -> dict[str, list[presets.AttackSpec]]:
    """The given attacks per threat, each checked to support its threat."""
    if isinstance(attacks, Mapping):
        given = {str(parse(k)): list(v) for k, v in attacks.items()}
        missing = [str(t) for t in threat_list if str(t) not in given]
        if missing:
            raise ValueError(f"No attacks given for threat(s) {', '.join(missing)}")
    else:
        given = {str(t): list(attacks) for t in threat_list}
    ensembles: dict[str, list[presets.AttackSpec]] = {}
    for t in threat_list:
        specs = [_spec(e) for e in given[str(t)]]
        if not specs:
            raise ValueError(f"No attacks given for threat {t}")
        for s in specs:
            s.build(t)  # unknown options and unsupported threats fail here, before any work
        ensembles[str(t)] = specs
    return ensembles


def _model_sha256(model: nn.Module) -> str:
    """A hash of the model's weights and buffers (16 hex digits)."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def _fingerprint(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, str]:
    """Hashes identifying the model weights and the data, for safe resuming."""
    d = hashlib.sha256()
    d.update(x.detach().cpu().contiguous().numpy().tobytes())
    d.update(y.detach().cpu().contiguous().numpy().tobytes())
    return {"model_sha256": _model_sha256(model), "data_sha256": d.hexdigest()[:16]}


def _json_options(options: Mapping[str, Any], hashes: dict[int, str]) -> dict[str, Any]:
    """An attack's options for the settings (JSON): a model among them (a transfer surrogate)
    is recorded by its class and weights' hash, which resuming then compares. ``hashes``
    holds the hashes already computed (by ``id``), so a surrogate in every threat's ensemble
    is hashed once."""

    def text(v: Any) -> Any:
        if not isinstance(v, nn.Module):
            return v
        if id(v) not in hashes:
            hashes[id(v)] = f"{type(v).__name__} sha256:{_model_sha256(v)}"
        return hashes[id(v)]

    return {k: text(v) for k, v in options.items()}


def _check_surrogate(surrogate: nn.Module, x: torch.Tensor, first: Any) -> None:
    """A surrogate must take the data as it is and give one logit per class, like the model."""
    if not isinstance(surrogate, nn.Module):
        raise ValueError(f"Invalid surrogate: {type(surrogate).__name__} (must be an nn.Module)")
    with attack_mode(surrogate), torch.no_grad():
        try:
            out = surrogate(x[:1])
        except RuntimeError as err:
            raise ValueError(
                f"Invalid surrogate: it cannot take the evaluation's inputs {tuple(x.shape[1:])} "
                f"on {x.device} ({str(err).splitlines()[0]})"
            ) from None
    shape = tuple(first.shape[1:]) if isinstance(first, torch.Tensor) else None
    if not isinstance(out, torch.Tensor) or tuple(out.shape[1:]) != shape:
        got = tuple(out.shape[1:]) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(
            f"Invalid surrogate: it outputs {got} per example where the model outputs {shape} "
            "(it must classify the same classes)"
        )


def _plan(
    model: nn.Module,
    data: DataArg,
    y: torch.Tensor | None,
    threats: Sequence[Threat | str] | Threat | str,
    preset: str | presets.Preset,
    attacks: AttackList | None,
    batch_size: int,
    seed: int,
    generator: torch.Generator | None,
    distributed: bool,
    min_norm: Sequence[str],
    out: str | Path | None,
    eot_samples: int | None = None,
    surrogate: nn.Module | None = None,
) -> _Plan:
    """Check every argument, probe the model and fix the ensembles and settings (model in
    attack mode): everything that can fail does so here, before any attack runs."""
    shard = _dist.require(distributed)
    x, labels = as_tensors(data, y)
    validate_inputs(x, labels)
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"Invalid batch_size: {batch_size!r} (must be an integer >= 1)")
    if generator is not None:
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator, device=generator.device))
    threat_list = _threat_list(threats)
    chosen = presets.get(preset)
    min_norms = check_norms(min_norm)
    folder = Path(out) if out is not None else None
    if folder is not None and shard.is_main:
        check_writable_dir(folder)
    x, labels = on_model(model, x, labels)

    with torch.no_grad():
        first = model(x[:1])
    # Labels are checked against the number of classes before anything uses them as indices.
    if isinstance(first, torch.Tensor) and first.dim() == 2:
        check_labels(labels, int(first.shape[1]))
    if surrogate is not None:
        if attacks is not None:
            raise ValueError(
                "surrogate= adds a transfer attack to the preset's ensembles; with attacks=, "
                "list it yourself: AttackSpec('transfer', 'transfer', {'surrogate': model})"
            )
        _check_surrogate(surrogate, x, first)
    probe = _checks.probe_model(model, x[:PROBE_SIZE], labels[:PROBE_SIZE])
    attacked: nn.Module = _checks.LogProbabilities(model) if probe.probabilities else model
    if attacks is None:
        ensembles = {}
        fallback = chosen.transfer_spec(surrogate)
        for t in threat_list:
            specs = chosen.attacks_for(t, probe.num_classes)
            if not probe.gradients_available:
                specs = [s for s in specs if not s.white_box] or specs
            if fallback is not None and fallback.applies_to(t):
                # After the white-box attacks, before the black-box search: the surrogate's
                # gradients stand in where the model's are zero or blocked.
                last_white = max((i for i, s in enumerate(specs) if s.white_box), default=-1)
                specs = [*specs[: last_white + 1], fallback, *specs[last_white + 1 :]]
            ensembles[str(t)] = specs
    else:
        ensembles = _explicit_ensembles(attacks, threat_list)
    # A randomised model (the randomised-model test, run above before any attack): EOT.
    calls = 1
    if probe.randomised:
        calls = chosen.eot_samples if eot_samples is None else eot_samples
        if calls > 1:
            ensembles = {k: presets.with_eot(v, calls) for k, v in ensembles.items()}
        probe.checks = [
            _checks.eot_check(c, calls) if c.name == "randomised-model" else c for c in probe.checks
        ]
    hashes: dict[int, str] = {}
    settings: dict[str, Any] = {
        "threats": [str(t) for t in threat_list],
        "preset": asdict(chosen),
        "attacks": {
            k: [
                {"label": s.label, "attack": s.attack, "options": _json_options(s.options, hashes)}
                | ({"only_masked_gradients": True} if s.masked_only else {})
                | ({"only_after": s.follows} if s.follows else {})
                for s in v
            ]
            for k, v in ensembles.items()
        },
        "eot": (
            {"samples": calls, "verdict": f"majority of {calls} calls"}
            if probe.randomised and calls > 1
            else None
        ),
        "batch_size": batch_size,
        "seed": seed,
        "n": int(x.shape[0]),
        "model": type(model).__name__,
        "attacked_log_probabilities": probe.probabilities,
        **_fingerprint(model, x, labels),
        "dtype": str(x.dtype),
        "device": str(x.device),
        "world_size": shard.world_size,
        "multirobust": __version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    if isinstance(data, ImageDataset):
        settings["dataset"] = data.name
        settings["split"] = data.split
        settings["class_names"] = list(data.class_names)
    return _Plan(
        x=x,
        labels=labels,
        threats=threat_list,
        ensembles=ensembles,
        preset=chosen,
        attacked=attacked,
        probe=probe,
        settings=settings,
        batch_size=batch_size,
        seed=seed,
        shard=shard,
        min_norms=min_norms,
        out=folder,
        calls=calls,
    )


# ---------------------------------------------------------------------------- one batch
def _u8(image: torch.Tensor) -> str:
    return base64.b64encode(
        (image.detach().float().cpu().clamp(0, 1) * 255).round().to(torch.uint8).numpy().tobytes()
    ).decode()


def _attack_batch(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    correct: torch.Tensor,
    clean_probs: torch.Tensor,
    threat: Threat,
    specs: list[presets.AttackSpec],
    *,
    seed: int,
    batch_index: int,
    keep_examples: int,
    offset: int,
    keep_adversarial: bool,
    advance: Callable[[int], object] | None = None,
    calls: int = 1,
    carried: Mapping[int, tuple[str, list[float] | None]] | None = None,
    carried_adv: torch.Tensor | None = None,
    estimates: PassEstimates | None = None,
) -> tuple[ThreatBatch, torch.Tensor | None]:
    """Run the ensemble for one threat on one batch: its record, and (if asked) the inputs
    with the adversarial ones where broken. ``advance`` moves a bar by the batch's size per
    attack (examples the attack has dealt with, broken ones included): while the attack runs,
    in whole steps as ``model`` (a :class:`PassCounter`) sees forward passes, against the
    passes per example expected from ``estimates`` (:mod:`.progress`), and the rest when it
    returns.

    ``calls`` > 1 (a randomised model): an attack breaks an example when the majority of
    ``calls`` fresh predictions at its result are wrong. ``carried``: examples already broken
    before any attack (row -> the label recorded as breaking it and the threat parameters),
    with their adversarial inputs in ``carried_adv`` (the affine carry-over). Attacks whose
    spec is ``masked_only`` run only on still-robust rows whose input gradient is zero,
    vanishing or non-finite."""
    n = x.shape[0]
    robust = correct.clone()
    out = ThreatBatch(robust=[], broken_by=[None] * n, norm=[None] * n, params=[None] * n)
    x_adv = x.clone() if keep_adversarial else None
    for i, (label, row_params) in (carried or {}).items():
        if bool(robust[i]):
            robust[i] = False
            out.broken_by[i] = label
            out.params[i] = row_params
            if x_adv is not None and carried_adv is not None:
                x_adv[i] = carried_adv[i]
    start = time.perf_counter()
    passes_before = model.counts() if isinstance(model, PassCounter) else (0, 0)
    tick = advance or (lambda _: None)
    estimates = estimates if estimates is not None else PassEstimates()
    key = str(threat)
    for done, spec in enumerate(specs):
        rows = robust.nonzero().flatten()
        if rows.numel() == 0:
            tick(n * (len(specs) - done))  # every example broken: the rest have nothing to do
            break
        if spec.follows is not None and not any(b == spec.follows for b in out.broken_by):
            tick(n)  # the attack it follows broke nothing in this batch
            continue
        if spec.masked_only:
            rows = rows[_checks.masked_gradients(model, x[rows], y[rows])]
            if rows.numel() == 0:
                tick(n)
                continue
        attack = spec.build(threat, seed=0)
        gen = torch.Generator(device=x.device).manual_seed(
            stable_seed(seed, threat, batch_index, spec.label)
        )
        m = int(rows.numel())
        within = WithinAttack(tick, n, estimates.expected(key, spec.label, spec.options) * m)
        counter = model if isinstance(model, PassCounter) else None
        forward_before = 0 if counter is None else counter.forward_passes
        if counter is not None:
            counter.listener = within
        try:
            res = attack(model, x[rows], y[rows], generator=gen)
        except ThreatViolation as err:
            out.outside[spec.label] = out.outside.get(spec.label, 0) + m
            log.warning("attack %s under %s rejected: %s", spec.label, threat, err)
            continue
        except RuntimeError as err:
            out.errors[spec.label] = str(err).splitlines()[0]
            log.warning("attack %s under %s failed: %s", spec.label, threat, out.errors[spec.label])
            continue
        else:
            if counter is not None:
                estimates.observe(key, spec.label, m, counter.forward_passes - forward_before)
        finally:
            if counter is not None:
                counter.listener = None
            within.finish()
        out.queries += res.queries
        success = res.success
        if calls > 1:
            # The verdict on a randomised model: its vote over fresh calls, not one call.
            success = ~robust_over_calls(model, res.x_adv, y[rows], calls=calls)
        inside = threat.contains(res.x_adv, x[rows], atol=1e-4, params=res.params)
        bad = success & ~inside
        if bool(bad.any()):
            out.outside[spec.label] = out.outside.get(spec.label, 0) + int(bad.sum())
        hit = (success & inside).nonzero().flatten()
        if hit.numel() == 0:
            continue
        robust[rows[hit]] = False
        if x_adv is not None:
            x_adv[rows[hit]] = res.x_adv[hit]
        adv_probs = res.logits.float().softmax(1)
        norm_cpu = res.norm.double().cpu()
        for j in hit.tolist():
            i = int(rows[j])
            out.broken_by[i] = spec.label
            v = float(norm_cpu[j])
            out.norm[i] = None if math.isnan(v) else v
            out.params[i] = None if res.params is None else threat.params_row(res.params, j)
            if len(out.examples) < keep_examples:
                adv_pred = int(adv_probs[j].argmax())
                out.examples.append(
                    AdversarialExample(
                        index=offset + i,
                        threat=str(threat),
                        attack=spec.label,
                        label=int(y[i]),
                        clean_pred=int(clean_probs[i].argmax()),
                        clean_conf=float(clean_probs[i].max()),
                        adv_pred=adv_pred,
                        adv_conf=float(adv_probs[j, adv_pred]),
                        shape=list(x.shape[1:]),
                        clean_u8=_u8(x[i]),
                        adv_u8=_u8(res.x_adv[j]),
                    )
                )
    passes_after = model.counts() if isinstance(model, PassCounter) else (0, 0)
    out.robust = robust.tolist()
    out.forward_passes = passes_after[0] - passes_before[0]
    out.backward_passes = passes_after[1] - passes_before[1]
    out.seconds = time.perf_counter() - start
    return out, x_adv


def _run_batch(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    threat_list: list[Threat],
    ensembles: dict[str, list[presets.AttackSpec]],
    *,
    seed: int,
    batch_index: int,
    offset: int,
    keep_examples: int,
    keep_adversarial: bool = False,
    advance: Callable[[int], object] | None = None,
    calls: int = 1,
    estimates: PassEstimates | None = None,
) -> BatchRecord:
    """Every threat's ensemble on one batch (``advance``, ``calls``, ``estimates``: see
    :func:`_attack_batch`).

    A threat that contains others (an affine set contains its two members at their own ε)
    is attacked after them when they are evaluated too, and every example broken under one
    of them is broken under it (``carry-over (member)``): its robust accuracy is never above
    theirs."""
    with torch.no_grad():
        logits = model(x).float()
    correct = logits.argmax(1) == y
    if calls > 1:
        correct = robust_over_calls(model, x, y, calls=calls)
    probs = logits.softmax(1)
    record = BatchRecord(
        labels=y.tolist(),
        clean_pred=logits.argmax(1).tolist(),
        clean_correct=correct.tolist(),
        threats={},
    )
    keys = {str(t) for t in threat_list}
    # Threats containing evaluated ones go last, so that their members' outcomes exist.
    order = sorted(threat_list, key=lambda t: any(str(m) in keys for m in t.subsets()))
    for t in order:
        carried: dict[int, tuple[str, list[float] | None]] = {}
        carried_adv = x.clone() if keep_adversarial else None
        # λ = 1 is the first subset, λ = 0 the second (the affine set's endpoints).
        for member, lam in zip(t.subsets(), (1.0, 0.0), strict=False):
            done = record.threats.get(str(member))
            if done is None:
                continue
            for i, (ok, was) in enumerate(zip(done.robust, correct.tolist(), strict=True)):
                if was and not ok and i not in carried:
                    carried[i] = (carry_over_label(member), [lam])
                    if carried_adv is not None and str(member) in record.adversarial:
                        carried_adv[i] = record.adversarial[str(member)][i]
        outcome, x_adv = _attack_batch(
            model,
            x,
            y,
            correct,
            probs,
            t,
            ensembles[str(t)],
            seed=seed,
            batch_index=batch_index,
            keep_examples=keep_examples,
            offset=offset,
            keep_adversarial=keep_adversarial,
            advance=advance,
            calls=calls,
            estimates=estimates,
            carried=carried,
            carried_adv=carried_adv,
        )
        record.threats[str(t)] = outcome
        if x_adv is not None:
            record.adversarial[str(t)] = x_adv
    return record


def _batches(
    plan: _Plan,
    store: ResumeStore | None,
    *,
    progress: bool,
    on_batch: Callable[[int, int], None] | None,
    examples_per_threat: int,
    keep_adversarial: bool,
) -> list[BatchRecord]:
    """This rank's batches (resumed from the store or computed), gathered from every rank."""
    starts, n, bs = plan.starts, plan.x.shape[0], plan.batch_size
    mine = plan.shard.batches(len(starts))
    keys = [str(t) for t in plan.threats]
    counted = PassCounter(plan.attacked)
    estimates = PassEstimates()
    done: dict[int, BatchRecord] = {}
    # The bar counts (example, attack) pairs and moves inside every attack with its forward
    # passes (.progress), not once per batch: one attack on a batch of 500 can take minutes.
    per_example = sum(len(plan.ensembles[k]) for k in keys)
    bar = tqdm(
        total=sum(min(bs, n - starts[b]) for b in mine) * per_example,
        desc="attacks",
        unit=" example-attacks",
        unit_scale=True,
        disable=not progress or not plan.shard.is_main,
        leave=False,
        dynamic_ncols=True,
    )
    for k, b in enumerate(mine):
        s = starts[b]
        size = min(bs, n - s)
        record = None if store is None else store.load(b, n=size, threats=keys)
        bar.set_description(f"attacks, batch {k + 1}/{len(mine)}", refresh=False)
        if record is not None:
            bar.update(size * per_example)  # resumed from the store
        else:
            record = _run_batch(
                counted,
                plan.x[s : s + bs],
                plan.labels[s : s + bs],
                plan.threats,
                plan.ensembles,
                seed=plan.seed,
                batch_index=b,
                offset=s,
                keep_examples=examples_per_threat,
                keep_adversarial=keep_adversarial,
                advance=bar.update,
                calls=plan.calls,
                estimates=estimates,
            )
            record.rank = plan.shard.rank
            if store is not None:
                store.save(b, record)
        done[b] = record
        if on_batch is not None:
            on_batch(k + 1, len(mine))
    bar.refresh()  # the last state (100%), drawn even between display intervals
    bar.close()
    gathered = _dist.merge(_dist.all_gather(done, plan.shard))
    return [gathered[b] for b in range(len(starts))]


# ---------------------------------------------------------------------------- assembly
def _assemble(
    records: list[BatchRecord],
    threat_list: list[Threat],
    ensembles: dict[str, list[presets.AttackSpec]],
    examples_per_threat: int,
) -> EvaluationReport:
    """Concatenate batch records into a report (checks derived from outcomes included)."""
    clean_correct = [c for r in records for c in r.clean_correct]
    n = len(clean_correct)
    outcomes: dict[str, ThreatOutcome] = {}
    examples: list[AdversarialExample] = []
    found: list[Check] = []
    ran: list[dict[str, Any]] = []
    for t in threat_list:
        key = str(t)
        parts = [r.threats[key] for r in records]
        # Carried-over members first: they break examples before any attack runs.
        carried = [carry_over_label(m) for m in t.subsets() if str(m) in ensembles]
        outcome = ThreatOutcome(
            threat=key,
            attacks=carried + [s.label for s in ensembles[key]],
            robust=[v for p in parts for v in p.robust],
            broken_by=[v for p in parts for v in p.broken_by],
            norm=[v for p in parts for v in p.norm],
            params=[v for p in parts for v in p.params],
            queries=sum(p.queries for p in parts),
            forward_passes=sum(p.forward_passes for p in parts),
            backward_passes=sum(p.backward_passes for p in parts),
            seconds=sum(p.seconds for p in parts),
        )
        outcomes[key] = outcome
        examples += [e for p in parts for e in p.examples][:examples_per_threat]
        outside: dict[str, int] = {}
        errors: dict[str, str] = {}
        for p in parts:
            for k, v in p.outside.items():
                outside[k] = outside.get(k, 0) + v
            errors.update(p.errors)
        specs = ensembles[key]
        has_both = {s.white_box for s in specs} == {True, False}
        for name in ["black-box-beats-white-box"] * has_both + [
            "outside-threat-model",
            "attack-errors",
        ]:
            ran.append({"name": name, "threat": key})
        bb = _checks.black_box_check(
            key,
            outcome.broken_by,
            [s.label for s in specs if s.white_box],
            [s.label for s in specs if not s.white_box],
            sum(clean_correct),
        )
        for c in (bb, _checks.outside_check(key, outside)):
            if c is not None:
                found.append(c)
        if errors:
            found.append(
                Check(
                    "attack-errors",
                    "Some attacks raised errors and were skipped for this threat; the numbers "
                    "rest on the others.",
                    {"errors": errors},
                    key,
                )
            )
    report = EvaluationReport(
        n=n,
        clean_accuracy=sum(clean_correct) / max(n, 1),
        robust_accuracy={k: o.robust_accuracy for k, o in outcomes.items()},
        union_accuracy=0.0,
        labels=[v for r in records for v in r.labels],
        clean_pred=[v for r in records for v in r.clean_pred],
        clean_correct=clean_correct,
        threats=outcomes,
        checks=found,
        checks_run=ran,
        examples=examples,
    )
    report.union_accuracy = sum(report.union_robust) / max(n, 1)
    if records and records[0].adversarial:
        report.adversarial = {
            str(t): torch.cat([r.adversarial[str(t)] for r in records]) for t in threat_list
        }
    return report


# ---------------------------------------------------------------------------- checks
def _post_checks(
    plan: _Plan, report: EvaluationReport, *, progress: bool = False
) -> tuple[list[Check], list[dict[str, Any]]]:
    """The checks that need extra attacks: a large ε, and twice the steps. Returns the fired
    checks and every check that ran; a bar moves after each extra attack."""
    correct = torch.tensor(report.clean_correct, device=plan.x.device)
    # One large ball per norm among the threats (ℓp balls only: the others have no "large ε").
    balls = {t.name: t for t in plan.threats if t.additive}
    sample = correct.nonzero().flatten()[:LARGE_EPS_SAMPLE]
    found: list[Check] = []
    ran: list[dict[str, Any]] = []
    bar = tqdm(
        total=len(balls) + len(plan.threats),
        desc="checks after the attacks",
        unit="check",
        disable=not progress,
        leave=False,
    )
    with bar:
        for name in sorted(balls):
            bar.set_description(f"check: a very large {name} ε", refresh=False)
            if sample.numel() and plan.probe.gradients_available:
                _large_eps(plan, balls[name], sample, found, ran)
            bar.update(1)
        for t in plan.threats:
            bar.set_description(f"check: twice the steps under {t}", refresh=False)
            _more_steps(plan, report, t, found, ran)
            bar.update(1)
        bar.refresh()  # the last state (100%), drawn even between display intervals
    return found, ran


def _robust(
    plan: _Plan, x_adv: torch.Tensor, y: torch.Tensor, single: torch.Tensor
) -> torch.Tensor:
    """(N,) the verdict at ``x_adv``: the attack's own (``single``) for a deterministic model,
    the majority of ``plan.calls`` predictions for a randomised one."""
    if plan.calls > 1:
        return robust_over_calls(plan.attacked, x_adv, y, calls=plan.calls)
    return single


def _large_eps(
    plan: _Plan,
    ball: Threat,
    sample: torch.Tensor,
    found: list[Check],
    ran: list[dict[str, Any]],
) -> None:
    """PGD at a very large ε of ``ball``'s norm on ``sample``: accuracy should reach ~0."""
    x, y = plan.x, plan.labels
    big = _checks.large_eps_threat(ball, int(x[0].numel()))  # type: ignore[arg-type]
    eot = {"eot_samples": plan.calls} if plan.calls > 1 else {}
    attack = create("pgd", threat=big, steps=20, loss="ce", **eot)
    gen = torch.Generator(device=x.device).manual_seed(stable_seed(plan.seed, "large-eps", big))
    res = attack(plan.attacked, x[sample], y[sample], generator=gen)
    ran.append({"name": "large-eps-not-zero", "threat": str(big)})
    robust = _robust(plan, res.x_adv, y[sample], ~res.success)
    name = "pgd (ce, 20 steps" + (f", EOT {plan.calls})" if eot else ")")
    c = _checks.large_eps_check(str(big), int(robust.sum()), int(sample.numel()), name)
    if c is not None:
        found.append(c)


def _more_steps(
    plan: _Plan,
    report: EvaluationReport,
    t: Threat,
    found: list[Check],
    ran: list[dict[str, Any]],
) -> None:
    """The strongest white-box attack with twice the steps on the examples counted robust."""
    x, y, key = plan.x, plan.labels, str(t)
    # The strongest white-box attack (APGD-T, not the FAB-T that follows it), 2× steps.
    spec = presets.more_steps_spec(plan.ensembles[key])
    robust = torch.tensor(report.threats[key].robust, device=x.device)
    rows = robust.nonzero().flatten()[:MORE_STEPS_SAMPLE]
    if spec is None or rows.numel() == 0:
        return
    options = spec.options
    attack = create(spec.attack, threat=t, **options)
    gen = torch.Generator(device=x.device).manual_seed(stable_seed(plan.seed, "more-steps", key))
    try:
        res = attack(plan.attacked, x[rows], y[rows], generator=gen)
    except RuntimeError:
        return
    inside = t.contains(res.x_adv, x[rows], atol=1e-4, params=res.params)
    broken = int((~_robust(plan, res.x_adv, y[rows], ~res.success) & inside).sum())
    ran.append({"name": "more-steps-lower-accuracy", "threat": key})
    c = _checks.more_steps_check(
        key, spec.label, options["steps"], broken, int(rows.numel()), options
    )
    if c is not None:
        found.append(c)


def _minimal_distortions(plan: _Plan) -> dict[str, dict[str, Any]]:
    """The per-example minimal distortion of each asked norm (APGD with the margin loss)."""
    options = {"loss": "margin", "steps": plan.preset.steps}
    plan.settings["min_norm"] = {"norms": plan.min_norms, "attack": "apgd", "options": options}
    return {
        norm: minimal_distortion(
            plan.attacked,
            plan.x,
            plan.labels,
            norm,
            attack_options=options,
            batch_size=plan.batch_size,
            seed=stable_seed(plan.seed, "minimal", norm),
        ).to_dict()
        for norm in (plan.min_norms if plan.shard.is_main else [])
    }


# ---------------------------------------------------------------------------- evaluate
def evaluate(
    model: nn.Module,
    data: DataArg,
    y: torch.Tensor | None = None,
    *,
    threats: Sequence[Threat | str] | Threat | str,
    preset: str | presets.Preset = "standard",
    attacks: AttackList | None = None,
    batch_size: int = 500,
    seed: int = 0,
    generator: torch.Generator | None = None,
    progress: bool = True,
    out: str | Path | None = None,
    resume: bool = False,
    resume_dir: str | Path | None = None,
    on_batch: Callable[[int, int], None] | None = None,
    run_checks: bool = True,
    examples_per_threat: int = 8,
    distributed: bool = False,
    min_norm: Sequence[str] = (),
    keep_adversarial: bool = False,
    landscapes: int | None = None,
    landscape_points: int = 21,
    eot_samples: int | None = None,
    surrogate: nn.Module | None = None,
) -> EvaluationReport:
    """Evaluate ``model``'s robustness under each threat and their union, with checks.

    Implements the per-example worst case over an attack ensemble (AutoAttack, Croce & Hein
    2020, plus spatial grid search and affine attacks) and the checklist of Carlini et al.
    (2019), "On Evaluating Adversarial Robustness".

    Args:
        model: classifier returning logits for inputs in [0, 1] (probabilities are detected,
            reported and attacked through ``log p``). It is used in eval mode with frozen
            parameters and left exactly as it was.
        data: images (N, C, H, W) in [0, 1] with ``y``, an ImageDataset or a DataLoader. They
            are moved to the model's device and, if needed, converted to its dtype (logged).
        y: labels (N,) when ``data`` is a tensor; classes 0..C−1.
        threats: threat models (objects or text such as ``"linf:0.3"``); a union contributes
            its members, and the union of all of them is always reported.
        preset: ``"quick"``, ``"standard"``, ``"thorough"`` or a :class:`Preset`: the ensemble
            for each threat (the preset's attacks that support it).
        attacks: instead of the preset's ensembles, the attacks to run: one list for every
            threat, or a mapping from threat text to its list; each entry an
            :class:`~.presets.AttackSpec` (label, registered name, options) or a registered
            name. Minimum-norm attacks count as breaking an example when they find an
            adversarial within the threat's budget.
        batch_size: examples attacked together.
        seed: seed of every random choice; a ``generator`` given instead provides the seed.
        progress: show a progress bar.
        out: folder for ``report.json`` and ``report.html``, checked to be writable before any
            attack runs and written at the end (by rank 0 when distributed).
        resume: keep each finished batch in ``out/partial`` and reuse it in a later run with
            the same settings (a damaged batch file is named in a warning and run again).
        resume_dir: the same with an explicit folder for the batches (without ``out``).
        on_batch: called as ``on_batch(batches_done, batches_total)`` after each batch (the
            batches of this rank when ``distributed``).
        run_checks: run the post-hoc checks (large ε, more steps) besides the cheap ones.
        examples_per_threat: clean/adversarial pairs kept per threat for the report's pictures.
        distributed: shard the batches over the ranks of the initialised ``torch.distributed``
            group (batch b on rank b mod world size; see :mod:`.distributed`) and gather the
            results; every rank must call ``evaluate`` with the same arguments and gets the
            same report, equal to a single process's. The post-hoc checks run on rank 0.
        min_norm: norms (``"linf"``, ``"l2"``, ``"l1"``) whose per-example minimal adversarial
            distortion is searched after the attacks
            (:func:`multirobust.attacks.minimal.minimal_distortion`, APGD with the margin loss
            and the preset's steps) and stored in ``report.minimal_distortion``; on rank 0 when
            distributed.
        keep_adversarial: also return, in ``report.adversarial``, every example's adversarial
            input per threat (the clean input where unbroken); not saved, so it cannot be
            combined with resuming.
        landscapes: after the attacks, search a ``landscape_points``² grid on a 2-D slice of
            each ℓp ball around the first ``landscapes`` examples still robust under it
            (:mod:`.landscapes`): examples the grid breaks count as broken by ``"landscape"``,
            the ``landscape-beats-attacks`` check fires, and the report gains the landscape
            section. None (default): every still-robust example when the input gradient is
            masked (``zero-gradients``, ``non-finite-gradients`` or ``no-gradient-path`` fired:
            the grid needs no gradient), else none. 0: no grid. On rank 0 when distributed.
        landscape_points: grid points per axis (≥ 2).
        eot_samples: for a randomised model (outputs that change between two identical calls,
            tested before any attack), the calls each white-box gradient is averaged over (EOT)
            and the predictions each verdict takes the majority of; None: the preset's
            ``eot_samples`` (standard 20, quick 10); 1: no EOT. Unused for a deterministic model.
        surrogate: a model to transfer attacks from, e.g. the model's undefended twin (same
            inputs and classes): after the white-box attacks, PGD on it (the preset's steps)
            runs on every example still robust, judged on the model
            (:meth:`~.presets.Preset.transfer_spec`). It replaces the surrogate otherwise
            distilled from the model's outputs where gradients are masked. Left unchanged.

    Returns:
        An :class:`EvaluationReport`.
    """
    t_start = time.perf_counter()
    if eot_samples is not None:
        check_positive_int("eot_samples", eot_samples)
    if landscapes is not None and (
        not isinstance(landscapes, int) or isinstance(landscapes, bool) or landscapes < 0
    ):
        raise ValueError(f"Invalid landscapes: {landscapes!r} (must be an integer >= 0 or None)")
    if (
        not isinstance(landscape_points, int)
        or isinstance(landscape_points, bool)
        or landscape_points < 2
    ):
        raise ValueError(f"Invalid landscape_points: {landscape_points!r} (must be >= 2)")
    if resume and out is None:
        raise ValueError("resume=True keeps batches in OUT/partial: give out= (or resume_dir=)")
    folder = Path(out) / "partial" if resume and out is not None else resume_dir
    if keep_adversarial and folder is not None:
        raise ValueError(
            "keep_adversarial cannot be combined with resuming: adversarial inputs are not saved"
        )
    with attack_mode(model):
        t0 = time.perf_counter()
        plan = _plan(
            model,
            data,
            y,
            threats,
            preset,
            attacks,
            batch_size,
            seed,
            generator,
            distributed,
            min_norm,
            out,
            eot_samples,
            surrogate,
        )
        timings = {"checks_before": time.perf_counter() - t0}
        store = None if folder is None else ResumeStore(folder, plan.settings)

        t0 = time.perf_counter()
        records = _batches(
            plan,
            store,
            progress=progress,
            on_batch=on_batch,
            examples_per_threat=examples_per_threat,
            keep_adversarial=keep_adversarial,
        )
        timings["attacks"] = time.perf_counter() - t0

        report = _assemble(records, plan.threats, plan.ensembles, examples_per_threat)
        report.checks = list(plan.probe.checks) + report.checks
        report.checks_run = [
            {"name": name, "threat": None} for name in plan.probe.ran
        ] + report.checks_run
        if run_checks:
            t0 = time.perf_counter()
            post = _post_checks(plan, report, progress=progress) if plan.shard.is_main else ([], [])
            fired, ran = _dist.broadcast(post, plan.shard)
            report.checks += fired
            report.checks_run += ran
            timings["checks_after"] = time.perf_counter() - t0
        masked = any(c.name in _checks.MASKED_GRADIENT_CHECKS for c in plan.probe.checks)
        grid_examples = landscapes
        if grid_examples is None:
            grid_examples = int(plan.x.shape[0]) if masked else 0
        if grid_examples:
            t0 = time.perf_counter()
            plan.settings["landscapes"] = {"examples": grid_examples, "points": landscape_points}
            if landscapes is None:
                plan.settings["landscapes"]["why"] = "masked gradients"
            grid = (
                landscape_pass(
                    plan.attacked,
                    plan.x,
                    plan.labels,
                    plan.threats,
                    report,
                    examples=grid_examples,
                    points=landscape_points,
                    seed=stable_seed(plan.seed, "landscapes"),
                    num_classes=plan.probe.num_classes,
                    progress=progress,
                )
                if plan.shard.is_main
                else LandscapePass()
            )
            apply_landscape_pass(report, _dist.broadcast(grid, plan.shard))
            timings["landscapes"] = time.perf_counter() - t0
        if masked:
            # The masked-gradient checks say what was done about them, and what it broke.
            searched = {c["threat"] for c in report.checks_run if c["name"] == LANDSCAPE_CHECK}
            report.checks = [
                _checks.masked_fallback_check(c, report.threats, plan.ensembles, searched)
                if c.name in _checks.MASKED_GRADIENT_CHECKS
                else c
                for c in report.checks
            ]
        if plan.min_norms:
            t0 = time.perf_counter()
            report.minimal_distortion = _dist.broadcast(_minimal_distortions(plan), plan.shard)
            timings["minimal_distortion"] = time.perf_counter() - t0
    timings["total"] = time.perf_counter() - t_start
    report.timings = timings
    report.settings = plan.settings
    if plan.out is not None and plan.shard.is_main:
        report.to_json(plan.out / "report.json")
        report.to_html(plan.out / "report.html")
    return report
