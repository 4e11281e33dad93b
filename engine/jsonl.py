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
        raw = path.read_bytes()
    except OSError as err:
        raise UserError(f"{path}: cannot read {what} ({err.strerror or err})") from None
    for n, data in enumerate(raw.splitlines(), 1):
        try:
            line = data.decode("utf-8")
        except UnicodeDecodeError as err:
            raise UserError(f"{path}:{n}:{err.start + 1}: not UTF-8 (byte 0x{data[err.start]:02x}); save the file as"
                            f" UTF-8") from None
        if not line.strip():
            continue
        try:
            yield n, json.loads(line)
        except json.JSONDecodeError as err:
            raise UserError(f"{path}:{n}:{err.colno}: invalid JSON ({err.msg})") from None
