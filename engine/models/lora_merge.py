"""A LoRA merged into its base one tensor at a time, on the CPU, from the safetensors files themselves.

The base shards are copied as they are (the OS streams the bytes), then each LoRA target is read, merged in fp32
as PEFT's merge_and_unload does, cast back to the file's dtype and written over its own bytes: a merged tensor
has the same shape and dtype, so the safetensors header and every offset stay valid. Peak host memory is one
tensor, never the model, and no GPU memory is used.
"""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path
from typing import Any

import torch

from engine.errors import UserError

_DTYPES = {"BF16": torch.bfloat16, "F16": torch.float16, "F32": torch.float32, "F64": torch.float64}
_PREFIX = "base_model.model."


class Unsupported(Exception):
    """This adapter needs PEFT's own merge (DoRA, biases, modules_to_save, embeddings, fan_in_fan_out...)."""


def read_header(path: Path) -> tuple[int, dict[str, Any]]:
    """(offset of the data section, header) of a safetensors file, as the format defines them."""
    with path.open("rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    return 8 + n, header


def _lora_pairs(adapter: Path) -> tuple[dict[str, tuple[torch.Tensor, torch.Tensor]], dict[str, Any]]:
    from safetensors.torch import load_file

    cfg = json.loads((adapter / "adapter_config.json").read_text(encoding="utf-8"))
    for key, bad in (("use_dora", True), ("lora_bias", True), ("fan_in_fan_out", True)):
        if cfg.get(key) == bad:
            raise Unsupported(f"{key} = {bad}")
    if cfg.get("modules_to_save") or cfg.get("trainable_token_indices"):
        raise Unsupported("modules_to_save / trainable tokens")
    weights = adapter / "adapter_model.safetensors"
    if not weights.exists():
        raise Unsupported("no adapter_model.safetensors")
    tensors = load_file(str(weights))  # the adapter is small: ranks x widths
    pairs: dict[str, list] = {}
    for key, t in tensors.items():
        for part, slot in ((".lora_A.weight", 0), (".lora_B.weight", 1)):
            if key.endswith(part):
                base_key = key.removeprefix(_PREFIX)[: -len(part)] + ".weight"
                pairs.setdefault(base_key, [None, None])[slot] = t
                break
        else:
            raise Unsupported(f"adapter tensor {key}")
    missing = [k for k, (a, b) in pairs.items() if a is None or b is None]
    if missing:
        raise UserError(f"{adapter}: damaged adapter, {missing[0]} has only one of lora_A / lora_B")
    return {k: (a, b) for k, (a, b) in pairs.items()}, cfg


def _scaling(cfg: dict[str, Any], base_key: str, r: int) -> float:
    """PEFT's scaling for this module: lora_alpha (or its alpha_pattern entry) over r, or over sqrt(r) with rsLoRA."""
    module = base_key.removesuffix(".weight")
    alpha = cfg.get("lora_alpha", 8)
    patterns = cfg.get("alpha_pattern") or {}
    if patterns:  # imported only here: peft pulls in transformers, a quarter GB the plain path does not need
        from peft.utils.other import get_pattern_key

        alpha = patterns.get(get_pattern_key(list(patterns), module), alpha)
    return alpha / (r**0.5) if cfg.get("use_rslora") else alpha / r


def model_dir(base: str) -> Path:
    """The folder holding a model's files: `base` itself, or its snapshot in the Hugging Face cache for a hub id
    (already there once training loaded it; HF_HUB_OFFLINE is respected)."""
    if Path(base).is_dir():
        return Path(base)
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(base, allow_patterns=["*.json", "*.safetensors", "*.txt", "*.jinja", "*.model"]))
    except Exception as err:
        raise UserError(f"model {base!r}: cannot find its files to merge into ({type(err).__name__}: {err})") from None


def merge_streaming(base_dir: Path, adapter: Path, dest: Path) -> dict[str, Any]:
    """Write base + LoRA into `dest`, a new folder (the caller renames it into place). Raises Unsupported, before
    writing anything, when the adapter needs PEFT's own merge."""
    pairs, cfg = _lora_pairs(adapter)
    shards = sorted(base_dir.glob("*.safetensors"))
    if not shards:
        raise Unsupported(f"{base_dir}: no .safetensors weights")
    for shard in shards:  # every check before the first byte is written
        for key, info in read_header(shard)[1].items():
            if key in pairs and info["dtype"] not in _DTYPES:
                raise Unsupported(f"{key}: dtype {info['dtype']}")
    dest.mkdir(parents=True)
    for path in base_dir.iterdir():
        if path.is_file() and path.suffix != ".safetensors":
            shutil.copyfile(path, dest / path.name)
    merged, largest = 0, 0
    for shard in shards:
        out = dest / shard.name
        shutil.copyfile(shard, out)
        start, header = read_header(out)
        with out.open("r+b") as f:
            for key, info in header.items():
                if key == "__metadata__" or key not in pairs:
                    continue
                dtype = _DTYPES[info["dtype"]]
                a, b = pairs.pop(key)
                begin, end = info["data_offsets"]
                weight = torch.empty(info["shape"], dtype=dtype)
                f.seek(start + begin)
                f.readinto(weight.view(torch.uint8).view(-1).numpy())
                if weight.shape != (b.shape[0], a.shape[1]):
                    raise UserError(f"{adapter}: {key} is {tuple(weight.shape)} in the base, the LoRA expects "
                                    f"{(b.shape[0], a.shape[1])}; was it trained on another base?")
                # As PEFT on CPU: the delta in fp32, added to the weight, rounded once to the file's dtype.
                delta = (b.float() @ a.float()) * _scaling(cfg, key, a.shape[0])
                weight = (weight.float() + delta).to(dtype)
                f.seek(start + begin)
                f.write(weight.view(torch.uint8).view(-1).numpy())
                largest = max(largest, end - begin)
                merged += 1
                del weight, delta
    if pairs:
        raise UserError(f"{adapter}: {len(pairs)} LoRA target(s) not in the base, e.g. {next(iter(pairs))}")
    return {"merged_tensors": merged, "largest_tensor_bytes": largest, "shards": len(shards)}
