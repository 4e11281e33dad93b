"""Merge memory: a Qwen3-shaped random model (>= 1.3 GB of bf16 safetensors) merged with its LoRA two ways.

streaming (engine.models.lora_merge, what every stage merge uses): one tensor at a time from the files;
in-memory (the old path): the whole model loaded, PEFT's merge_and_unload, save_pretrained.
Each runs in its own process; the figure is that process's peak RSS as a ratio of the model's bytes (target <= 1.2,
streaming <= 0.5). The streamed result is compared with PEFT's merge_and_unload tensor by tensor.

    python bench/merge.py [--quick]    (--quick: a tiny model, seconds; checks the merge is exact, not the memory)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# Qwen3's layout (GQA, head_dim 128, 151,936-token vocabulary, untied head) at a size a laptop merges in seconds.
SHAPE = dict(vocab_size=151936, hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
             num_key_value_heads=8, head_dim=128, tie_word_embeddings=False, torch_dtype="bfloat16")
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
RANK, ALPHA = 16, 32
SHARD_BYTES = 400 * 1024**2
# --quick: the same layout, tiny (seconds), several shards; checks the bench runs and the merge is exact (the memory
# ratio means nothing there: the interpreter outweighs the model).
QUICK_SHAPE = dict(SHAPE, vocab_size=1024, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                   num_attention_heads=4, num_key_value_heads=2, head_dim=16)
QUICK_SHARD_BYTES = 128 * 1024


def build(folder: Path) -> tuple[Path, Path, int]:
    """Random bf16 weights written shard by shard (never the whole model in memory), and a random LoRA."""
    import torch
    from peft import LoraConfig
    from safetensors.torch import save_file
    from transformers import Qwen3Config

    base, adapter = folder / "base", folder / "adapter"
    base.mkdir(parents=True)
    cfg = Qwen3Config(**SHAPE)
    cfg.save_pretrained(base)
    h, inter, hd = cfg.hidden_size, cfg.intermediate_size, cfg.head_dim
    q, kv = cfg.num_attention_heads * hd, cfg.num_key_value_heads * hd
    shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (cfg.vocab_size, h), "model.norm.weight": (h,),
                                          "lm_head.weight": (cfg.vocab_size, h)}
    lin = {"q_proj": (q, h), "k_proj": (kv, h), "v_proj": (kv, h), "o_proj": (h, q),
           "gate_proj": (inter, h), "up_proj": (inter, h), "down_proj": (h, inter)}
    for i in range(cfg.num_hidden_layers):
        p = f"model.layers.{i}"
        for name, shape in lin.items():
            group = "self_attn" if name in ("q_proj", "k_proj", "v_proj", "o_proj") else "mlp"
            shapes[f"{p}.{group}.{name}.weight"] = shape
        for norm, n in (("input_layernorm", h), ("post_attention_layernorm", h), ("self_attn.q_norm", hd),
                        ("self_attn.k_norm", hd)):
            shapes[f"{p}.{norm}.weight"] = (n,)
    gen = torch.Generator().manual_seed(0)
    shard: dict[str, torch.Tensor] = {}
    files: list[list[str]] = []
    total = 0

    def flush() -> None:
        if shard:
            files.append(list(shard))
            save_file(shard, str(base / f"part-{len(files)}.safetensors"), metadata={"format": "pt"})
            shard.clear()

    for name, shape in shapes.items():
        t = torch.randn(shape, generator=gen, dtype=torch.bfloat16).mul_(0.02)
        if sum(x.numel() * 2 for x in shard.values()) + t.numel() * 2 > SHARD_BYTES:
            flush()
        shard[name] = t
        total += t.numel() * 2
    flush()
    n = len(files)
    weight_map = {}
    for i, names in enumerate(files, 1):
        final = base / f"model-{i:05d}-of-{n:05d}.safetensors"
        (base / f"part-{i}.safetensors").rename(final)
        weight_map.update({k: final.name for k in names})
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (base / "model.safetensors.index.json").write_text(json.dumps(index))
    LoraConfig(r=RANK, lora_alpha=ALPHA, target_modules=TARGETS, task_type="CAUSAL_LM",
               base_model_name_or_path=str(base)).save_pretrained(str(adapter))
    lora = {}
    for name, (out_f, in_f) in ((k, v) for k, v in shapes.items() if k.split(".")[-2] in TARGETS):
        key = "base_model.model." + name.removesuffix(".weight")
        lora[f"{key}.lora_A.weight"] = torch.randn((RANK, in_f), generator=gen) * 0.02
        lora[f"{key}.lora_B.weight"] = torch.randn((out_f, RANK), generator=gen) * 0.02
    save_file(lora, str(adapter / "adapter_model.safetensors"))
    return base, adapter, total


# Peak RSS of the child itself: Linux's VmHWM starts afresh at exec (ru_maxrss would carry the parent's peak).
PEAK = """
def peak_rss_mb():
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import psutil
    info = psutil.Process().memory_info()
    return getattr(info, "peak_wset", info.rss) / 2**20
