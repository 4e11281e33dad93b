"""Where a new run's data comes from: another run's database or a data file, copied in when the run is created."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.config import Config
from engine.errors import UserError
from engine.store import RunStore


@dataclass
class Source:
    """A data source read and checked before the new run folder exists (so a bad source leaves nothing behind)."""

    kind: str  # "run" or "file"
    path: Path
    id: str
    name: str
    snapshot: dict[str, Any] | None = None  # kind "run": the source's data tables
    rows: dict[str, list[dict]] | None = None  # kind "file": validated prompts and traces


def load_source(spec: str, root: Path, resolve_run: Callable[[str, Path], Path]) -> Source:
    """A run id (or unique prefix, or run folder) in `root`, or a .jsonl/.csv file.

    `resolve_run` is the supervisor's, handed in: the supervisor imports this module, so this one does not import it
    back (no import cycle)."""
    path = Path(spec).expanduser()
    if path.is_file():
        from engine.reporting.imports import read_data_file

        path = path.resolve()
        return Source("file", path, str(path), path.name, rows=read_data_file(path))
    if path.suffix.lower() in (".jsonl", ".csv"):
        raise UserError(f"--data-from: {spec}: no such file")
    run_dir = resolve_run(spec, root)
    with RunStore(run_dir / "run.db", readonly=True) as src:
        info = src.run_info()
        if not src.trace_count() and not src.prompts():
            raise UserError(f"--data-from: run {run_dir.name} has no prompts or traces to take")
        snapshot = src.data_snapshot()
        upstream = src.lineage()
    source = Source("run", run_dir, run_dir.name, info.get("name") or run_dir.name, snapshot=snapshot)
    source.snapshot["upstream"] = upstream  # type: ignore[index]
    return source


def attach(store: RunStore, source: Source, weights: dict[str, float]) -> dict[str, Any]:
    """Copy the source's data into the (new, empty) run in one transaction and record the lineage."""
    lineage = {"kind": source.kind, "source_id": source.id, "source_name": source.name, "source_path": str(source.path)}
    if source.kind == "run":
        assert source.snapshot is not None
        upstream = source.snapshot.pop("upstream", None)
        if upstream:  # a copy of a copy: keep the root, so runs sharing data are found whatever the chain
            lineage["root_id"] = upstream.get("root_id", upstream.get("source_id"))
        store.copy_data(source.snapshot, lineage, weights)
    else:
        assert source.rows is not None
        store.import_traces(source.rows, lineage, weights)
    return store.lineage() or {}


def default_name(cfg: Config, cfg_path: str | Path, source: Source | None) -> str:
    """run.name plus what differs from the config file (`--set` keys) and where the data came from, so ten runs of
    one config are told apart at a glance: `demo grpo.learning_rate=5e-05 data<-20261122-1201`."""
    from engine.config.diff import config_diff, flat, flat_file, short_value

    try:
        changed = config_diff(flat_file(cfg_path), flat(cfg))
    except UserError:
        changed = []
    parts = [f"{d['key']}={short_value(d['b'])}" for d in changed if d["key"] not in ("data.from_run", "run.name")]
    if source is not None:
        parts.append(f"data<-{source.id if source.kind == 'run' else source.name}")
    return " ".join([cfg.run.name, *parts])
