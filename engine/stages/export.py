"""Step 4: the LoRA merged into its base on the CPU (streamed), saved as safetensors, then GGUF, verified."""

from __future__ import annotations

import time

from engine.context import StageContext, StageFailed


def run(ctx: StageContext) -> None:
    from engine.evaluation import gguf as gguf_export
    from engine.models import loading as models
    from engine.models.merging import merge_adapter
    from engine.training.vram import peak_rss_mb

    x = ctx.cfg.export
    adapter = ctx.run_dir / x.source / "adapter"
    if not adapter.exists():
        raise StageFailed(f"export.source = {x.source!r}: no adapter at {adapter}; run that stage first")
    models.check_adapter(adapter)
    import json
    from pathlib import Path

    trained_on = json.loads((adapter / "adapter_config.json").read_text()).get("base_model_name_or_path")
    base = trained_on if trained_on and Path(trained_on).exists() else models.base_path(ctx.cfg, ctx.run_dir)
    merged = ctx.folder / "merged"
    ctx.progress(0, 3, "merging the adapter into its base on the CPU")
    merge_adapter(ctx.cfg, base, adapter, merged, ctx.log)
    size = sum(p.stat().st_size for p in merged.glob("*.safetensors"))
    ctx.artifact("merged", merged, bytes=size, source=x.source)
    ctx.log(f"merged {x.source} adapter into {base}: {merged} ({size / 1e6:.1f} MB safetensors)")
    out = ctx.folder / f"{ctx.run_id}-{x.source}-{x.gguf_type}.gguf"
    t0 = time.perf_counter()
    info = gguf_export.write_gguf(merged, out, x.gguf_type, lambda i, n, name: ctx.progress(1 + i / n, 3, f"GGUF {i}/{n}: {name}"))
    info["seconds"] = time.perf_counter() - t0
    info["peak_rss_mb"] = peak_rss_mb()
    ctx.progress(2, 3, "verifying the GGUF")
    check = gguf_export.verify_gguf(out, merged)
    ctx.artifact("gguf", out, **info, **check)
    ctx.result("export", "gguf", {"path": str(out), **info, **check})
    ctx.log(f"GGUF {x.gguf_type}: {out.name}, {info['bytes'] / 1e6:.2f} MB, {info['tensors']} tensors, verified "
            f"(max relative error {check['max_rel_error']:.1e}, chat template {'kept' if check['chat_template'] else 'missing'})")
    same = gguf_export.compare_with_llama_cpp(out, merged, "What is your favourite colour?")
    if same is None:
        ctx.log("llama-cpp-python not installed: the GGUF was checked with gguf's reader only (pip install '.[llama]' "
                "to also compare llama.cpp's greedy tokens with transformers)")
    elif "error" in same:  # llama.cpp crashed or failed in its own process: this check fails, the export goes on
        ctx.result("export", "llama_cpp", same)
        ctx.event("warning", f"llama.cpp check failed: {same['error']}")
    else:
        ctx.result("export", "llama_cpp", same)
        ctx.log(f"llama.cpp vs transformers greedy tokens: {same['matching_prefix']}/{same['compared']} leading tokens agree")
    if x.quantize:
        q_out = out.with_name(out.name.replace(x.gguf_type, x.quantize))
        src = out
        if x.gguf_type == "Q8_0":  # quantize from 16-bit, not from an already quantized file
            src = ctx.folder / f"{ctx.run_id}-{x.source}-F16.gguf"
            gguf_export.write_gguf(merged, src, "F16")
        done = gguf_export.llama_quantize(src, q_out, x.quantize)
        if done is None:
            ctx.event("warning", f"{x.quantize} for LM Studio skipped: llama-cpp-python is not installed "
                                 f"(pip install '.[llama]'); the {x.gguf_type} GGUF above loads in LM Studio as it is")
        elif "error" in done:
            ctx.event("warning", f"{x.quantize} for LM Studio skipped: {done['error']}; the {x.gguf_type} GGUF above "
                                 "loads in LM Studio as it is")
        else:
            ctx.artifact("gguf", q_out, quantization=x.quantize)
            ctx.log(f"llama.cpp quantized {x.quantize}: {q_out}")
            out = q_out
    if x.lmstudio_dir:
        dest = gguf_export.copy_to_lmstudio(out, x.lmstudio_dir, f"{ctx.run_id}-{x.source}")
        ctx.artifact("lmstudio", dest)
        ctx.log(f"copied to LM Studio: {dest}")
    ctx.progress(3, 3, "done")
