"""`aba sweep --emit slurm|script`: plain `aba run` lines on a shared runs folder, checked offline with bash's own
parser, the #SBATCH lines, and aba's own argument parser and config loader for every emitted command."""

from __future__ import annotations

import re
import shlex
import subprocess

import pytest

from engine import config as config_mod
from engine.cli import build_parser
from tests.conftest import DEMO, aba

GRID = ["--grid", "grpo.reward_weights.entropy_reduction=0.1,0.5", "--grid", "grpo.learning_rate=1e-3,1e-2"]


def _emitted(stdout: str) -> str:
    m = re.search(r"written as .*?: (\S+)", stdout)
    assert m, stdout
    return m.group(1)


def _commands(text: str) -> list[list[str]]:
    """Each emitted `"$ABA" ...` command as argv (the part after the program)."""
    out = []
    for line in text.splitlines():
        m = re.search(r'"\$ABA" (.*?)( \|\| failed=.*| ;;)?$', line)
        if m:
            out.append(shlex.split(m.group(1)))
    return out


@pytest.mark.parametrize("kind", ["slurm", "script"])
def test_emitted_sweep_is_valid_bash_with_one_aba_run_per_run(runs_dir, tmp_path, kind):
    proc = aba("sweep", str(DEMO), *GRID, "--stages", "sft,grpo,eval", "--emit", kind)
    assert proc.returncode == 0, proc.stderr
    path = _emitted(proc.stdout)
    text = open(path, encoding="utf-8").read()
    subprocess.run(["bash", "-n", path], check=True)  # bash's own syntax check
    cmds = _commands(text)
    assert len(cmds) == 4
    seen = set()
    for argv in cmds:
        args = build_parser().parse_args(argv)  # aba's own parser accepts every line
        assert args.command == "run" and args.stages == "sft,grpo,eval" and args.runs_dir == str(runs_dir)
        cfg = config_mod.load(args.config)  # and every config it names loads
        seen.add((cfg.grpo.reward_weights["entropy_reduction"], cfg.grpo.learning_rate))
        assert args.name.split()[1].startswith("sw")  # the sweep id in the name: how sweep-report finds it
    assert seen == {(0.1, 1e-3), (0.1, 1e-2), (0.5, 1e-3), (0.5, 1e-2)}
    assert not list(runs_dir.glob("*/run.db"))  # nothing ran, nothing queued
    if kind == "slurm":
        sbatch = [line for line in text.splitlines() if line.startswith("#SBATCH")]
        opts = dict(line[len("#SBATCH "):].split("=", 1) for line in sbatch)
        assert text.splitlines()[0].startswith("#!") and text.splitlines()[1].startswith("#SBATCH")
        assert opts["--array"] == "0-3" and opts["--gres"] == "gpu:1" and re.fullmatch(r"\d+:\d\d:\d\d", opts["--time"])
        first_cmd = next(i for i, line in enumerate(text.splitlines()) if not line.startswith("#"))
        assert all(i < first_cmd for i, line in enumerate(text.splitlines()) if line.startswith("#SBATCH"))
        # each array task runs exactly its own run (aba stood in for by a script that prints its arguments)
        argv = tmp_path / "argv.sh"
        argv.write_text('#!/bin/sh\nfor a in "$@"; do printf "%s\\n" "$a"; done\n')
        argv.chmod(0o755)
        for task in range(4):
            out = subprocess.run(["bash", path], env={"SLURM_ARRAY_TASK_ID": str(task), "ABA": str(argv),
                                                      "PATH": "/usr/bin:/bin"}, capture_output=True, text=True)
            assert out.returncode == 0 and out.stdout.splitlines() == cmds[task], out.stderr
