"""`--set key=value` on the command line: a config file with some keys changed, validated like the file itself."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from engine.config import Config, ConfigError, from_dict


def parse_value(text: str) -> Any:
    """A TOML value (5e-5, true, [1, 2], "x"); anything that is not one is taken as a string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def with_overrides(path: str | Path, sets: list[str]) -> Config:
    """The config at `path` with each `section.key=value` in `sets` applied; an unknown key or bad value is one line."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as err:
        raise ConfigError(f"{path}: cannot read config: {err}") from None
    for item in sets:
        key, sep, value = item.partition("=")
        parts = [p.strip() for p in key.split(".") if p.strip()]
        if not sep or len(parts) < 2:
            raise ConfigError(f"--set {item!r}: expected SECTION.KEY=VALUE, e.g. grpo.learning_rate=5e-5")
        node = data
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"--set {item!r}: {part} is a value, not a section")
            node = child
        node[parts[-1]] = parse_value(value.strip())
    return from_dict(data, f"{path} with --set {' '.join(sets)}")