"""

STREAMING = PEAK + """
import json, sys, time
from pathlib import Path
from engine.models.lora_merge import merge_streaming
before = peak_rss_mb()
t0 = time.perf_counter()
info = merge_streaming(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]))
print(json.dumps({"peak_rss_mb": peak_rss_mb(), "import_rss_mb": before, "seconds": time.perf_counter() - t0, **info}))
"""

IN_MEMORY = PEAK + """
import json, sys, time
from pathlib import Path
import torch
from peft import PeftModel
from safetensors import safe_open
from transformers import AutoModelForCausalLM
t0 = time.perf_counter()
model = AutoModelForCausalLM.from_pretrained(sys.argv[1], dtype=torch.bfloat16)
model = PeftModel.from_pretrained(model, sys.argv[2]).merge_and_unload()
model.save_pretrained(sys.argv[4])
seconds = time.perf_counter() - t0
peak = peak_rss_mb()
ref = model.state_dict()
worst, equal, compared = 0.0, 0, 0
for path in sorted(Path(sys.argv[3]).glob("*.safetensors")):
    with safe_open(str(path), framework="pt") as f:
        for key in f.keys():
            got = f.get_tensor(key)
            worst = max(worst, (got.float() - ref[key].float()).abs().max().item())
            equal += bool(torch.equal(got, ref[key]))
            compared += 1
print(json.dumps({"peak_rss_mb": peak, "seconds": seconds, "max_abs_diff": worst, "equal": equal, "compared": compared,
                  "tensors": len(ref)}))
"""


def child(code: str, *args: str) -> dict:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, cwd=ROOT)
    if proc.returncode != 0:
        sys.exit(f"merge bench: child failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> int:
    global SHAPE, SHARD_BYTES
    quick = "--quick" in sys.argv[1:]
    if quick:
        SHAPE, SHARD_BYTES = QUICK_SHAPE, QUICK_SHARD_BYTES
    if hasattr(os, "nice"):
        os.nice(10)  # a shared machine: the bench yields to interactive work
    with tempfile.TemporaryDirectory(prefix="aba-merge-bench-") as tmp:
        folder = Path(tmp)
        t0 = time.perf_counter()
        base, adapter, model_bytes = build(folder)
        mb = model_bytes / 1024**2
        print(f"model: Qwen3-shaped, {SHAPE['num_hidden_layers']} layers, {model_bytes / 1e9:.2f} GB bf16 in "
              f"{len(list(base.glob('*.safetensors')))} shards; LoRA r={RANK} on {len(TARGETS)} targets "
              f"(built in {time.perf_counter() - t0:.0f} s)")
        s = child(STREAMING, str(base), str(adapter), str(folder / "streamed"))
        m = child(IN_MEMORY, str(base), str(adapter), str(folder / "streamed"), str(folder / "in-memory"))
    print(f"streaming merge: peak RSS {s['peak_rss_mb']:.0f} MB (of which {s['import_rss_mb']:.0f} MB interpreter + "
          f"torch), {s['merged_tensors']} tensors merged in {s['seconds']:.1f} s")
    print(f"in-memory merge (PEFT merge_and_unload + save_pretrained): peak RSS {m['peak_rss_mb']:.0f} MB "
          f"in {m['seconds']:.1f} s")
    print(f"equal to PEFT merge_and_unload: {m['equal']}/{m['compared']} tensors bit-identical, "
          f"max |diff| {m['max_abs_diff']:.3g}")
    ratio_s, ratio_m = s["peak_rss_mb"] / mb, m["peak_rss_mb"] / mb
    print(f"peak RSS / model bytes: streaming {ratio_s:.2f} (target <= 0.5), in-memory {ratio_m:.2f}; "
          f"{ratio_m / ratio_s:.1f}x less memory")
    exact = m["compared"] == m["tensors"] and m["max_abs_diff"] <= 1e-3
    ok = exact and (quick or ratio_s <= 0.5)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
