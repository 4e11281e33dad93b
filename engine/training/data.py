"""Training data from the run database (the shipped demo traces only for the demo config and smoke): chat rows."""

from __future__ import annotations

import json

from engine.config.sections import LLMBackendName
from engine.dims import DIMENSIONS, weighted_score
from engine.errors import UserError
from engine.judging.heuristic import heuristic_scores
from engine.store import RunStore
from engine.tracefile import DEMO_TRACES, assistant_content, load_trace_file

NO_DATA = ("no {what} in this run: run datagen and judge first, or start the run with "
           "`aba run CONFIG --data-from RUN_ID|FILE` ([data] from_run)")


def demo_data_reason(cfg, stage: str) -> str | None:
    """Why this stage may fall back to the shipped demo traces, or None when it must have the run's own data.

    Only the demo (a `demo:*` model with offline generator and judge) and the smoke test (which checks the training
    machinery, not a model) may; every other run with no data fails instead of training on examples silently.
    """
    if stage == "smoke":
        return "smoke checks the training machinery"
    if cfg.model.base.startswith("demo:") and cfg.datagen.llm.backend == LLMBackendName.OFFLINE and cfg.judge.llm.backend == LLMBackendName.OFFLINE:
        return "the demo config (demo model, offline backends)"
    return None


def check_has_data(store: RunStore, cfg, stage: str, what: str = "traces") -> None:
    """Fail fast, before any model loads, when a training stage has no data and may not use the demo files."""
    have = store.trace_count() if what == "traces" else len(store.prompts())
    if not have and demo_data_reason(cfg, stage) is None:
        raise UserError(NO_DATA.format(what=what))


def sft_rows(store: RunStore, weights: dict[str, float], min_score: float, log=print, demo: str | None = None) -> list[dict]:
    """Chosen-tier traces whose effective weighted score clears the bar, as prompt/completion conversations.
    With no traces in the run: the shipped demo traces when `demo` gives the reason they may be used, else an error."""
    if store.trace_count():
        traces = store.traces(tier="chosen", judged_only=True)
        picked = [t for t in traces if t["weighted"] is not None and t["weighted"] >= min_score]
        log(f"sft data: {len(picked)} of {len(traces)} judged chosen traces clear sft.min_score = {min_score}")
        source = [(t["turns"], t["reasoning"], t["answer"]) for t in picked]
    elif demo is None:
        raise UserError(NO_DATA.format(what="traces"))
    else:
        rows = [r for r in load_trace_file(DEMO_TRACES) if r["tier"] == "chosen"]
        source = []
        for r in rows:
            s = heuristic_scores(r["turns"], r["reasoning"], r["answer"])
            if (weighted_score(s, weights) or 0.0) >= min_score:
                source.append((r["turns"], r["reasoning"], r["answer"]))
        log(f"sft data: no traces in this run; using the SHIPPED DEMO traces ({demo}): {len(source)} of {len(rows)} "
            "chosen traces clear the bar")
    return [
        {"prompt": list(turns), "completion": [{"role": "assistant", "content": assistant_content(reasoning, answer)}]}
        for turns, reasoning, answer in source
    ]


def grpo_prompts(store: RunStore, demo: str | None = None, log=print) -> list[dict]:
    """Every distinct prompt of the run as a conversational GRPO prompt (the demo traces' prompts only with `demo`)."""
    if store.prompts():
        prompts = [p["turns"] for p in store.prompts()]
    elif demo is None:
        raise UserError(NO_DATA.format(what="prompts"))
    else:
        log(f"grpo data: no prompts in this run; using the SHIPPED DEMO traces' prompts ({demo})")
        seen, prompts = set(), []
        for r in load_trace_file(DEMO_TRACES):
            key = json.dumps(r["turns"])
            if key not in seen:
                seen.add(key)
                prompts.append(r["turns"])
    return [{"prompt": turns} for turns in prompts]


__all__ = ["DIMENSIONS", "check_has_data", "demo_data_reason", "grpo_prompts", "sft_rows"]
