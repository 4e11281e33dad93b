"""Is a run database whole? SQLite's quick_check, read-only and cheap (no index-to-table cross check); and a
repair that copies every row SQLite can still read into a new database beside the damaged one, which is kept."""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path

QUICK_LIMIT = 10  # problems quick_check lists at most: one is enough to name the damage
REPAIR_TABLE_S = 60.0  # the longest a repair spends stepping past unreadable pages of one table


def _connect(path: Path) -> sqlite3.Connection:
    uri = path.resolve().as_uri() + "?mode=ro"
    conn = sqlite3.connect(uri, uri=True, timeout=5.0)
    try:
        conn.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
    except sqlite3.OperationalError as err:
        if "readonly" not in str(err) and "unable to open" not in str(err):
            raise
        conn.close()
        conn = sqlite3.connect(uri + "&immutable=1", uri=True, timeout=5.0)
    return conn


def problems(path: str | Path, full: bool = False) -> list[str]:
    """What SQLite finds wrong with the database at `path` ([] when it is whole). `full`: integrity_check."""
    path = Path(path)
    if not path.exists():
        return [f"{path}: no run database here"]
    try:
        conn = _connect(path)
        try:
            pragma = "integrity_check" if full else "quick_check"
            # One problem a line; SQLite heads a report with "*** in database main ***" inside the first row.
            rows = [line.strip() for r in conn.execute(f"PRAGMA {pragma}({QUICK_LIMIT})").fetchall()
                    for line in str(r[0]).splitlines() if line.strip() and not line.startswith("*** in database")]
            if rows != ["ok"]:
                return rows
            if not conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'meta'").fetchone():
                return ["not a run database (no meta table)"]
            return []
        finally:
            conn.close()
    except sqlite3.DatabaseError as err:
        return [str(err)]


CACHE_NAME = ".aba-check"  # the size and modification times of a database quick_check last found whole


def _stamp(path: Path) -> str | None:
    try:
        parts = []
        for p in (path, path.with_name(path.name + "-wal")):
            st = p.stat() if p.exists() else None
            parts.append(f"{st.st_size}:{st.st_mtime_ns}" if st else "-")
        return " ".join(parts)
    except OSError:
        return None


def damage(path: str | Path) -> str | None:
    """One line naming the damage, or None for a whole database. A database unchanged since quick_check last
    found it whole (same sizes and times, kept beside it in .aba-check) is not read again: `aba runs` over many
    finished runs stays quick."""
    path = Path(path)
    stamp = _stamp(path)
    cache = path.with_name(CACHE_NAME)
    try:
        if stamp is not None and cache.read_text(encoding="utf-8") == stamp:
            return None
    except OSError:
        pass
    found = problems(path)
    if not found:
        if stamp is not None and stamp == _stamp(path):
            try:
                cache.write_text(stamp, encoding="utf-8")
            except OSError:
                pass  # a read-only run folder: checked again next time
        return None
    more = f" (+{len(found) - 1} more)" if len(found) > 1 else ""
    return f"{found[0]}{more}"


def describe_unreadable(run_dir: Path, err: BaseException) -> str:
    """The one line a command or the panel says for a run whose database it could not read."""
    hurt = damage(run_dir / "run.db")
    if hurt:
        return (f"run {run_dir.name}: database damaged ({hurt}); `aba check --repair {run_dir.name}` copies what can"
                f" be read into a new database")
    return f"run {run_dir.name}: cannot read run.db ({(str(err).splitlines() or [''])[0]})"


@dataclass
class Repair:
    source: Path
    target: Path
    copied: dict[str, int] = field(default_factory=dict)  # table -> rows copied
    lost: dict[str, str] = field(default_factory=dict)  # table -> what could not be read, and why
    remaining: list[str] = field(default_factory=list)  # what quick_check says of the new database

    def lines(self) -> list[str]:
        out = [f"recovered {self.source} into {self.target} (the original is kept as it was)"]
        for table, n in sorted(self.copied.items()):
            lost = f"; LOST: {self.lost[table]}" if table in self.lost else ""
            out.append(f"  {table}: {n} row(s) copied{lost}")
        for table, why in sorted(self.lost.items()):
            if table not in self.copied:
                out.append(f"  {table}: LOST: {why}")
        out.append("new database: " + ("whole (quick_check ok)" if not self.remaining else "; ".join(self.remaining)))
        out.append(f"to use it: move {self.source.name} aside and rename {self.target.name} to {self.source.name}")
        return out


