"""Experiment trackers through TRL's own `report_to`: TensorBoard, trackio, W&B (none unless `run.report_to` asks).

Where they write: TensorBoard event files in `RUN/tracking/tensorboard/<stage>/`, trackio's local project in
`RUNS/trackio/` (one database for all runs of a runs folder, so a sweep's runs sit side by side; $TRACKIO_DIR wins),
W&B wherever the `wandb` client is set to (offline: `WANDB_MODE=offline`). The tracker's run name is the run's name
and id; its config gets the run's frozen config beside TRL's arguments."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from engine.config.diff import flat


def tracker_env(cfg, run_dir: Path, stage: str) -> None:
    """Where the trackers write, as the environment they read: set by the worker before the stage imports anything
    (trackio fixes its folder when it is first imported, and TRL imports it with the GRPO trainer)."""
    wanted = set(cfg.run.report_to)
    if "tensorboard" in wanted:
        os.environ["TENSORBOARD_LOGGING_DIR"] = str(run_dir / "tracking" / "tensorboard" / stage)
    if "trackio" in wanted:
        os.environ.setdefault("TRACKIO_DIR", str(run_dir.parent / "trackio"))


def args_for(ctx) -> dict[str, Any]:
    """The TrainingArguments keys for the trackers the run asks for (report_to "none" when it asks for none)."""
    wanted = list(ctx.cfg.run.report_to)
    if not wanted:
        return {"report_to": "none"}
    name = ctx.store.run_info().get("name") or ctx.cfg.run.name
    tracker_env(ctx.cfg, ctx.run_dir, ctx.name)  # a stage run outside the worker (tests, benches)
    return {"report_to": wanted, "run_name": f"{name} [{ctx.run_id}/{ctx.name}]", "project": _project(ctx.cfg.run.name)}


def _project(name: str) -> str:
    return "aba-" + "".join(c if c.isalnum() or c in "-_" else "-" for c in name)


def log_config(ctx) -> None:
    """The run's frozen config into each tracker that is on (called when training begins, after TRL's callbacks
    have opened their runs)."""
    wanted = set(ctx.cfg.run.report_to)
    if not wanted or not ctx.primary:
        return
    values = {f"aba/{k}": (v if isinstance(v, (int, float, str, bool)) else str(v)) for k, v in flat(ctx.cfg).items()}
    if "tensorboard" in wanted:
        from torch.utils.tensorboard import SummaryWriter

        from engine import config as config_mod

        writer = SummaryWriter(log_dir=os.environ["TENSORBOARD_LOGGING_DIR"], filename_suffix=".aba-config")
        writer.add_text("aba/config", "```toml\n" + config_mod.dumps(ctx.cfg) + "\n```")
        writer.close()
    if "trackio" in wanted:
        import trackio

        trackio.config.update(values, allow_val_change=True)
    if "wandb" in wanted:
        import wandb

        if wandb.run is not None:
            wandb.config.update(values, allow_val_change=True)
