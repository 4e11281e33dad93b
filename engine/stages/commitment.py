"""Seed 003 phase 1: a random commitment vector injected at a sweep of (lambda, layers), with the consistency probe.

The default grid is the seed's own experiments: lambda 1.0, 0.1 and 0.01 on all layers and on the last 8, plus the
baseline without injection."""

from __future__ import annotations

from pathlib import Path

from engine.context import StageContext

ROOT = Path(__file__).resolve().parent.parent.parent


def cell_key(lam: float, layers: str) -> str:
    return f"{lam:g}|{layers}"


def run(ctx: StageContext) -> None:
    from engine.evaluation import answers as ev
    from engine.evaluation import commitment as cm
    from engine.judging.factory import is_offline

    c = ctx.cfg.commitment
    ref = ev.resolve_model(ctx, c.model, "commitment.model")
    model, tok = ev.load(ctx, ref)
    blocks = cm.decoder_layers(model)
    ranges = {spec: cm.parse_layers(spec, len(blocks)) for spec in c.layer_ranges}  # bad ranges fail here, early
    probes = cm.load_probes(Path(c.probes) if Path(c.probes).is_absolute() else ROOT / c.probes)
    hidden = model.config.hidden_size
    vec = cm.CommitmentVector.draw(c.k, hidden, ctx.cfg.run.seed)
    ctx.log(f"commitment: z* ~ N(0, 1/{c.k}), W_c {hidden}x{c.k} Xavier, |W_c z*| = {vec.vector.norm():.3f}; "
            f"{len(blocks)} layers; {len(probes)} probes on {ref.name}")
    judge = None
    if not is_offline(ctx):
        judge = _llm_consistency_judge(ctx)
    grid = [(0.0, "none")] + [(lam, spec) for lam in c.lambdas for spec in c.layer_ranges]
    for i, (lam, spec) in enumerate(grid):
        ctx.check_cancel()
        layers = ranges.get(spec, [])

        def inject(turns, lam=lam, layers=layers):
            return cm.injected(model, vec.vector, lam, layers)

        results = [cm.run_probe(model, tok, p, c.max_new_tokens, None if lam == 0 else inject, judge) for p in probes]
        summary = cm.summarize(results)
        label = "baseline" if lam == 0 else f"lambda={lam:g}, layers={spec}"
        cell = {"lambda": lam, "layers": spec, **summary, "samples": results}
        ctx.result("cell", cell_key(lam, spec), cell)
        tag = f"[lambda={lam:g},layers={spec}]"
        ctx.metrics(i, {f"consistency{tag}": summary["consistency"], f"perplexity{tag}": summary["perplexity"],
                        f"distinct2{tag}": summary["distinct2"], f"repetition{tag}": summary["repetition"]})
        ctx.progress(i + 1, len(grid), label)
        ctx.log(f"{label}: consistency {summary['consistency']:.2f}, perplexity {summary['perplexity']:.1f}, "
                f"distinct-2 {summary['distinct2']:.2f}, repetition {summary['repetition']:.2f}")


def _llm_consistency_judge(ctx: StageContext):
    from engine.judging.factory import JitterSeed, judge_backend
    from engine.llm.base import LLMError, LLMRequest

    limited = judge_backend(ctx, JitterSeed.CONSISTENCY)

    def judge(first: str, second: str) -> bool | None:
        req = LLMRequest([{"role": "user", "content": (
            f"First answer: {first}\n\nLater answer to 'what did you say before?': {second}\n\n"
            "Does the later answer state the same thing as the first? Reply with exactly yes or no.")}],
            temperature=0.0, max_tokens=8)
        try:
            return limited.call(req).text.strip().lower().startswith("yes")
        except LLMError:
            return None

    return judge
