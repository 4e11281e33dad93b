"""The one stage registry: every stage's name, module, whether it trains, and the result kinds it writes.

The config (stage names), the worker (the module), the panel and the report (training stages; which stages hold
`health` and `vram` results) read it. A stage's config section is the `Config` field named after it. Adding a stage
is one module in `engine/stages/` plus one `StageSpec` line below. `ABA_STAGE_MODULES=name=module[,name=module...]` registers extra stages at import time
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
    trains: bool = False  # writes training metrics (loss, reward, VRAM): shown on the Training screen
    emits: tuple[str, ...] = ()  # result kinds it writes (`ctx.result(kind, ...)`); see stages_emitting
    models: bool = False  # loads a model (torch, transformers): on Linux its worker is forked with them imported


def _s(name: str, *, trains: bool = False, emits: tuple[str, ...] = (), models: bool = True) -> StageSpec:
    return StageSpec(name, f"engine.stages.{name.replace('-', '_')}", trains, emits, models)


# Pipeline order: the order stages run in when several are asked for.
BUILTIN: tuple[StageSpec, ...] = (
    _s("smoke", trains=True, emits=("report", "vram", "health", "completions")),  # Step 0: SFT + GRPO steps, peak VRAM
    _s("datagen", models=False),  # tiered reasoning traces per prompt
    _s("judge", emits=("audit", "health"), models=False),  # nine-dimension scores per trace; the judge audit
    _s("sft", trains=True, emits=("vram",)),  # QLoRA SFT on chosen traces
    _s("grpo", trains=True, emits=("vram", "health", "audit", "reward_gain", "completions")),  # GRPO, nine rewards
    _s("eval", emits=("battery", "heldout", "ratings", "winrate", "checklist")),  # battery, tournament, checklist
    _s("export", emits=("export",)),  # merged safetensors and GGUF
    _s("grpo-dims", trains=True, emits=("vram", "health", "completions")),  # Strategy B: one GRPO LoRA per dimension
    _s("ties"),  # Strategy B: TIES merge of the dimension LoRAs
    _s("commitment", emits=("cell",)),  # seed 003 phase 1: commitment-vector sweep
    _s("entangled", trains=True),  # seed 003 phase 2: variational head + W_c
)


def _extra() -> tuple[StageSpec, ...]:
    pairs = (item.split("=", 1) for item in filter(None, os.environ.get("ABA_STAGE_MODULES", "").split(",")))
    known = {s.name for s in BUILTIN}
    return tuple(StageSpec(name, module) for name, module in pairs if name not in known)


def _override() -> dict[str, str]:
    """ABA_STAGE_MODULES may also point a built-in stage at another module (tests swap in slow or stubborn ones)."""
    pairs = (item.split("=", 1) for item in filter(None, os.environ.get("ABA_STAGE_MODULES", "").split(",")))
    return dict(pairs)


SPECS: tuple[StageSpec, ...] = BUILTIN + _extra()
BY_NAME: dict[str, StageSpec] = {s.name: s for s in SPECS}
STAGES: tuple[str, ...] = tuple(s.name for s in SPECS)
TRAINING_STAGES: tuple[str, ...] = tuple(s.name for s in SPECS if s.trains)


def loads_models(name: str) -> bool:
    """The stage's own module loads models (a stage pointed at another module by ABA_STAGE_MODULES is not known to)."""
    spec = BY_NAME.get(name)
    return spec is not None and spec.models and name not in _override()


def stages_emitting(kind: str) -> tuple[str, ...]:
    """The stages that write `kind` results, in pipeline order (the report and `aba health` read these)."""
    return tuple(s.name for s in SPECS if kind in s.emits)


def stage_module(name: str):
    """The module that implements a stage (imported only inside the worker: stage modules are heavy)."""
    return importlib.import_module(_override().get(name, BY_NAME[name].module if name in BY_NAME else
                                                  f"engine.stages.{name.replace('-', '_')}"))
