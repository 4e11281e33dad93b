"""All input checked before anything runs: `aba run` on a bad prompts file, battery or held-out set exits 2 with
`file:line: why` and makes no run; a prompt longer than datagen.max_prompt_chars is refused or cut, per config."""

from __future__ import annotations

import json
import shutil

from engine import config
from engine.prompts import load_category
from engine.runner.inputs import check_inputs
from tests.conftest import DEMO, ROOT, aba


def _variant(tmp_path, **datagen) -> tuple:
    prompts = tmp_path / "prompts"
    shutil.copytree(ROOT / "data" / "prompts", prompts)
    cfg = config.load(DEMO)
    cfg.datagen.prompts_dir = str(prompts)
    for k, v in datagen.items():
        setattr(cfg.datagen, k, v)
    path = tmp_path / "c.toml"
    config.save(cfg, path)
    return path, prompts


def _refused(proc, runs_dir, *words: str) -> str:
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    for w in words:
        assert w in proc.stderr, proc.stderr
    assert not any(runs_dir.iterdir()), "a run was made from bad input"
    return proc.stderr


def test_non_utf8_prompt_names_its_line_and_makes_no_run(tmp_path, runs_dir):
    cfg, prompts = _variant(tmp_path)
    lines = (prompts / "safety.jsonl").read_bytes().splitlines()
    lines[2] = lines[2].replace(b"How", b"H\xffw", 1) if b"How" in lines[2] else lines[2][:20] + b"\xff" + lines[2][20:]
    (prompts / "safety.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    _refused(aba("run", str(cfg), "--detach"), runs_dir, "safety.jsonl:3:", "not UTF-8")


def test_a_battery_missing_a_field_is_found_before_datagen_runs(tmp_path, runs_dir):
    cfg_path, _ = _variant(tmp_path)
    battery = tmp_path / "battery.toml"
    text = (ROOT / "data" / "battery.toml").read_text(encoding="utf-8")
    first = text.index("[[test]]")
    second = text.index("[[test]]", first + 1)
    block = text[second:]
    broken = "\n".join(ln for ln in block.splitlines() if not ln.startswith("prompt"))
    battery.write_text(text[:second] + broken + "\n", encoding="utf-8")
    cfg = config.load(cfg_path)
    cfg.eval.battery = str(battery)
    config.save(cfg, cfg_path)
    line = text[:second].count("\n") + 1
    _refused(aba("run", str(cfg_path), "--detach"), runs_dir, f"battery.toml:{line}:", "prompt")


def test_a_prompt_longer_than_the_limit_is_refused_or_cut(tmp_path, runs_dir):
    cfg_path, prompts = _variant(tmp_path, max_prompt_chars=1000)
    with open(prompts / "complexity.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps({"turns": [{"role": "user", "content": "why? " * 5000}]}) + "\n")
    n = len((prompts / "complexity.jsonl").read_text(encoding="utf-8").splitlines())
    _refused(aba("run", str(cfg_path), "--detach"), runs_dir, f"complexity.jsonl:{n}:", "max_prompt_chars")
    cfg = config.load(cfg_path)
    cfg.datagen.long_prompts = "cut"
    warnings = check_inputs(cfg, ["datagen"])
    assert len(warnings) == 1 and f"complexity.jsonl:{n}:" in warnings[0] and "cut" in warnings[0]
    said = []
    cut = load_category(prompts / "complexity.jsonl", "complexity", 1000, "cut", said.append)
    assert len(cut[-1].turns[-1]["content"]) == 1000 and said == warnings
