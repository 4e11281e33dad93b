"""Strategy B: merge the per-dimension LoRAs with TIES (PEFT add_weighted_adapter, combination_type="ties")."""

from __future__ import annotations

import json
from pathlib import Path

from engine.context import StageContext, StageFailed


def run(ctx: StageContext) -> None:
    from engine.models import loading as models
    from engine.models.merging import merge_ties

    dims = ctx.cfg.grpo_dims.dimensions
    adapters = {d: ctx.run_dir / "grpo-dims" / d / "adapter" for d in dims}
    missing = [d for d, p in adapters.items() if not (p / "adapter_config.json").exists()]
    if missing:
        raise StageFailed(f"no grpo-dims adapter for {', '.join(missing)}; run grpo-dims first")
    from transformers import AutoModelForCausalLM

    first = json.loads((adapters[dims[0]] / "adapter_config.json").read_text())["base_model_name_or_path"]
    base = first if Path(first).exists() else models.base_path(ctx.cfg, ctx.run_dir)
    # TIES combines the adapters' own matrices; the base is only their frame, so it stays on the CPU in its own
    # dtype rather than taking a 16-bit copy on the card (~15 GiB for 8B).
    model = AutoModelForCausalLM.from_pretrained(base, dtype="auto", device_map={"": "cpu"})
    out = ctx.folder / "adapter"
    if out.exists():
        import shutil

        shutil.rmtree(out)
    merge_ties(model, adapters, ctx.cfg.ties.weights, ctx.cfg.ties.density, out)
    ctx.artifact("adapter", out, combination="ties", density=ctx.cfg.ties.density, sources=dims)
    ctx.log(f"TIES-merged {', '.join(dims)} (weights {ctx.cfg.ties.weights}, density {ctx.cfg.ties.density}) into {out}; "
            "eval compares it with the joint Strategy A model")
