"""The one stage registry: every stage's name, module, config section, whether it trains, and what it emits.

The config, the worker, the panel and the report read it. Adding a stage is one module in `engine/stages/` plus
one `StageSpec` line below. `ABA_STAGE_MODULES=name=module[,name=module...]` registers extra stages at import time
(tests use it for fast stand-in stages); every process of a run inherits it.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass


@dataclass(frozen=True)
class StageSpec:
    name: str  # the contract name (`aba start RUN grpo`)
    module: str  # the module with `run(ctx)`
    section: str | None  # its config section, if it has one
    trains: bool = False  # writes training metrics (loss, reward, VRAM): shown on the Training screen
    emits: tuple[str, ...] = ()  # result kinds it writes (`ctx.result(kind, ...)`), read by the report and panel
    summary: str = ""


def _s(name: str, section: str | None, summary: str, *, trains: bool = False, emits: tuple[str, ...] = ()) -> StageSpec:
    return StageSpec(name, f"engine.stages.{name.replace('-', '_')}", section, trains, emits, summary)


# Pipeline order: the order stages run in when several are asked for.
BUILTIN: tuple[StageSpec, ...] = (
    _s("smoke", "smoke", "Step 0: 10 SFT + 10 GRPO steps, backend and peak VRAM", trains=True, emits=("report", "vram")),
    _s("datagen", "datagen", "tiered reasoning traces per prompt"),
    _s("judge", "judge", "nine-dimension scores per trace"),
    _s("sft", "sft", "QLoRA SFT on chosen traces", trains=True, emits=("vram",)),
    _s("grpo", "grpo", "GRPO with the nine reward functions", trains=True, emits=("vram",)),
    _s("eval", "eval", "battery, tournament, checklist", emits=("battery", "heldout", "ratings", "winrate", "checklist")),
    _s("export", "export", "merged safetensors and GGUF", emits=("export",)),
    _s("grpo-dims", "grpo_dims", "Strategy B: one GRPO LoRA per dimension", trains=True, emits=("vram",)),
    _s("ties", "ties", "Strategy B: TIES merge of the dimension LoRAs"),
    _s("commitment", "commitment", "seed 003 phase 1: commitment-vector sweep", emits=("cell",)),
    _s("entangled", "entangled", "seed 003 phase 2: variational head + W_c", trains=True),
)


def _extra() -> tuple[StageSpec, ...]:
    pairs = (item.split("=", 1) for item in filter(None, os.environ.get("ABA_STAGE_MODULES", "").split(",")))
    known = {s.name for s in BUILTIN}
    return tuple(StageSpec(name, module, None, summary="registered through ABA_STAGE_MODULES")
                 for name, module in pairs if name not in known)


def _override() -> dict[str, str]:
    """ABA_STAGE_MODULES may also point a built-in stage at another module (tests swap in slow or stubborn ones)."""
    pairs = (item.split("=", 1) for item in filter(None, os.environ.get("ABA_STAGE_MODULES", "").split(",")))
    return dict(pairs)


SPECS: tuple[StageSpec, ...] = BUILTIN + _extra()
BY_NAME: dict[str, StageSpec] = {s.name: s for s in SPECS}
STAGES: tuple[str, ...] = tuple(s.name for s in SPECS)
TRAINING_STAGES: tuple[str, ...] = tuple(s.name for s in SPECS if s.trains)


def spec(name: str) -> StageSpec:
    return BY_NAME[name]


def stage_module(name: str):
    """The module that implements a stage (imported only inside the worker: stage modules are heavy)."""
    return importlib.import_module(_override().get(name, BY_NAME[name].module if name in BY_NAME else
                                                  f"engine.stages.{name.replace('-', '_')}"))
