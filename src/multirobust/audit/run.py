"""One audit of a model: every part in turn, resumable, into ``audit.json`` and ``audit.html``."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn
from tqdm import tqdm

from .. import atomic
from ..data import ImageDataset
from ..privacy import MembershipRun
from ..training import ConfigError
from .config import PARTS, AuditConfig, AuditError
from .evasion import run_evasion
from .external import EXPECTED, report_in, run_api, run_certify
from .goals import run_goals
from .matrix import findings
from .membership import run_membership
from .page import audit_html
from .poisoning import backdoor_config, run_poisoning
from .recipe import recipe_of
from .result import AuditContext, PartResult

__all__ = ["FORMAT", "run_audit"]

log = logging.getLogger(__name__)

FORMAT = "multirobust-audit"
VERSION = 1

_RUNNERS: dict[str, Callable[[AuditContext, Path, bool], PartResult]] = {
    "evasion": run_evasion,
    "goals": run_goals,
    "membership": run_membership,
    "poisoning": run_poisoning,
    "certify": run_certify,
    "api": run_api,
}


def _check_before_work(ctx: AuditContext, resume: bool) -> None:
    """Every input a part will need, checked before the first part starts."""
    cfg, out = ctx.config, ctx.out
    cfg.validate(ctx.test.name, ctx.test.num_classes)
    if (out / "audit.json").is_file() and not resume:
        raise AuditError(
            f"{out} already holds an audit: resume it (--resume skips the finished parts) or "
            "choose another output folder"
        )
    try:
        atomic.check_writable_dir(out)
    except OSError as err:
        raise AuditError(str(err)) from None
    if ctx.recipe is not None and "poisoning" not in cfg.skip:
        try:
            bd = backdoor_config(ctx)
            bd.validate()
            if bd.attack != "clean-label":  # its surrogate is loaded with the data
                bd.build_attack()
        except (ConfigError, ValueError, TypeError) as err:
            raise AuditError(f"Invalid poisoning setting: {err}") from None
    for part, folder in (("certify", cfg.certify_dir), ("api", cfg.api_dir)):
        if folder is not None and part not in cfg.skip and not report_in(folder, part):
            raise AuditError(
                f"Invalid --{part} folder {folder}: it holds no report of that kind (the "
                f"JSON that {EXPECTED[part]} writes)"
            )
    if cfg.shadows is not None and "membership" not in cfg.skip:
        try:
            MembershipRun.open(cfg.shadows)
        except ConfigError as err:
            raise AuditError(f"Invalid shadows: {err}") from None


def _finished(folder: Path, settings: dict[str, Any]) -> PartResult | None:
    """The part's earlier result when it finished with the same settings."""
    path = folder / "part.json"
    if not path.is_file():
        return None
    try:
        prev = PartResult.from_dict(json.loads(path.read_text()))
    except (ValueError, TypeError) as err:
        log.warning("ignoring the unreadable %s (%s): the part runs again", path, err)
        return None
    if prev.status != "done" or prev.settings != json.loads(json.dumps(settings)):
        return None
    return prev


def _recipe_summary(recipe: dict[str, Any] | None) -> str:
    if recipe is None:
        return ""
    keys = ("arch", "method", "threats", "epochs", "limit")
    return ", ".join(f"{k}={recipe[k]}" for k in keys if k in recipe)


def _write(ctx: AuditContext, parts: dict[str, PartResult]) -> dict[str, Any]:
    body = {
        "format": FORMAT,
        "version": VERSION,
        "model": {
            "name": ctx.name,
            "dataset": ctx.test.name,
            "recipe": ctx.recipe is not None,
            "recipe_summary": _recipe_summary(ctx.recipe),
        },
        "settings": ctx.config.to_dict(),
        "parts": {k: v.to_dict() for k, v in parts.items()},
        "findings": [f.to_dict() for f in findings(parts)],
    }
    atomic.write_json_atomic(ctx.out / "audit.json", body)
    atomic.write_atomic(ctx.out / "audit.html", audit_html(body))
    return body


def run_audit(
    model: nn.Module,
    test: ImageDataset,
    config: AuditConfig,
    out: str | Path,
    *,
    name: str = "model",
    resume: bool = False,
    recipe: dict[str, Any] | None = None,
    data_root: str | None = None,
) -> dict[str, Any]:
    """Audit ``model`` across its attack surfaces into ``out``.

    The parts (:data:`~.config.PARTS`) run in turn, each in ``out/<part>/`` ending with an
    atomically written ``part.json``; ``audit.json`` and ``audit.html`` are rewritten after
    every part, so an interrupted audit shows what it found so far. With ``resume`` a part
    that finished with the same settings is read back instead of run; an unfinished one
    continues where its own resume allows (the evaluation's finished batches, the backdoor
    run's stages).

    A part that raises is recorded as ``failed`` with the error and the audit goes on; the
    caller decides what a failed part means (the command exits non-zero).

    Args:
        model: the audited classifier ([0, 1] inputs, logits).
        test: the test examples of the evasion parts (the first ``config.n`` are used).
        config: the settings; validated (with every input the parts need) before any part.
        out: the audit folder.
        name: how the model is named on the page (checkpoint path or factory).
        resume: continue an earlier audit in ``out``.
        recipe: the training configuration; default: the one the checkpoint records.
        data_root: where the dataset files are.

    Returns:
        The body of ``audit.json``.

    Raises:
        AuditError: a bad setting or input, before any part runs.
    """
    out = Path(out)
    model.eval()
    if recipe is None:
        recipe = recipe_of(model)
    ds = test
    if len(ds) > config.n:
        ds = ImageDataset(
            name=test.name,
            split=test.split,
            images=test.images[: config.n],
            labels=test.labels[: config.n],
            num_classes=test.num_classes,
            class_names=test.class_names,
        )
    ctx = AuditContext(model, name, ds, recipe, config, out, data_root)
    _check_before_work(ctx, resume)
    parts: dict[str, PartResult] = {}
    bar = tqdm(PARTS, desc="audit", unit="part", disable=not config.progress)
    for part in bar:
        bar.set_postfix_str(part)
        folder = out / part
        settings = config.part_settings(part)
        if part in config.skip:
            parts[part] = PartResult(part, "not-run", "skipped (--skip)", settings=settings)
            _write(ctx, parts)
            continue
        prev = _finished(folder, settings) if resume else None
        if prev is not None:
            log.info("%s: finished in an earlier run, read back", part)
            parts[part] = prev
            continue
        folder.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        try:
            result = _RUNNERS[part](ctx, folder, resume)
        except Exception as err:  # one broken part must not lose the others' evidence
            log.exception("audit part %s failed", part)
            result = PartResult(part, "failed", f"{type(err).__name__}: {err}")
        result.settings = settings
        result.seconds = time.perf_counter() - started
        atomic.write_json_atomic(folder / "part.json", result.to_dict())
        parts[part] = result
        _write(ctx, parts)
    bar.close()
    return _write(ctx, parts)
