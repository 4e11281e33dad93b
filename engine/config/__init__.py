"""Typed pipeline configuration: the seed's numbers as defaults, help on every field, strict loading."""

from __future__ import annotations

import difflib
import re
import tomllib
import typing
from dataclasses import MISSING, fields, is_dataclass
from pathlib import Path
from typing import Any

import tomli_w

from engine.config.sections import (  # noqa: F401  (the sections are part of this package's API)
    RunConfig, ModelConfig, LLMConfig, DatagenConfig, JudgeConfig, SFTConfig, GRPOConfig, SmokeConfig, EvalConfig, ExportConfig, GRPODimsConfig, TiesConfig, CommitmentConfig, EntangledConfig, GPUConfig, TrainConfig, DataConfig, Config,
)
from engine.dims import DIMENSIONS
from engine.errors import UserError
from engine.registry import STAGES  # noqa: F401  (engine.config.STAGES: the registry's names)

_DIM_DICTS = {"reward_weights"}
_TIER_DICTS = {"tier_counts"}


class ConfigError(UserError):
    """A config file that cannot be used, reported as one line."""


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _check_value(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    if origin is list:
        (item,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list of {_type_name(item)}, got {value!r}")
        return [_check_value(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        _, item = typing.get_args(tp)
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a table, got {value!r}")
        return {k: _check_value(v, item, f"{where}.{k}") for k, v in value.items()}
    raise TypeError(f"unsupported config type {tp!r}")  # a bug, not a user error


def _check_range(value: Any, meta: dict, where: str) -> None:
    items = value if isinstance(value, list) else value.values() if isinstance(value, dict) else [value]
    for v in items:
        if "choices" in meta and v not in meta["choices"]:
            close = difflib.get_close_matches(str(v), [str(c) for c in meta["choices"]], n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"{where}: {v!r} is not one of {', '.join(map(str, meta['choices']))}{hint}")
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            if "min" in meta and v < meta["min"]:
                raise ConfigError(f"{where}: {v} is below the minimum {meta['min']}")
            if "gt" in meta and v <= meta["gt"]:
                raise ConfigError(f"{where}: {v} must be greater than {meta['gt']}")
            if "max" in meta and v > meta["max"]:
                raise ConfigError(f"{where}: {v} is above the maximum {meta['max']}")


def _build(cls: type, data: dict, prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        name = key.replace("-", "_")
        where = f"{prefix}{key}"
        if name not in known:
            close = difflib.get_close_matches(name, list(known), n=1)
            hint = f" (did you mean '{prefix}{close[0]}'?)" if close else f" (valid: {', '.join(known)})"
            raise ConfigError(f"{where}: unknown key{hint}")
        tp = hints[name]
        if is_dataclass(tp):
            if not isinstance(value, dict):
                raise ConfigError(f"{where}: expected a table [{where}], got {value!r}")
            kwargs[name] = _build(tp, value, f"{where}.")
            continue
        checked = _check_value(value, tp, where)
        _check_range(checked, known[name].metadata, where)
        if name in _DIM_DICTS:
            _check_dims(checked, where)
        if name in _TIER_DICTS:
            _check_tiers(checked, where)
        kwargs[name] = checked
    return cls(**kwargs)


def _check_dims(weights: dict[str, float], where: str) -> None:
    for key in weights:
        if key not in DIMENSIONS:
            close = difflib.get_close_matches(key, DIMENSIONS, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ConfigError(f"{where}.{key}: unknown dimension{hint}")
    for dim in DIMENSIONS:
        if dim not in weights:
            raise ConfigError(f"{where}: missing weight for '{dim}' (all nine dimensions need one)")
        if weights[dim] < 0:
            raise ConfigError(f"{where}.{dim}: weights must be >= 0, got {weights[dim]}")
    if sum(weights.values()) <= 0:
        raise ConfigError(f"{where}: weights are all zero; at least one dimension needs a positive weight")


def _check_tiers(counts: dict[str, int], where: str) -> None:
    from engine.dims import TIERS

    for key, n in counts.items():
        if key not in TIERS:
            raise ConfigError(f"{where}.{key}: unknown tier (tiers: {', '.join(TIERS)})")
        if n < 0:
            raise ConfigError(f"{where}.{key}: must be >= 0, got {n}")
    if sum(counts.values()) < 1:
        raise ConfigError(f"{where}: at least one trace per prompt is needed")


def _cross_checks(cfg: Config, path: str) -> None:
    g = cfg.grpo
    batch = g.per_device_train_batch_size * g.gradient_accumulation_steps * cfg.train.num_processes
    if batch % g.num_generations:
        raise ConfigError(
            f"{path}: grpo: per_device_train_batch_size x gradient_accumulation_steps x train.num_processes "
            f"({batch}) must be a multiple of grpo.num_generations ({g.num_generations})"
        )
    if len(cfg.ties.weights) != len(cfg.grpo_dims.dimensions):
        raise ConfigError(
            f"{path}: ties.weights has {len(cfg.ties.weights)} entries but grpo_dims.dimensions has "
            f"{len(cfg.grpo_dims.dimensions)}"
        )
    for spec in cfg.commitment.layer_ranges + [cfg.entangled.layer_range]:
        if not re.fullmatch(r"all|last:\d+|\d+:\d+", spec):
            raise ConfigError(f"{path}: layer range {spec!r}: use 'all', 'last:N' or 'START:END'")


def _toml_position(err: tomllib.TOMLDecodeError) -> tuple[str, str]:
    msg = str(err)
    m = re.search(r"\(at line (\d+), column (\d+)\)", msg)
    if m:
        return f"{m.group(1)}:{m.group(2)}", msg[: m.start()].strip()
    m = re.search(r"\(at end of document\)", msg)
    return ("end", msg[: m.start()].strip()) if m else ("?", msg)


def from_dict(data: dict, path: str = "<config>") -> Config:
    try:
        cfg = _build(Config, data, "")
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None
    _cross_checks(cfg, path)
    return cfg


def loads(text: str, path: str = "<config>") -> Config:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        pos, msg = _toml_position(err)
        raise ConfigError(f"{path}:{pos}: TOML syntax error: {msg}") from None
    return from_dict(data, path)


def load(path: str | Path) -> Config:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: cannot read config: {err}") from None
    return loads(text, str(path))


def to_dict(obj: Any) -> dict:
    out: dict[str, Any] = {}
    for f in fields(obj):
        value = getattr(obj, f.name)
        out[f.name] = to_dict(value) if is_dataclass(value) else value
    return out


def dumps(cfg: Config) -> str:
    return tomli_w.dumps(to_dict(cfg))


def save(cfg: Config, path: str | Path) -> None:
    """Write atomically: a crash mid-write leaves the old file."""
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(dumps(cfg), encoding="utf-8")
    tmp.replace(path)


def describe(cls: type = Config, prefix: str = "") -> list[tuple[str, str, str]]:
    """(dotted key, default, help) for every field, for `aba config --help-keys` and the UI."""
    rows = []
    for f in fields(cls):
        tp = typing.get_type_hints(cls)[f.name]
        if is_dataclass(tp):
            rows += describe(tp, f"{prefix}{f.name}.")
            continue
        default = f.default if f.default is not MISSING else f.default_factory()  # type: ignore[misc]
        rows.append((f"{prefix}{f.name}", repr(default), f.metadata.get("help", "")))
    return rows

