"""A sweep's runs: the product of `--grid KEY=V1,V2` lists (or `--random N` samples), on one config or several.

Every key is an ordinary config key, checked like `--set` (reward weights too: `grpo.reward_weights.helpfulness`),
and every config the sweep makes is validated in full before any run folder exists."""

from __future__ import annotations

import copy
import difflib
import itertools
import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine import config as config_mod
from engine.config import Config, ConfigError
from engine.config.diff import flat, short_value
from engine.config.overrides import parse_value
from engine.errors import UserError

MAX_RUNS_WITHOUT_YES = 1000


@dataclass
class Axis:
    """One swept key: a list of values, or (with --random) a range LO..HI, optionally log-uniform."""

    key: str
    values: list[Any] = field(default_factory=list)
    lo: float | None = None
    hi: float | None = None
    log: bool = False
    integer: bool = False

    @property
    def is_range(self) -> bool:
        return self.lo is not None


@dataclass
class Planned:
    """One run of the sweep: its config, the swept values, the config file it came from, its name."""

    cfg: Config
    params: dict[str, Any]
    config_path: Path
    name: str


def parse_axis(spec: str) -> Axis:
    key, sep, rest = spec.partition("=")
    key = key.strip()
    if not sep or "." not in key:
        raise UserError(f"--grid {spec!r}: expected SECTION.KEY=V1,V2,... e.g. grpo.learning_rate=1e-3,1e-2")
    rest = rest.strip()
    if not rest:
        raise UserError(f"--grid {key}: no values (give V1,V2,... or LO..HI with --random)")
    if ".." in rest and not rest.startswith(("[", '"', "'")):
        lo_s, _, hi_s = rest.partition("..")
        hi_s, _, scale = hi_s.partition(":")
        lo, hi = parse_value(lo_s.strip()), parse_value(hi_s.strip())
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (lo, hi)):
            raise UserError(f"--grid {key}={rest}: a range needs two numbers, LO..HI (or LO..HI:log)")
        if scale not in ("", "log"):
            raise UserError(f"--grid {key}={rest}: the only range scale is ':log'")
        if hi < lo:
            raise UserError(f"--grid {key}={rest}: LO is above HI")
        if scale == "log" and lo <= 0:
            raise UserError(f"--grid {key}={rest}: a log range needs LO > 0")
        return Axis(key, lo=lo, hi=hi, log=scale == "log", integer=isinstance(lo, int) and isinstance(hi, int))
    values = [parse_value(v.strip()) for v in _split(rest)]
    if any(v == "" for v in values):
        raise UserError(f"--grid {key}={rest}: an empty value")
    return Axis(key, values=values)


def _split(text: str) -> list[str]:
    """Commas split values, except inside [...] (a list value such as run.report_to=["tensorboard"],[])."""
    out, depth, cur = [], 0, ""
    for ch in text:
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
        if ch == "," and depth == 0:
            out.append(cur)
            cur = ""
        else:
            cur += ch
    out.append(cur)
    return out


def _set(data: dict, key: str, value: Any) -> None:
    parts = key.split(".")
    node = data
    for part in parts[:-1]:
        node = node[part]
    node[parts[-1]] = value


