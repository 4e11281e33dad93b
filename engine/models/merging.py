"""Merges: a LoRA into its base on the CPU, TIES merging of LoRA adapters through PEFT, and the TIES formula itself."""

from __future__ import annotations

from pathlib import Path

import torch

from engine.config import Config
from engine.models.loading import DEMO_PREFIX, load_tokenizer


def ties_formula(tensors: list[torch.Tensor], weights: list[float], density: float) -> torch.Tensor:
    """TIES-Merging (Yadav et al. 2023): trim each task tensor to its top-`density` magnitudes, elect each entry's
    sign by the sum of the trimmed tensors (ties go positive), then average the weighted entries that agree with
    the elected sign (disjoint mean). PEFT applies it to a LoRA's A and B matrices with weights sqrt(w x scaling)."""
    trimmed = []
    for t in tensors:
        k = int(density * t.numel())
        keep = torch.zeros(t.numel(), dtype=torch.bool)
        if k > 0:
            keep[t.abs().flatten().topk(k).indices] = True
        trimmed.append(t * keep.view(t.shape))
    stacked = torch.stack(trimmed)
    elected = torch.where(stacked.sum(0) >= 0, 1.0, -1.0)
    agree = torch.sign(stacked) == elected
    w = torch.tensor(weights, dtype=stacked.dtype).view(-1, *([1] * tensors[0].dim()))
    return (stacked * w * agree).sum(0) / agree.sum(0).clamp(min=1)


def merge_ties(base_model, adapters: dict[str, Path], weights: list[float], density: float, out: Path) -> Path:
    """PEFT's add_weighted_adapter(combination_type="ties"); the merged adapter is saved to `out`."""
    from peft import PeftModel

    names = list(adapters)
    model = PeftModel.from_pretrained(base_model, str(adapters[names[0]]), adapter_name=names[0])
    for name in names[1:]:
        model.load_adapter(str(adapters[name]), adapter_name=name)
    model.add_weighted_adapter(names, weights, "ties", combination_type="ties", density=density)
    model.set_adapter("ties")
    for name in names:
        model.delete_adapter(name)
    tmp = out.with_name(out.name + ".tmp")
    model.save_pretrained(str(tmp))
    # PEFT writes a non-default adapter into a subfolder named after it.
    src = tmp / "ties" if (tmp / "ties" / "adapter_config.json").exists() else tmp
    src.replace(out)
    return out


def merge_adapter(cfg: Config, base: str, adapter: Path, dest: Path, log=None) -> Path:
    """Merge a LoRA into its base on the CPU and save it as safetensors: never on the GPU, never into 4-bit weights.

    The streaming merge (lora_merge) works from the base's safetensors files one tensor at a time, so host memory
    stays near one tensor whatever the model's size. An adapter it does not handle (DoRA, biases, modules_to_save)
    goes through PEFT's merge_and_unload with the base loaded in its 16-bit dtype on the CPU. Callers release their
    trainers and the CUDA cache first (trainer.release / free_memory): the merge itself needs no GPU memory.
    """
    if (dest / "config.json").exists():
        return dest
    import shutil

    from engine.models.lora_merge import Unsupported, merge_streaming, model_dir

    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        info = merge_streaming(model_dir(base), adapter, tmp)
        how = f"streamed on the CPU, {info['merged_tensors']} tensors merged one at a time"
    except Unsupported as why:
        shutil.rmtree(tmp, ignore_errors=True)
        _merge_with_peft(base, adapter, tmp)
        how = f"PEFT merge_and_unload on the CPU ({why} needs it)"
    load_tokenizer(cfg.model.base if cfg.model.base.startswith(DEMO_PREFIX) else base).save_pretrained(tmp)
    tmp.replace(dest)
    if log:
        log(f"merged {adapter} into {base}: {how}")
    return dest


def _merge_with_peft(base: str, adapter: Path, dest: Path) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base, dtype="auto", device_map={"": "cpu"})
    model = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    model.save_pretrained(dest, safe_serialization=True)
