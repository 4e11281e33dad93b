"""`aba sweep --emit script|slurm`: the sweep as plain `aba run` command lines for a scheduler that is not ours.

Each run's full config is written to `RUNS/sweeps/<SWEEP>/NNN.toml` (so no `--set` depends on what the base file
spells out); the command names the run with the sweep id, which is how `aba sweep-report` finds the runs on a
runs folder all nodes share, wherever they ran."""

from __future__ import annotations

import shlex
from pathlib import Path

from engine import config as config_mod
from engine.sweep.grid import Planned


def commands(root: Path, sweep_id: str, plans: list[Planned], *, stages: list[str] | None,
             data_from: str | None) -> list[list[str]]:
    folder = root / "sweeps" / sweep_id
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i, p in enumerate(plans):
        path = folder / f"{i:03d}.toml"
        config_mod.save(p.cfg, path)
        cmd = ["aba", "--runs-dir", str(root), "run", str(path), "--name", p.name]
        if stages:
            cmd += ["--stages", ",".join(stages)]
        if data_from:
            cmd += ["--data-from", data_from]
        out.append(cmd)
    return out


def _line(cmd: list[str]) -> str:
    return '"$ABA" ' + " ".join(shlex.quote(c) for c in cmd[1:])


def script(sweep_id: str, cmds: list[list[str]]) -> str:
    lines = ["#!/usr/bin/env bash", f"# aba sweep {sweep_id}: {len(cmds)} runs, one after another.",
             "# A failed run does not stop the rest; the exit status counts the failures.",
             "set -u", 'ABA="${ABA:-aba}"', "failed=0"]
    for cmd in cmds:
        lines.append(f"{_line(cmd)} || failed=$((failed + 1))")
    lines += ['echo "$failed run(s) failed"', 'exit "$failed"', ""]
    return "\n".join(lines)


def slurm(sweep_id: str, cmds: list[list[str]], root: Path, *, gpus: int = 1, time_limit: str = "24:00:00") -> str:
    log = root / "sweeps" / sweep_id / "slurm-%A_%a.out"
    lines = [
        "#!/usr/bin/env bash",
        f"#SBATCH --job-name=aba-{sweep_id}",
        f"#SBATCH --array=0-{len(cmds) - 1}",
        f"#SBATCH --gres=gpu:{gpus}",
        "#SBATCH --ntasks=1",
        f"#SBATCH --time={time_limit}",
        f"#SBATCH --output={log}",
        f"# aba sweep {sweep_id}: one run per array task, on the shared runs folder {root}.",
        "# Submit with `sbatch THIS_FILE`; then `aba sweep-report " + sweep_id + f" --runs-dir {root}`.",
        "set -euo pipefail",
        'ABA="${ABA:-aba}"',
        'case "${SLURM_ARRAY_TASK_ID:?run this file with sbatch}" in',
    ]
    for i, cmd in enumerate(cmds):
        lines.append(f"  {i}) exec {_line(cmd)} ;;")
    lines += ['  *) echo "no run for array task $SLURM_ARRAY_TASK_ID" >&2; exit 2 ;;', "esac", ""]
    return "\n".join(lines)
