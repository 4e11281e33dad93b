"""Step 0: the smoke test. 10 SFT steps then 10 GRPO steps; passes only when both ran every step with no OOM and no
Triton/compile crash (the seed's pass criteria), and says what it measured against what was estimated."""

from __future__ import annotations

import time

from engine.context import StageContext, StageFailed


def _fallbacks_since(ctx: StageContext, after_id: int) -> list[str]:
    return [e.message for e in ctx.store.events(ctx.name, kind="fallback", after_id=after_id)]


def _attempt(ctx: StageContext, backend) -> dict:
    from engine.models.merging import merge_adapter
    from engine.training.grpo import train_grpo
    from engine.training.sft import train_sft
    from engine.models import loading as models
    from engine.training.trainer import free_memory, release
    from engine.training.vram import measured_peaks

    sm = ctx.cfg.smoke
    base = models.base_path(ctx.cfg, ctx.run_dir, ctx.log, ctx.progress)
    out = ctx.folder / backend.name
    first_event = max((e.id for e in ctx.store.events(ctx.name)), default=0)
    t0 = time.perf_counter()
    sft_trainer, sft_cb = train_sft(ctx, backend, base, out / "sft", max_steps=sm.sft_steps, vram_key="sft")
    sft_steps = sft_trainer.state.global_step
    sft_trainer.save_model(str(out / "sft" / "adapter"))
    # The SFT trainer (model, optimizer, CUDA cache) goes before the merge and before GRPO loads its model.
    release(sft_trainer)
    del sft_trainer
    free_memory()
    merged = merge_adapter(ctx.cfg, base, out / "sft" / "adapter", out / "sft" / "merged", ctx.log)
    t1 = time.perf_counter()
    grpo_trainer, grpo_cb = train_grpo(ctx, backend, str(merged), out / "grpo", max_steps=sm.grpo_steps,
                                       num_generations=sm.num_generations,
                                       max_completion_length=sm.max_completion_length, vram_key="grpo")
    grpo_steps = grpo_trainer.state.global_step
    a = grpo_trainer.args  # as the trainer ran them, after any backend patch (the estimate read the same)
    grpo_args = {k: getattr(a, k, None) for k in ("per_device_train_batch_size", "gradient_accumulation_steps",
                                                 "steps_per_generation", "generation_batch_size", "num_generations",
                                                 "max_completion_length", "optim", "bf16", "use_cpu",
                                                 "gradient_checkpointing_kwargs")}
    grpo_args["optim"] = str(getattr(a.optim, "value", a.optim))
    release(grpo_trainer)
    del grpo_trainer
    t2 = time.perf_counter()
    fallbacks = _fallbacks_since(ctx, first_event)
    med = lambda xs: sorted(xs)[len(xs) // 2] if xs else None  # noqa: E731
    problems = []
    if sft_steps < sm.sft_steps:
        problems.append(f"SFT ran {sft_steps} of {sm.sft_steps} steps")
    if grpo_steps < sm.grpo_steps:
        problems.append(f"GRPO ran {grpo_steps} of {sm.grpo_steps} steps")
    if fallbacks:
        problems.append(f"ran out of GPU memory ({len(fallbacks)} OOM fallback(s) taken)")
    return {
        "backend": backend.name, "backend_reason": backend.reason, "device": backend.device,
        # 4-bit as loaded (load_for_training refuses a 16-bit load when 4-bit was asked for), with the layer count
        "quantized_4bit": backend.quantized and backend.layers_4bit > 0, "linear4bit_layers": backend.layers_4bit,
        "versions": library_versions(), **measured_peaks(ctx),
        "peak_vram_gb": measured_peaks(ctx)["torch_peak_gb"],
        "sft_estimate_gb": (sft_cb.vram or {}).get("estimate_gb"), "grpo_estimate_gb": (grpo_cb.vram or {}).get("estimate_gb"),
        "sft_steps": sft_steps, "sft_median_step_s": med(sft_cb.step_times), "sft_wall_s": t1 - t0,
        "grpo_steps": grpo_steps, "grpo_median_step_s": med(grpo_cb.step_times), "grpo_wall_s": t2 - t1,
        "num_generations": sm.num_generations, "grpo_args": grpo_args, "fallbacks": fallbacks, "problems": problems,
        "passed": not problems,
    }


def _fall_back(ctx: StageContext, crash: str) -> dict:
    """The seed's fallback: Unsloth failed (import, Triton, a crash in training), so retry on HF + PEFT and say so.
    The verdict stays failed: the seed's criteria exclude a Triton/compile crash, and the report names what crashed."""
    from engine.models import loading as models

    ctx.event("fallback", f"unsloth failed ({crash}); retrying on standard")
    backend = models.pick_backend(ctx.cfg, force_standard=True)
    ctx.event("backend", f"backend: {backend.reason}", backend=backend.name)
    report = _attempt(ctx, backend)
    report["unsloth_error"] = crash
    report["problems"] = [f"unsloth crashed ({crash}); the standard backend then "
                          + ("passed" if report["passed"] else "failed too"), *report["problems"]]
    report["passed"] = False
    return report


LIBRARIES = ("torch", "transformers", "trl", "peft", "accelerate", "bitsandbytes", "unsloth", "unsloth_zoo", "triton",
             "vllm")


def library_versions() -> dict[str, str]:
    """The installed version of each library the training stack runs on ("-" when absent)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in LIBRARIES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "-"
    return out


def run(ctx: StageContext) -> None:
    from engine.models import loading as models
    from engine.training.trainer import free_memory, is_oom

    try:
        backend = models.pick_backend(ctx.cfg)
    except models.UnslothUnavailable as err:  # unsloth asked for, and its import raised: the seed's fallback
        report = _fall_back(ctx, err.crash)
    else:
        ctx.event("backend", f"backend: {backend.reason}", backend=backend.name)
        try:
            report = _attempt(ctx, backend)
        except StageFailed as err:  # the OOM ladder ran out: a verdict, recorded like any other
            report = {"backend": backend.name, "backend_reason": backend.reason, "passed": False, "problems": [str(err)]}
        except Exception as err:
            if is_oom(err):
                raise StageFailed(f"smoke test ran out of GPU memory on {backend.name}: {str(err).splitlines()[0][:200]}") from None
            if backend.name != "unsloth":
                raise
            free_memory()
            report = _fall_back(ctx, f"{type(err).__name__}: {str(err).splitlines()[0][:300]}")
    ctx.result("report", "summary", report)
    if not report["passed"]:
        raise StageFailed(f"smoke test failed on {report['backend']}: {'; '.join(report['problems'])}")
    peak = "n/a (no CUDA)" if report["torch_peak_gb"] is None else f"{report['torch_peak_gb']:.2f} GB (torch)"
    if report.get("nvml_peak_gb") is not None:
        peak += f", {report['nvml_peak_gb']:.2f} GB (NVML)"
    est = max(filter(None, [report["sft_estimate_gb"], report["grpo_estimate_gb"]]), default=None)
    ctx.log(
        f"smoke passed on {report['backend']}: {report['sft_steps']} SFT steps (median {report['sft_median_step_s']:.3f} s), "
        f"{report['grpo_steps']} GRPO steps (median {report['grpo_median_step_s']:.3f} s), peak VRAM {peak}"
        + (f", estimated {est:.2f} GB" if est is not None else "")
    )