def _check_keys(axes: list[Axis], cfg: Config) -> None:
    known = flat(cfg)
    seen = set()
    for a in axes:
        if a.key in seen:
            raise UserError(f"--grid {a.key}: given twice")
        seen.add(a.key)
        if a.key not in known:
            close = difflib.get_close_matches(a.key, list(known), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else " (see `aba config --help` or the config file)"
            raise UserError(f"--grid {a.key}: unknown config key{hint}")


def _build(data: dict, assignment: dict[str, Any], where: str) -> Config:
    d = copy.deepcopy(data)
    for k, v in assignment.items():
        _set(d, k, v)
    return config_mod.from_dict(d, where)


def _check_values(axes: list[Axis], data: dict, where: str) -> None:
    """Each value alone on the base config: a wrong type is reported against its own --grid key."""
    for a in axes:
        probes = a.values if not a.is_range else [a.lo, a.hi]
        for v in probes:
            try:
                _build(data, {a.key: v}, where)
            except ConfigError as err:
                raise UserError(f"--grid {a.key}={short_value(v)}: {_why(err, where, a.key)}") from None


def _why(err: ConfigError, where: str, key: str = "") -> str:
    """The config loader's message without the file it names (the sweep says which --grid value) or the key."""
    msg = str(err)
    msg = msg[len(where) + 2:] if msg.startswith(where + ": ") else msg
    return msg[len(key) + 2:] if key and msg.startswith(key + ": ") else msg


def _assignments(axes: list[Axis], n_random: int | None, seed: int) -> list[dict[str, Any]]:
    if n_random is None:
        ranges = [a.key for a in axes if a.is_range]
        if ranges:
            raise UserError(f"--grid {ranges[0]}: a range LO..HI is sampled only with --random N")
        return [dict(zip([a.key for a in axes], combo)) for combo in itertools.product(*[a.values for a in axes])]
    rng = random.Random(seed)
    out = []
    for _ in range(n_random):
        row = {}
        for a in axes:
            if not a.is_range:
                row[a.key] = rng.choice(a.values)
            elif a.integer:
                row[a.key] = rng.randint(int(a.lo), int(a.hi))
            elif a.log:
                row[a.key] = float(f"{math.exp(rng.uniform(math.log(a.lo), math.log(a.hi))):.4g}")
            else:
                row[a.key] = float(f"{rng.uniform(a.lo, a.hi):.4g}")
        out.append(row)
    return out


def short_key(key: str, keys: list[str]) -> str:
    """The last part of a key when no other swept key ends the same (`entropy_reduction`), else the whole key."""
    last = key.rsplit(".", 1)[-1]
    return last if sum(k.rsplit(".", 1)[-1] == last for k in keys) == 1 else key


def run_name(base: str, sweep_id: str, params: dict[str, Any], config_label: str | None) -> str:
    keys = list(params)
    parts = [f"{short_key(k, keys)}={short_value(v)}" for k, v in params.items()]
    return " ".join([base, sweep_id, *([config_label] if config_label else []), *parts])


def plan(config_paths: list[Path], grid: list[str], sets: list[str], *, n_random: int | None, sweep_id: str,
         yes: bool = False) -> tuple[list[Planned], list[str]]:
    """Every run the sweep would make, validated, before anything is written. Returns (runs, swept keys)."""
    from engine.config.overrides import with_overrides

    if not grid and len(config_paths) < 2:
        raise UserError("empty sweep: give at least one --grid KEY=V1,V2 (or two configs with --configs)")
    if n_random is not None and n_random < 1:
        raise UserError(f"--random {n_random}: must be 1 or more")
    axes = [parse_axis(g) for g in grid]
    out: list[Planned] = []
    for path in config_paths:
        cfg = with_overrides(path, sets) if sets else config_mod.load(path)
        data = config_mod.to_dict(cfg)
        where = f"{path}" + (f" with --set {' '.join(sets)}" if sets else "")
        _check_keys(axes, cfg)
        _check_values(axes, data, where)
        rows = _assignments(axes, n_random, cfg.run.seed) if axes else [{}]
        total = len(rows) * len(config_paths)
        if total > MAX_RUNS_WITHOUT_YES and not yes:
            raise UserError(f"this sweep makes {total} runs (over {MAX_RUNS_WITHOUT_YES}); narrow the grid or add --yes")
        label = Path(path).stem if len(config_paths) > 1 else None
        for row in rows:
            try:
                run_cfg = _build(data, row, where)
            except ConfigError as err:
                combo = " ".join(f"{k}={short_value(v)}" for k, v in row.items())
                raise UserError(f"sweep run {combo}: {_why(err, where)}") from None
            params = ({"config": label} if label else {}) | row
            out.append(Planned(run_cfg, params, Path(path), run_name(cfg.run.name, sweep_id, row, label)))
    if not out:
        raise UserError("empty sweep: the grid makes no runs")
    return out, [a.key for a in axes]
