"""Step 0: the smoke test. 10 SFT steps then 10 GRPO steps; passes when neither runs out of memory or crashes."""

from __future__ import annotations

import time

from engine.runner.context import StageContext, StageFailed


def _attempt(ctx: StageContext, backend) -> dict:
    import torch

    from engine.training import models
    from engine.evaluation.merging import merge_adapter
    from engine.stages.grpo import train_grpo
    from engine.stages.sft import train_sft

    sm = ctx.cfg.smoke
    base = models.base_path(ctx.cfg, ctx.run_dir, ctx.log, ctx.progress)
    out = ctx.folder / backend.name
    t0 = time.perf_counter()
    sft_trainer, sft_cb = train_sft(ctx, backend, base, out / "sft", max_steps=sm.sft_steps)
    sft_trainer.save_model(str(out / "sft" / "adapter"))
    merged = merge_adapter(ctx.cfg, backend, base, out / "sft" / "adapter", out / "sft" / "merged")
    del sft_trainer
    t1 = time.perf_counter()
    _, grpo_cb = train_grpo(ctx, backend, str(merged), out / "grpo", max_steps=sm.grpo_steps,
                            num_generations=sm.num_generations, max_completion_length=sm.max_completion_length)
    t2 = time.perf_counter()
    peak = torch.cuda.max_memory_allocated() / 1024**3 if torch.cuda.is_available() else None
    med = lambda xs: sorted(xs)[len(xs) // 2] if xs else None  # noqa: E731
    return {
        "backend": backend.name, "backend_reason": backend.reason, "device": backend.device,
        "quantized_4bit": backend.quantized, "peak_vram_gb": peak,
        "sft_steps": len(sft_cb.step_times), "sft_median_step_s": med(sft_cb.step_times), "sft_wall_s": t1 - t0,
        "grpo_steps": len(grpo_cb.step_times), "grpo_median_step_s": med(grpo_cb.step_times), "grpo_wall_s": t2 - t1,
        "num_generations": sm.num_generations, "passed": True,
    }


def run(ctx: StageContext) -> None:
    from engine.training import models
    from engine.training.trainer import is_oom

    backend = models.pick_backend(ctx.cfg)
    ctx.event("backend", f"backend: {backend.reason}", backend=backend.name)
    try:
        report = _attempt(ctx, backend)
    except Exception as err:
        if is_oom(err):
            raise StageFailed(f"smoke test ran out of GPU memory on {backend.name}: {str(err).splitlines()[0][:200]}") from None
        if backend.name != "unsloth":
            raise
        # The seed's fallback: if Unsloth fails (Triton, import), retry on HF + PEFT and say so.
        ctx.event("fallback", f"unsloth failed ({type(err).__name__}: {str(err).splitlines()[0][:200]}); retrying on standard")
        backend = models.pick_backend(ctx.cfg, force_standard=True)
        report = _attempt(ctx, backend)
        report["unsloth_error"] = f"{type(err).__name__}: {str(err).splitlines()[0][:300]}"
    ctx.result("report", "summary", report)
    peak = "n/a (no CUDA)" if report["peak_vram_gb"] is None else f"{report['peak_vram_gb']:.2f} GB"
    ctx.log(
        f"smoke passed on {report['backend']}: {report['sft_steps']} SFT steps (median {report['sft_median_step_s']:.3f} s), "
        f"{report['grpo_steps']} GRPO steps (median {report['grpo_median_step_s']:.3f} s), peak VRAM {peak}"
    )
