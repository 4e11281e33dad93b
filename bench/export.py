"""GGUF export of a merged model: time and peak memory against the model's size (target: peak RSS <= 1.5 x bytes).

The model is a Qwen3-architecture model built from a config (about 1.2 GB of float32 safetensors) so that the
measurement is not dominated by the interpreter. The export runs in a fresh process; its peak RSS (ru_maxrss)
includes Python, torch and gguf themselves, and is also given above the baseline measured just before exporting.

    python bench/export.py [--quick]    (--quick: a tiny model of the same architecture, to check the bench runs)
"""

from __future__ import annotations


import multiprocessing as mp
import shutil
import sys
import tempfile
import time
from pathlib import Path

from _util import ROOT, peak_rss_mb


# --quick: a tiny model of the same architecture (seconds), to check the bench runs; its figures mean nothing.
FULL = dict(hidden_size=1536, intermediate_size=4096, num_hidden_layers=14, num_attention_heads=12, num_key_value_heads=4,
            head_dim=128)
QUICK = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
             head_dim=16)


def build(dest: Path, shape: dict = FULL) -> int:
    import torch
    from safetensors.torch import save_file
    from transformers import Qwen3Config

    from engine.models.loading import load_tokenizer

    tok = load_tokenizer("demo:tiny-qwen3")
    cfg = Qwen3Config(vocab_size=len(tok), **shape, tie_word_embeddings=True, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id)
    dest.mkdir(parents=True)
    cfg.save_pretrained(dest)
    tok.save_pretrained(dest)
    g = torch.Generator().manual_seed(0)
    h, inter, hd = cfg.hidden_size, cfg.intermediate_size, cfg.head_dim
    tensors = {"model.embed_tokens.weight": torch.randn(cfg.vocab_size, h, generator=g) * 0.02,
               "model.norm.weight": torch.ones(h)}
    for i in range(cfg.num_hidden_layers):
        p = f"model.layers.{i}."
        tensors |= {
            p + "self_attn.q_proj.weight": torch.randn(cfg.num_attention_heads * hd, h, generator=g) * 0.02,
            p + "self_attn.k_proj.weight": torch.randn(cfg.num_key_value_heads * hd, h, generator=g) * 0.02,
            p + "self_attn.v_proj.weight": torch.randn(cfg.num_key_value_heads * hd, h, generator=g) * 0.02,
            p + "self_attn.o_proj.weight": torch.randn(h, cfg.num_attention_heads * hd, generator=g) * 0.02,
            p + "self_attn.q_norm.weight": torch.ones(hd), p + "self_attn.k_norm.weight": torch.ones(hd),
            p + "mlp.gate_proj.weight": torch.randn(inter, h, generator=g) * 0.02,
            p + "mlp.up_proj.weight": torch.randn(inter, h, generator=g) * 0.02,
            p + "mlp.down_proj.weight": torch.randn(h, inter, generator=g) * 0.02,
            p + "input_layernorm.weight": torch.ones(h), p + "post_attention_layernorm.weight": torch.ones(h),
        }
    save_file(tensors, str(dest / "model.safetensors"), metadata={"format": "pt"})
    return (dest / "model.safetensors").stat().st_size


def _vm_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def export(model_dir: str, out: str, qtype: str, q) -> None:
    sys.path.insert(0, str(ROOT))
    import gguf  # noqa: F401
    import safetensors  # noqa: F401
    import torch  # noqa: F401

    from engine.evaluation.gguf import write_gguf

    base = _vm_rss_mb()
    t = time.perf_counter()
    info = write_gguf(Path(model_dir), Path(out), qtype)
    q.put({"seconds": time.perf_counter() - t, "baseline_mb": base, "peak_mb": peak_rss_mb(), **info})


def main() -> None:
    quick = "--quick" in sys.argv[1:]
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(tmp) / "model"
        ctx = mp.get_context("spawn")
        with ctx.Pool(1) as pool:
            size = pool.apply(build, (model_dir, QUICK if quick else FULL))
        for qtype in ("F16", "Q8_0"):
            q = ctx.Queue()
            p = ctx.Process(target=export, args=(str(model_dir), str(Path(tmp) / f"m-{qtype}.gguf"), qtype, q))
            p.start()
            r = q.get()
            p.join()
            mb = size / 2**20
            print(f"export: {qtype} GGUF of a {mb:.0f} MB model in {r['seconds']:.1f} s; peak RSS {r['peak_mb']:.0f} MB = "
                  f"{r['peak_mb'] / mb:.2f} x the model's bytes (target <= 1.5); above the {r['baseline_mb']:.0f} MB "
                  f"baseline: {(r['peak_mb'] - r['baseline_mb']) / mb:.2f} x; file {r['bytes'] / 2**20:.0f} MB")
        shutil.rmtree(model_dir)


if __name__ == "__main__":
    main()
