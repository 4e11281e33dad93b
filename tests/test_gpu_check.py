"""bench/gpu_check.py, the one-shot GPU check: it refuses in one line without CUDA, and its plan (the Qwen3-8B
shape, the estimates, the `aba smoke` commands) runs on the CPU with --dry-run."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.conftest import ROOT


def _gpu_check(*args: str):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "bench/gpu_check.py", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)


def test_gpu_check_refuses_in_one_line_without_cuda():
    proc = _gpu_check()
    assert proc.returncode == 2
    assert proc.stdout == "" and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert proc.stderr.startswith("gpu_check: no CUDA device")


def test_gpu_check_plans_on_cpu(tmp_path):
    from engine.config.overrides import with_overrides

    proc = _gpu_check("--dry-run", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert "Qwen3-8B config, 8,190,735,360 parameters" in lines[0]  # Qwen3-8B's exact shape, counted on meta
    commands = [line for line in lines if line.startswith("  [")]
    assert [c.split("]")[0] for c in commands] == ["  [unsloth", "  [standard"]
    for command in commands:
        assert "ABA_CUDA_MEMORY_CAP_GB=16" in command and " smoke " in command
        # the seed's GRPO shape, and every --set a key `aba smoke` accepts
        sets = command.split("--set ")[1:]
        for want in ("grpo.num_generations=4", "grpo.max_completion_length=1024",
                     "grpo.per_device_train_batch_size=1", "grpo.gradient_accumulation_steps=8",
                     "model.load_in_4bit=true", "train.device=cuda"):
            assert want + " " in command or command.endswith(want), want
        cfg = with_overrides(ROOT / "data" / "configs" / "demo.toml", [s.strip() for s in sets])
        assert cfg.model.base == str(tmp_path / "qwen3-8b-random") and cfg.grpo.num_generations == 4
    assert lines[-1].startswith("versions: torch ") and "bitsandbytes 0.50.2" in lines[-1]
