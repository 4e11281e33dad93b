"""The health of a run's training stages as `aba health`, the report and the panel show it: one row per rule."""

from __future__ import annotations

from typing import Any

from engine.store import RunStore
from engine.training.health import NO_DATA, RULES, Facts, replay

HEALTH_STAGES = ("judge", "grpo", "grpo-dims", "smoke")


def _replayed(store: RunStore, stage: str, cfg: Any) -> list[dict[str, Any]]:
    """For a run written before the worker ran the rules: the same rules over its recorded metrics."""
    by_step: dict[int, dict[str, float | None]] = {}
    for row in store.metrics_since(0, stage=stage, limit=10**9):
        by_step.setdefault(row.step, {})[row.key] = row.value
    if not any("reward" in v for v in by_step.values()):
        return []
    facts = Facts(cfg.grpo.max_completion_length if stage == "grpo" else cfg.smoke.max_completion_length,
                  dict(cfg.grpo.reward_weights))
    monitor, _ = replay(sorted(by_step.items()), cfg.health, facts)
    return [dict(r, replayed=True) for r in monitor.snapshot()]


def health_rows(store: RunStore, cfg: Any = None) -> list[dict[str, Any]]:
    """Every rule of every stage that has health data: {stage, rule, state, first_step, value, detail, ...}."""
    out = []
    for stage in HEALTH_STAGES:
        stored = store.results(stage, "health")
        if not stored and stage == "grpo" and cfg is not None:
            rows = _replayed(store, stage, cfg)
        elif stage == "judge":
            rows = list(stored.values())
        elif stored:
            known = {r.name for r in RULES}
            rows = [stored.get(r.name) or _blank(r.name) for r in RULES]
            rows += [v for k, v in stored.items() if k not in known]  # the audit's judge_fooled; grpo-dims prefixes
        else:
            rows = []
        out += [dict(r, stage=stage) for r in rows]
    return out


def _blank(rule: str) -> dict[str, Any]:
    r = next(x for x in RULES if x.name == rule)
    return {"rule": rule, "title": r.title, "state": NO_DATA, "severity": r.severity, "value": None, "detail": "",
            "first_step": None, "last_step": None, "explain": r.explain, "remedy": r.remedy}
