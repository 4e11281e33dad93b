"""Step 1a: tiered reasoning traces (chosen / adequate / rejected) for every prompt, each call exactly once."""

from __future__ import annotations

import hashlib
import json
import threading
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

from engine.config.sections import LLMBackendName
from engine.context import StageCancelled, StageContext, StageFailed
from engine.dims import TIERS
from engine.llm.base import LLMError, LLMRequest, LLMResult
from engine.prompts import NearDuplicateFilter, Prompt, check_turns, load_prompts, prompt_key

# The seed's system prompt for CHOSEN traces, verbatim.
CHOSEN_SYSTEM = """You are a reasoning tutor. When solving problems:
1. Identify ALL parameters before answering
2. Group co-varying parameters to reduce complexity
3. Explicitly state what you DON'T know
4. Show your reasoning step by step
5. If conflicting evidence exists, acknowledge and weigh it"""

ADEQUATE_SYSTEM = "You are a helpful assistant. Think before you answer, then answer the question."

REJECTED_SYSTEM = """Answer as fast as you can. Do not list the variables or parameters; skip the ones that seem minor.
Do not mention uncertainty or what you don't know. State your answer with full confidence, even when unsure."""

TIER_SYSTEM = {"chosen": CHOSEN_SYSTEM, "adequate": ADEQUATE_SYSTEM, "rejected": REJECTED_SYSTEM}
TIER_THINKING = {"chosen": "high", "adequate": None, "rejected": None}


@dataclass(frozen=True)
class TraceCall:
    key: str
    prompt_id: int
    prompt: Prompt
    tier: str
    idx: int
    request: LLMRequest


