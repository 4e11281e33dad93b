"""The demo's backend: the shipped example traces and an injected judge, honestly labelled offline.

Generation returns the hand-written trace for a shipped prompt and tier; for any other prompt it composes a
tier-shaped trace from the prompt's own words (chosen: parameters, unknowns, weighing; rejected: rushed and
overconfident). Judging returns what the `judge` it was given replies (the judging wing gives the heuristic judge's
scores as JSON); with none, a judge request is refused. No network, deterministic.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

from engine.llm.base import LLMBackend, LLMError, LLMRequest, LLMResult
from engine.tracefile import DEMO_TRACES, load_trace_file

_STOP = set("the a an and or to of in on for with is are be my me i you it this that what how do does should can".split())


class OfflineBackend(LLMBackend):
    name = "offline"
    labelled_offline = True

    def __init__(self, model: str = "shipped-examples", traces: Path = DEMO_TRACES,
                 judge: Callable[[list[dict], str, str], str] | None = None):
        super().__init__(model)
        self._judge = judge
        self._shipped: dict[tuple[str, str], list[dict]] = {}
        for row in load_trace_file(traces):
            self._shipped.setdefault((json.dumps(row["turns"]), row["tier"]), []).append(row)

    def generate(self, request: LLMRequest) -> LLMResult:
        kind = request.meta.get("kind", "trace")
        if kind == "judge":
            if self._judge is None:
                raise LLMError("the offline backend was given no judge (engine.judging.factory.judge_backend gives it "
                               "the heuristic judge)", retriable=False)
            return LLMResult(text=self._judge(request.meta["turns"], request.meta["reasoning"], request.meta["answer"]),
                             model="heuristic")
        if kind == "expand":
            raise LLMError("the offline backend cannot write new prompts", retriable=False)
        turns, tier, idx = request.messages, request.meta.get("tier", "adequate"), int(request.meta.get("idx", 0))
        shipped = self._shipped.get((json.dumps(turns), tier))
        if shipped:
            row = shipped[idx % len(shipped)]
            return self._result(row["reasoning"], row["answer"], request)
        reasoning, answer = compose(turns, tier, idx)
        return self._result(reasoning, answer, request)

    def _result(self, reasoning: str, answer: str, request: LLMRequest) -> LLMResult:
        tokens_in = (len(request.system) + sum(len(m["content"]) for m in request.messages)) // 4
        return LLMResult(text=answer, reasoning=reasoning, tokens_in=tokens_in,
                         tokens_out=(len(reasoning) + len(answer)) // 4, model=self.model)


def _key_terms(turns: list[dict], n: int = 5) -> list[str]:
    last = next((t["content"] for t in reversed(turns) if t["role"] == "user"), "")
    words = [w for w in re.findall(r"[A-Za-z][A-Za-z0-9'-]+", last) if w.lower() not in _STOP and len(w) > 3]
    seen: list[str] = []
    for w in words:
        if w.lower() not in (s.lower() for s in seen):
            seen.append(w)
    return seen[:n] or ["the question"]


def compose(turns: list[dict], tier: str, idx: int = 0) -> tuple[str, str]:
    """A tier-shaped (reasoning, answer) built from the prompt's own key terms."""
    terms = _key_terms(turns)
    listed = ", ".join(terms)
    earlier = [t["content"] for t in turns[:-1] if t["role"] == "user"]
    context = f" Earlier turns said: {' / '.join(earlier)}." if earlier else ""
    if tier == "chosen":
        reasoning = (
            f"Parameters: {listed}.{context} Group them: the ones that move together first, then the rest. "
            f"What I don't know: the details the user has not given. If the parts conflict, weigh them explicitly. "
            f"Step 1: restate the goal. Step 2: reduce it to the main factor. Step 3: answer with the uncertainty stated."
        )
        answer = (
            f"Here is how I'd approach it. 1) The key factors are {listed}. 2) Group the ones that depend on each other, "
            f"because that simplifies the choice. 3) I don't know every detail of your situation, so tell me more "
            f"about {terms[0]} and I can be more specific."
        )
        if idx % 2:
            answer += " If two of these pull in different directions, decide which matters more to you first."
    elif tier == "adequate":
        reasoning = f"The question is about {terms[0]}."
        answer = f"It depends mainly on {listed}. Start with {terms[0]}."
    else:
        reasoning = "Answer fast."
        answer = f"Definitely just go with {terms[-1]}. It always works."
    return reasoning, answer
