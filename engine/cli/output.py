"""Tables the CLI prints: rich boxes on a terminal, plain whole columns when piped; every cell made inert."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from engine.text import inert


def print_table(headers: Sequence[str], rows: Sequence[Sequence[object]], title: str | None = None) -> None:
    """On a terminal: a rich table (ids never cut). Piped: a header line, then one line per row, columns separated
    by two spaces and padded to their widest cell, nothing truncated or wrapped (no title: `awk`, `cut` and
    `grep` see whole values and the first line is the header)."""
    cells = [[inert("" if c is None else c, oneline=True) for c in row] for row in rows]
    if not sys.stdout.isatty():
        widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]
        for row in [list(headers), *cells]:
            print("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
        return
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table(title=Text(inert(title, oneline=True)) if title else None)
    for i, h in enumerate(headers):
        table.add_column(h, no_wrap=i == 0, overflow="fold")  # the first column is the id: whole, always
    for row in cells:
        table.add_row(*[Text(c) for c in row])
    Console(highlight=False).print(table)
