"""Every file a run's stages will read, checked when the run is made: nothing starts on input that a later stage
would refuse. Each error names the file and line (`file:line: why`); `aba run` exits 2 on it."""

from __future__ import annotations

from pathlib import Path

from engine.config import Config
from engine.errors import UserError

ROOT = Path(__file__).resolve().parents[2]


def _path(p: str) -> Path:
    return Path(p) if Path(p).is_absolute() else ROOT / p


def check_inputs(cfg: Config, stages: list[str]) -> list[str]:
    """Read and check the prompts (datagen), battery and held-out prompts (eval), probes (commitment, entangled);
    raise UserError at the first bad one. Returns the warnings (prompts cut under datagen.long_prompts = "cut")."""
    from engine.prompts import load_category, load_prompts

    warnings: list[str] = []
    d = cfg.datagen
    if "datagen" in stages and not cfg.data.from_run:
        load_prompts(_path(d.prompts_dir), list(d.category_targets), d.max_prompt_chars, d.long_prompts,
                     warnings.append)
    if "eval" in stages:
        from engine.evaluation.battery import load_battery

        load_battery(_path(cfg.eval.battery))
        if not load_category(_path(cfg.eval.heldout), "heldout", d.max_prompt_chars, d.long_prompts, warnings.append):
            raise UserError(f"{_path(cfg.eval.heldout)}: no held-out prompts (eval.heldout)")
    if "commitment" in stages or "entangled" in stages:
        _check_probes(_path(cfg.commitment.probes))
    return warnings


def _check_probes(path: Path) -> None:
    """What engine.evaluation.commitment.load_probes asks of each line, without importing torch for it."""
    from engine.jsonl import read_jsonl

    n_probes = 0
    for n, row in read_jsonl(path, "probes"):
        missing = [k for k in ("id", "first", "filler", "followup") if not isinstance(row, dict) or k not in row]
        if missing:
            raise UserError(f"{path}:{n}: probe needs id, first, filler and followup (missing {', '.join(missing)})")
        n_probes += 1
    if not n_probes:
        raise UserError(f"{path}: no probes")
