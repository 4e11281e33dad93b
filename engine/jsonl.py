"""Reading JSONL data files: every bad line reported with its file, line, column and reason."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from engine.errors import UserError


def read_jsonl(path: Path, what: str) -> Iterator[tuple[int, Any]]:
    """(line number, parsed object) for each non-blank line; UserError at the first unreadable one."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(f"{path}: cannot read {what} ({err})") from None
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            yield n, json.loads(line)
        except json.JSONDecodeError as err:
            raise UserError(f"{path}:{n}:{err.colno}: invalid JSON ({err.msg})") from None
