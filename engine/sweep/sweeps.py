"""A sweep on disk: `RUNS/sweeps/<SWEEP>.json` (what was swept, its runs, the objective) and each run's
`sweep.json` (its sweep and its swept values), so `aba sweep-report` finds them wherever the runs ran."""

from __future__ import annotations

import json
import os
import secrets
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from engine.errors import UserError
from engine.sweep.grid import Planned

SWEEPS_DIR = "sweeps"
OBJECTIVES = ("heldout", "rating", "reward")


def new_sweep_id() -> str:
    return datetime.now().strftime("sw%m%d-%H%M%S-") + secrets.token_hex(2)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")
    os.replace(tmp, path)


def create(root: Path, sweep_id: str, plans: list[Planned], keys: list[str], *, stages: list[str] | None,
           data_from: str | None, objective: str, reference_weights: dict[str, float] | None = None) -> list[Path]:
    """Create every run folder of the sweep (data copied in), then the sweep's manifest. A bad data source fails
    before the first folder exists; a failure halfway removes the folders made so far."""
    import shutil

    from engine.runner import datasource
    from engine.runner import supervisor as sup

    if data_from:
        datasource.load_source(data_from, root, sup.resolve_run)  # checked once, up front
    made: list[Path] = []
    try:
        for p in plans:
            run_dir = sup.create_run(p.config_path, root, stages, cfg=p.cfg, name=p.name, data_from=data_from)
            made.append(run_dir)
            _write_json(run_dir / "sweep.json", {"sweep": sweep_id, "params": p.params})
            time.sleep(0.001)
    except BaseException:
        for d in made:
            shutil.rmtree(d, ignore_errors=True)
        raise
    manifest = {
        "id": sweep_id, "created": time.time(), "keys": keys, "objective": objective,
        "configs": sorted({str(p.config_path) for p in plans}), "stages": stages, "data_from": data_from,
        "runs": [{"id": d.name, "name": p.name, "params": p.params} for d, p in zip(made, plans)],
        "reference_weights": reference_weights,
    }
    _write_json(root / SWEEPS_DIR / f"{sweep_id}.json", manifest)
    return made


def reference_weights(config_path: str | Path, sets: list[str]) -> dict[str, float]:
    """The base config's reward weights (with --set): the one yardstick every run's held-out answers are scored
    with, so a run that weighs a dimension more does not win by its own weighting."""
    from engine import config as config_mod
    from engine.config.overrides import with_overrides

    cfg = with_overrides(config_path, sets) if sets else config_mod.load(config_path)
    return dict(cfg.grpo.reward_weights)


def load(root: Path, sweep_id: str) -> dict[str, Any]:
    folder = root / SWEEPS_DIR
    exact = folder / f"{sweep_id}.json"
    if not exact.exists():
        found = sorted(folder.glob(f"{sweep_id}*.json")) if folder.exists() else []
        if len(found) > 1:
            raise UserError(f"sweep {sweep_id!r} is ambiguous: {', '.join(f.stem for f in found[:5])}")
        if not found:
            known = ", ".join(f.stem for f in sorted(folder.glob("*.json"))[-5:]) if folder.exists() else ""
            raise UserError(f"no sweep {sweep_id!r} in {root}" + (f" (sweeps: {known})" if known else ""))
        exact = found[0]
    try:
        return json.loads(exact.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise UserError(f"{exact}: cannot read the sweep ({err})") from None


def membership(run_dir: Path) -> dict[str, Any] | None:
    """The run's sweep and swept values, or None for a run outside any sweep."""
    try:
        return json.loads((run_dir / "sweep.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