def repair(path: str | Path, target: str | Path | None = None) -> Repair:
    """Copy every readable row of every table of the damaged database into a fresh one made with this aba's schema
    (by rowid, in runs, stepping past what cannot be read), and say per table what was copied and what was lost."""
    from engine.store import SCHEMA_VERSION, RunStore  # the schema and its migrations

    path = Path(path)
    target = Path(target) if target else path.with_name(f"run.recovered-{time.strftime('%Y%m%d-%H%M%S')}.db")
    if target.exists():
        raise FileExistsError(f"{target} exists already")
    RunStore(target, create=True).close()
    out = Repair(path, target)
    src = _connect(path)
    dst = sqlite3.connect(target, isolation_level=None)
    try:
        try:
            tables = [r[0] for r in src.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'").fetchall()]
        except sqlite3.DatabaseError as err:
            out.lost["(schema)"] = f"the table list cannot be read ({err})"
            tables = [r[0] for r in dst.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'").fetchall()]
        for table in tables:
            _copy_table(src, dst, table, out)
        dst.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
        out.remaining = [r[0] for r in dst.execute("PRAGMA quick_check").fetchall() if r[0] != "ok"]
    finally:
        src.close()
        dst.close()
    return out


def _copy_table(src: sqlite3.Connection, dst: sqlite3.Connection, table: str, out: Repair) -> None:
    try:
        dst_cols = [r[1] for r in dst.execute(f'PRAGMA table_info("{table}")').fetchall()]
        src_cols = [r[1] for r in src.execute(f'PRAGMA table_info("{table}")').fetchall()]
    except sqlite3.DatabaseError as err:
        out.lost[table] = f"its columns cannot be read ({err})"
        return
    cols = [c for c in src_cols if c in dst_cols]
    if not dst_cols or not cols:
        out.lost[table] = "not a table of this aba's schema" if src_cols else "its columns cannot be read"
        return
    names = ", ".join(f'"{c}"' for c in cols)
    marks = ", ".join("?" * len(cols))
    if table == "meta":
        dst.execute("DELETE FROM meta")
    copied, skipped, last, failures = 0, 0, None, []
    resumed_at: int | None = -1
    deadline = time.monotonic() + REPAIR_TABLE_S
    dst.execute("BEGIN")
    # Rows are read in rowid order; where a page cannot be read, go on from the next rowid that can. Each retry
    # starts past the last (no row is tried twice), and a table gets REPAIR_TABLE_S at most.
    while time.monotonic() < deadline:
        try:
            cur = src.execute(f'SELECT rowid, {names} FROM "{table}"' + (" WHERE rowid > ?" if last is not None else "")
                              + " ORDER BY rowid", (last,) if last is not None else ())
            for row in cur:
                last = row[0]
                try:
                    dst.execute(f'INSERT OR REPLACE INTO "{table}" (rowid, {names}) VALUES (?, {marks})', row)
                    copied += 1
                except sqlite3.DatabaseError as err:
                    skipped += 1
                    failures.append(str(err))
            break
        except sqlite3.DatabaseError as err:
            failures.append(str(err))
            read_to = 0 if last is None else last  # None: not one row read yet (the table's first page is bad)
            after = read_to if last != resumed_at else read_to + 1  # no row read since: step past the bad one
            nxt = _next_readable_rowid(src, table, after)
            if nxt is None:
                break
            skipped += 1
            last = resumed_at = max(nxt - 1, after)
    else:
        failures.append(f"stopped after {REPAIR_TABLE_S} s")
    dst.execute("COMMIT")
    out.copied[table] = copied
    if failures:
        out.lost[table] = f"{'some' if copied else 'all'} rows unreadable ({failures[0]})" + (
            f", {skipped} row(s) or run(s) skipped" if skipped else "")


def _next_readable_rowid(src: sqlite3.Connection, table: str, last: int | None) -> int | None:
    """The next rowid after `last` whose row can be read, probing forwards in growing strides."""
    try:
        top = src.execute(f'SELECT MAX(rowid) FROM "{table}"').fetchone()[0]
    except sqlite3.DatabaseError:
        top = None
    start = (last or 0) + 1
    limit = top if top is not None else start + 1_000_000
    probe, stride = start, 1
    while probe <= limit:
        try:
            row = src.execute(f'SELECT rowid FROM "{table}" WHERE rowid >= ? ORDER BY rowid LIMIT 1',
                              (probe,)).fetchone()
            if row is None:
                return None
            src.execute(f'SELECT * FROM "{table}" WHERE rowid = ?', (row[0],)).fetchall()
            return int(row[0])
        except sqlite3.DatabaseError:
            probe += stride
            stride = min(stride * 2, 4096)
    return None
