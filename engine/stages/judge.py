"""Step 1b: a separate judge call scores every trace on nine dimensions (strict JSON, repaired or retried)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

from engine.context import StageCancelled, StageContext


def run(ctx: StageContext) -> None:
    from engine.judging.factory import JitterSeed, is_offline, judge_backend
    from engine.judging.llm_judge import JudgeFailed, LLMJudge

    llm = ctx.cfg.judge.llm
    weights = ctx.cfg.grpo.reward_weights
    limited = judge_backend(ctx, JitterSeed.JUDGE_STAGE)
    offline = is_offline(ctx)
    name = "heuristic (offline)" if offline else limited.backend.describe()
    if offline:
        ctx.log("OFFLINE judge: the heuristic judge scores text features; a weak baseline, not a model's judgement")
    todo = ctx.store.unjudged_trace_ids()
    total = ctx.store.trace_count()
    ctx.log(f"judging {len(todo)} of {total} traces with {name}")
    from engine.llm.ordered import InOrder

    counts = {"ok": 0, "failed": 0, "repaired": 0, "rescaled": 0}
    finished = [0]
    lock = threading.Lock()

    def emit(pos: int, outcome: tuple[str, bool, bool]) -> None:  # running counts in trace order, not completion order
        key, repaired, rescaled = outcome
        counts[key] += 1
        counts["repaired"] += int(repaired)
        counts["rescaled"] += int(rescaled)
        ctx.metrics(pos + 1, {f"judge/{k}": float(v) for k, v in counts.items()})

    ordered = InOrder(emit)

    def one(pos: int, trace_id: int) -> None:
        if ctx.should_stop():
            return
        t = ctx.store.trace(trace_id)
        judge = LLMJudge(limited, attempts=ctx.cfg.judge.attempts, temperature=llm.temperature,
                         on_attempt=lambda a, raw, err: ctx.store.add_judge_call(trace_id, a, raw, err))
        try:
            verdict = judge.judge(t["turns"], t["reasoning"], t["answer"])
        except JudgeFailed as err:
            ctx.store.mark_judge_failed(trace_id, name, err.raw, str(err))
            ctx.log(f"trace {trace_id}: judge_failed ({err})", "warn")
            key = "failed"
        else:
            ctx.store.set_judge_scores(trace_id, verdict.parsed.scores, name, verdict.raw, verdict.parsed.rescaled, weights)
            key = "ok"
            if verdict.parsed.repaired:
                ctx.log(f"trace {trace_id}: judge reply repaired ({', '.join(verdict.parsed.repaired)})")
        repaired = key == "ok" and bool(verdict.parsed.repaired)
        ordered.done(pos, (key, repaired, repaired and bool(verdict.parsed.rescaled)))
        with lock:
            finished[0] += 1
            n = finished[0]
        ctx.progress(total - len(todo) + n, total, f"{n}/{len(todo)} judged")

    with ThreadPoolExecutor(max_workers=llm.concurrency) as pool:
        list(pool.map(one, range(len(todo)), todo))
    if ctx.should_stop():
        raise StageCancelled()
    ctx.log(f"judge: {counts['ok']} scored ({counts['repaired']} repaired, {counts['rescaled']} rescaled), {counts['failed']} judge_failed")
    if ctx.cfg.health.audit:
        from engine.evaluation.audit import run_audit

        run_audit(ctx)
