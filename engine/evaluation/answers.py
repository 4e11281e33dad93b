"""Step 4: which models to test and their greedy answers (the tournament and checklist: evaluation/tournament.py)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from engine.context import StageContext, StageFailed

STAGE_ADAPTERS = {"sft": "sft/adapter", "grpo": "grpo/adapter", "ties": "ties/adapter"}


@dataclass
class ModelRef:
    name: str
    base: str
    adapter: Path | None


def resolve_models(ctx: StageContext, names: list[str]) -> list[ModelRef]:
    """base, sft, grpo, ties (this run's adapters, on the base each was trained from) or any local HF path."""
    from engine.models import loading as models

    base = models.base_path(ctx.cfg, ctx.run_dir, ctx.log, ctx.progress)
    out = []
    for name in names:
        if name == "base":
            out.append(ModelRef("base", base, None))
        elif name in STAGE_ADAPTERS:
            adapter = ctx.run_dir / STAGE_ADAPTERS[name]
            if not (adapter / "adapter_config.json").exists():
                ctx.log(f"eval: no {name} adapter in this run; {name} left out", "warn")
                continue
            models.check_adapter(adapter)
            trained_on = json.loads((adapter / "adapter_config.json").read_text()).get("base_model_name_or_path") or base
            out.append(ModelRef(name, trained_on if Path(trained_on).exists() else base, adapter))
        else:
            out.append(ModelRef(Path(name).name or name, name, None))
    return out


def resolve_model(ctx: StageContext, name: str, key: str) -> ModelRef:
    """The one model a stage works on (config key `key` names it); a clear StageFailed when this run has none."""
    refs = resolve_models(ctx, [name])
    if not refs:
        raise StageFailed(f"{key} = {name!r}: this run has no {name} adapter ({STAGE_ADAPTERS[name]}); run the {name} "
                          "stage first, or name another model")
    return refs[0]


def load(ctx: StageContext, ref: ModelRef):
    from engine.models import loading as models

    backend = models.pick_backend(ctx.cfg)
    model = models.load_plain(ctx.cfg, backend, ref.base, quantize=backend.quantized)
    if ref.adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(ref.adapter))
    tok = models.load_tokenizer(ctx.cfg.model.base if ctx.cfg.model.base.startswith("demo:") else ref.base)
    model.eval()
    return model, tok


def generate(model, tok, turns: list[dict], max_new_tokens: int) -> str:
    """Greedy decoding; the output keeps its <think> block."""
    import torch

    enc = tok.apply_chat_template(turns, add_generation_prompt=True, return_tensors="pt", return_dict=True).to(model.device)
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tok.pad_token_id)
    return tok.decode(out[0][enc["input_ids"].shape[1]:], skip_special_tokens=True).strip()


def load_heldout(path: Path) -> list[list[dict]]:
    from engine.prompts import load_category

    return [p.turns for p in load_category(path, "heldout")]
