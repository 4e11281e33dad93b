"""Configs as flat `section.key` maps, and the keys two of them disagree on (run names, compare, the runs screen)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from engine.config import Config, load, to_dict


def flatten(data: dict, prefix: str = "") -> dict[str, Any]:
    """{"grpo": {"learning_rate": 1e-4}} -> {"grpo.learning_rate": 1e-4}; tables nest all the way down, so a
    changed reward weight shows as `grpo.reward_weights.helpfulness`, not as the whole table."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def flat(cfg: Config) -> dict[str, Any]:
    return flatten(to_dict(cfg))


def flat_file(path: str | Path) -> dict[str, Any]:
    return flat(load(path))


def config_diff(a: dict[str, Any], b: dict[str, Any]) -> list[dict[str, Any]]:
    """Only the keys whose values differ (a key present on one side only counts as differing), sorted."""
    return [{"key": k, "a": a.get(k), "b": b.get(k)} for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


def differing_keys(configs: list[dict[str, Any]]) -> list[str]:
    """Keys on which any of several configs disagree."""
    keys = sorted(set().union(*configs)) if configs else []
    return [k for k in keys if len({repr(c.get(k)) for c in configs}) > 1]


def short_value(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)
