"""Config: the seed's defaults, and one clear line for every kind of bad input."""

from __future__ import annotations

import subprocess
import sys

import pytest

from engine import config
from engine.config import ConfigError
from engine.dims import DIMENSIONS
from tests.conftest import DEMO, ROOT, write_config


def test_seed_defaults():
    cfg = config.Config()
    assert cfg.sft.learning_rate == 2e-4 and cfg.sft.num_train_epochs == 3 and cfg.sft.max_seq_length == 2048
    g = cfg.grpo
    assert (g.num_generations, g.max_completion_length, g.per_device_train_batch_size, g.gradient_accumulation_steps) == (4, 1024, 1, 8)
    assert g.reward_weights == {d: pytest.approx(1 / 9) for d in DIMENSIONS}
    assert cfg.model.load_in_4bit and cfg.model.gradient_checkpointing
    assert sum(cfg.datagen.category_targets.values()) == 500
    assert cfg.commitment.lambdas == [1.0, 0.1, 0.01]


def test_every_field_has_help():
    rows = config.describe()
    assert len(rows) > 60
    assert all(help_text for _, _, help_text in rows)


def test_shipped_configs_load_and_roundtrip(tmp_path):
    for name in ("demo.toml", "qwen3-8b.toml"):
        cfg = config.load(ROOT / "data" / "configs" / name)
        path = tmp_path / name
        config.save(cfg, path)
        assert config.load(path) == cfg
    real = config.load(ROOT / "data" / "configs" / "qwen3-8b.toml")
    assert real.model.base == "mlabonne/Qwen3-8B-abliterated" and real.judge.llm.backend == "vertex"


@pytest.mark.parametrize(
    "text, expected",
    [
        ("[sft\nlearning_rate = 1", "c.toml:1:5: TOML syntax error"),
        ("[sft]\nlerning_rate = 0.1\n", "sft.lerning_rate: unknown key (did you mean 'sft.learning_rate'?)"),
        ("[sft]\nlearning_rate = -0.1\n", "sft.learning_rate: -0.1 must be greater than 0"),
        ("[sft]\nlearning_rate = 'fast'\n", "sft.learning_rate: expected a number, got 'fast'"),
        ("[grpo]\nnum_generations = 1\n", "grpo.num_generations: 1 is below the minimum 2"),
        ("[model]\nbackend = 'unslot'\n", "model.backend: 'unslot' is not one of auto, unsloth, standard (did you mean 'unsloth'?)"),
        ("[grpo.reward_weights]\n" + "".join(f"{d} = 0\n" for d in DIMENSIONS), "weights are all zero"),
        ("[grpo.reward_weights]\nentropy_reduction = 1\n", "missing weight for 'calibrated_uncertainty'"),
        ("[grpo]\nnum_generations = 3\n", "must be a multiple of grpo.num_generations (3)"),
        ("[runn]\nseed = 1\n", "runn: unknown key (did you mean 'run'?)"),
        ("[commitment]\nlayer_ranges = ['first:3']\n", "layer range 'first:3'"),
    ],
)
def test_bad_config_one_line(tmp_path, text, expected):
    path = write_config(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        config.load(path)
    message = str(err.value)
    assert expected in message and "\n" not in message
    assert message.startswith(str(path))


def test_cli_bad_config_exit_2_no_traceback(tmp_path):
    path = write_config(tmp_path, "[sft]\nlearning_rate = -1\n")
    proc = subprocess.run([sys.executable, "-m", "engine.cli", "run", str(path)], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and "sft.learning_rate" in proc.stderr


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        config.load(tmp_path / "nope.toml")


def test_demo_is_small():
    cfg = config.load(DEMO)
    assert cfg.model.base == "demo:tiny-qwen3" and cfg.datagen.llm.backend == "offline"