def call_key(backend: str, model: str, prompt: Prompt, tier: str, idx: int, req: LLMRequest) -> str:
    """Everything that makes a call what it is; the same key is never called twice."""
    params = {"temperature": req.temperature, "max_tokens": req.max_tokens, "thinking": req.thinking}
    blob = json.dumps([backend, model, prompt.key, tier, idx, req.system, params], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def build_calls(ctx: StageContext, prompts: list[tuple[int, Prompt]]) -> list[TraceCall]:
    llm = ctx.cfg.datagen.llm
    calls = []
    for prompt_id, prompt in prompts:
        for tier in TIERS:
            for idx in range(ctx.cfg.datagen.tier_counts.get(tier, 0)):
                req = LLMRequest(
                    messages=prompt.turns, system=TIER_SYSTEM[tier], temperature=llm.temperature, max_tokens=llm.max_tokens,
                    thinking=TIER_THINKING[tier], meta={"tier": tier, "idx": idx, "category": prompt.category},
                )
                calls.append(TraceCall(call_key(llm.backend, llm.model, prompt, tier, idx, req), prompt_id, prompt, tier, idx, req))
    return calls


def _expand_request(category: str, examples: list[Prompt], want: int) -> LLMRequest:
    shown = "\n".join(json.dumps(p.turns, ensure_ascii=False) for p in examples[:8])
    return LLMRequest(
        messages=[{"role": "user", "content": (
            f"Here are example prompts of the category '{category}', each a JSON list of chat turns:\n{shown}\n\n"
            f"Write {want} new prompts of the same category, different in topic from the examples and from each "
            "other. Reply with one JSON array whose items are lists of turns like the examples (the last turn is the "
            "user's). No prose.")}],
        temperature=1.0, max_tokens=4096, meta={"kind": "expand", "category": category},
    )


def _expand(ctx: StageContext, limited, short: dict[str, tuple[list[Prompt], int]],
            dedupe: NearDuplicateFilter) -> dict[str, list[Prompt]]:
    """Ask the generator for new prompts in the style of each category's examples until it reaches its target.

    In rounds: each round asks, for every category still short, one request per 20 missing prompts, and sends all
    of the round's requests at once under the backend's concurrency cap and rate limit. Replies are read in a fixed
    order (category, then request), so deduplication does not depend on which reply came first."""
    from concurrent.futures import ThreadPoolExecutor

    out: dict[str, list[Prompt]] = {cat: [] for cat in short}
    tries = dict.fromkeys(short, 0)
    stopped: set[str] = set()
    with ThreadPoolExecutor(max_workers=max(1, getattr(limited, "concurrency", 1)), thread_name_prefix="expand") as pool:
        while True:
            plan: list[tuple[str, LLMRequest]] = []
            for cat, (have, target) in short.items():
                missing = target - len(have) - len(out[cat])
                budget = max(3, target // 10) - tries[cat]
                if cat in stopped or missing <= 0 or budget <= 0:
                    continue
                n = min(-(-missing // 20), budget)
                tries[cat] += n
                plan += [(cat, _expand_request(cat, have + out[cat], min(20, missing - 20 * j))) for j in range(n)]
            if not plan:
                return out
            futures = [pool.submit(limited.call, req) for _, req in plan]
            for (cat, _), fut in zip(plan, futures):
                try:
                    result = fut.result()
                except LLMError as err:
                    if err.fatal:
                        raise StageFailed(str(err)) from None
                    ctx.log(f"expanding {cat}: {err}", "warn")
                    stopped.add(cat)
                    continue
                have, target = short[cat]
                for turns in _parse_prompt_list(result.text):
                    if len(have) + len(out[cat]) >= target:
                        break
                    try:
                        check_turns(turns, "generated prompt")
                    except Exception:
                        continue
                    if dedupe.add(turns):
                        out[cat].append(Prompt(prompt_key(cat, turns), cat, turns, f"generated:{limited.name}"))


def _parse_prompt_list(text: str) -> list:
    start, end = text.find("["), text.rfind("]")
    if start < 0 or end <= start:
        return []
    try:
        items = json.loads(text[start : end + 1])
    except json.JSONDecodeError:
        return []
    out = []
    for item in items if isinstance(items, list) else []:
        if isinstance(item, str):
            out.append([{"role": "user", "content": item}])
        elif isinstance(item, list):
            out.append(item)
    return out


def register_prompts(ctx: StageContext, limited) -> list[tuple[int, Prompt]]:
    d = ctx.cfg.datagen
    folder = Path(d.prompts_dir)
    if not folder.is_absolute():
        folder = Path(__file__).resolve().parent.parent.parent / folder
    by_cat = load_prompts(folder, list(d.category_targets), d.max_prompt_chars, d.long_prompts,
                          lambda line: ctx.log(line, "warn"))
    dedupe = NearDuplicateFilter()
    kept_by_cat: dict[str, list[Prompt]] = {}
    for cat, items in by_cat.items():
        kept = [p for p in items if dedupe.add(p.turns)]
        if len(kept) < len(items):
            ctx.log(f"{cat}: dropped {len(items) - len(kept)} duplicate or near-duplicate prompts")
        existing = [p for p in ctx.store.prompts(cat) if p["source"].startswith("generated")]
        for p in existing:  # generated on an earlier attempt: keep them, they count toward the target
            dedupe.add(p["turns"])
        kept_by_cat[cat] = kept + [Prompt(p["key"], cat, p["turns"], p["source"]) for p in existing]
    short = {cat: (kept, d.category_targets[cat]) for cat, kept in kept_by_cat.items() if len(kept) < d.category_targets[cat]}
    if d.expand and short:
        if ctx.cfg.datagen.llm.backend == LLMBackendName.OFFLINE:
            for cat, (kept, target) in short.items():
                ctx.log(f"{cat}: {len(kept)} of {target} prompts; the offline backend cannot write more (datagen.expand)", "warn")
        else:
            for cat, new in _expand(ctx, limited, short, dedupe).items():
                kept, target = short[cat]
                ctx.log(f"{cat}: expanded by {len(new)} generated prompts to {len(kept) + len(new)} of {target}")
                kept_by_cat[cat] = kept + new
    chosen: list[Prompt] = []
    for cat, kept in kept_by_cat.items():
        chosen += kept[: d.category_targets[cat]] if d.expand else kept
    if d.max_prompts:
        # Round-robin over categories so a small demo still covers all five.
        cats = {c: [p for p in chosen if p.category == c] for c in d.category_targets}
        chosen = [p for i in range(max(map(len, cats.values()), default=0)) for c in cats for p in cats[c][i : i + 1]]
        chosen = chosen[: d.max_prompts]
    return [(ctx.store.add_prompt(p.key, p.category, p.turns, p.source), p) for p in chosen]


def _record(ctx: StageContext, call: TraceCall, result: LLMResult, backend_name: str, offline: bool) -> bool:
    trace_id = ctx.store.add_trace({
        "call_key": call.key, "prompt_id": call.prompt_id, "category": call.prompt.category, "tier": call.tier,
        "idx": call.idx, "system_prompt": call.request.system, "reasoning": result.reasoning, "answer": result.text,
        "backend": backend_name, "model": result.model or ctx.cfg.datagen.llm.model, "offline": offline,
        "tokens_in": result.tokens_in, "tokens_out": result.tokens_out,
    })
    return trace_id is not None


def run(ctx: StageContext) -> None:
    from engine.llm import make_limited

    llm = ctx.cfg.datagen.llm
    retried = ctx.store.retry_failed_calls()
    if retried:
        ctx.log(f"retrying {retried} call(s) that failed on an earlier attempt")
    limited = make_limited(llm, ctx, ctx.cfg.run.seed)
    offline = limited.backend.labelled_offline
    if offline:
        ctx.log("OFFLINE backend: traces are the shipped examples or composed from the prompt's words, not a model's")
    prompts = register_prompts(ctx, limited)
    calls = build_calls(ctx, prompts)
    done = ctx.store.done_calls(c.key for c in calls)
    todo = [c for c in calls if c.key not in done]
    ctx.log(f"{len(prompts)} prompts, {len(calls)} calls in all: {len(done)} done earlier, {len(todo)} to make ({limited.backend.describe()})")
    if llm.backend == LLMBackendName.VERTEX_BATCH and todo:
        from engine.llm.vertex_batch import run_batch

        run_batch(ctx, todo, lambda call, result: _record(ctx, call, result, "vertex-batch", False))
        _finish(ctx, calls)
        return
    from engine.llm.ordered import InOrder

    counter = {"ok": 0, "failed": 0, "tokens_in": 0, "tokens_out": 0}
    lock = threading.Lock()

    def emit(pos: int, result: LLMResult | None) -> None:  # per-call metrics in call order, not completion order
        if result is not None:
            ctx.metrics(len(done) + pos + 1, {"llm/tokens_in": result.tokens_in, "llm/tokens_out": result.tokens_out,
                                              "llm/latency_s": result.latency_s})

    ordered = InOrder(emit)

    def one(pos: int, call: TraceCall) -> None:
        def on_retry(attempt: int, err: LLMError, delay: float) -> None:
            ctx.log(f"retry {attempt} in {delay:.1f} s: {err}", "warn")

        try:
            result = limited.call(call.request, on_retry=on_retry)
        except LLMError as err:
            if err.fatal:  # bad credentials, no permission, unknown model: every call would fail; stop with one line
                raise StageFailed(str(err)) from None
            ctx.store.mark_call_failed(call.key, str(err)[:300])
            with lock:
                counter["failed"] += 1
            ctx.log(f"call failed after retries ({call.prompt.category}/{call.tier}/{call.idx}): {err}", "error")
            ordered.done(pos, None)
            return
        stored = _record(ctx, call, result, limited.backend.describe(), offline)
        with lock:
            counter["ok"] += int(stored)
            counter["tokens_in"] += result.tokens_in
            counter["tokens_out"] += result.tokens_out
            n = counter["ok"] + counter["failed"]
        ordered.done(pos, result)
        ctx.progress(len(done) + n, len(calls), f"{len(done) + n}/{len(calls)} traces")

    with ThreadPoolExecutor(max_workers=llm.concurrency) as pool:
        pending: set[Future] = set()
        queue = list(enumerate(todo))
        while queue or pending:
            while queue and len(pending) < llm.concurrency * 2 and not ctx.should_stop():
                pending.add(pool.submit(one, *queue.pop(0)))
            if not pending:
                break
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            for f in finished:
                f.result()
            if ctx.should_stop() and not pending:
                raise StageCancelled()
    ctx.metric(len(calls), **{"llm/total_tokens_in": counter["tokens_in"], "llm/total_tokens_out": counter["tokens_out"]})
    _finish(ctx, calls)


def _finish(ctx: StageContext, calls: list[TraceCall]) -> None:
    failed = ctx.store.failed_calls()
    traces = ctx.store.trace_count()
    ctx.log(f"datagen: {traces} traces, {len(failed)} calls failed after their retries")
    if failed:
        ctx.event("warning", f"{len(failed)} generation calls failed; `aba resume` retries them")
    if traces == 0:
        raise StageFailed("no trace was generated; see the log for the backend's errors")
