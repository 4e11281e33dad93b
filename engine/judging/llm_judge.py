"""The LLM judge: a separate call with its own prompt (Approach B), strict parsing, retries, then judge_failed."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from engine.judging.parser import JudgeReplyError, ParsedScores, parse_judge_reply
from engine.judging.prompt import JUDGE_SYSTEM, RESPONSE_SCHEMA, judge_user_message
from engine.errors import UserError
from engine.llm.base import LLMError, LLMRequest
from engine.llm.limits import LimitedBackend


class JudgeFailed(Exception):
    def __init__(self, reason: str, raw: str | None):
        super().__init__(reason)
        self.raw = raw


@dataclass
class JudgeVerdict:
    parsed: ParsedScores
    raw: str
    attempts: int


class LLMJudge:
    def __init__(self, backend, attempts: int = 3, temperature: float = 0.0,
                 on_attempt: Callable[[int, str | None, str | None], None] | None = None):
        self.backend = backend if isinstance(backend, LimitedBackend) else None
        self._plain = backend
        self.attempts = attempts
        self.temperature = temperature
        self.on_attempt = on_attempt

    def _call(self, request: LLMRequest):
        return self.backend.call(request) if self.backend else self._plain.generate(request)

    def judge(self, turns: list[dict], reasoning: str, answer: str) -> JudgeVerdict:
        """Nine scores, repaired where possible; retried on unusable replies; JudgeFailed with the raw reply last."""
        request = LLMRequest(
            messages=[{"role": "user", "content": judge_user_message(turns, reasoning, answer)}],
            system=JUDGE_SYSTEM, temperature=self.temperature, max_tokens=512, json_schema=RESPONSE_SCHEMA,
            meta={"kind": "judge", "turns": turns, "reasoning": reasoning, "answer": answer},
        )
        raw: str | None = None
        reason = ""
        for attempt in range(1, self.attempts + 1):
            try:
                result = self._call(request)
            except LLMError as err:
                if err.fatal:  # every call would fail the same way: stop the stage with the backend's one line
                    raise UserError(str(err)) from None
                reason, raw = f"call failed: {err}", None
                if self.on_attempt:
                    self.on_attempt(attempt, None, reason)
                if not err.retriable:
                    break
                continue
            raw = result.text
            try:
                parsed = parse_judge_reply(raw)
            except JudgeReplyError as err:
                reason = str(err)
                if self.on_attempt:
                    self.on_attempt(attempt, raw, reason)
                continue
            if self.on_attempt:
                self.on_attempt(attempt, raw, None)
            return JudgeVerdict(parsed, raw, attempt)
        raise JudgeFailed(f"judge failed after {self.attempts} attempt(s): {reason}", raw)

    def score(self, turns: list[dict], reasoning: str, answer: str) -> dict[str, float | None]:
        """For GRPO rewards: the nine scores, or None for each when the judge failed after its attempts. None in all
        nine reward functions makes TRL drop the completion from its group's advantage (see training/rewards.py);
        a number here, 0 included, would be trained on."""
        try:
            return self.judge(turns, reasoning, answer).parsed.scores
        except JudgeFailed:
            from engine.dims import DIMENSIONS

            return {d: None for d in DIMENSIONS}


PAIRWISE_SYSTEM = """You are a strict, impartial judge comparing two assistant responses to the same conversation.
Judge reasoning quality: simplifying the problem, calibrated uncertainty, handling conflicts, faithfulness to the
context, transparency, honesty, helpfulness, avoiding harm without needless refusal, following the instructions.
Reply with one JSON object: {"winner": "A"} or {"winner": "B"} or {"winner": "tie"}."""

PAIRWISE_SCHEMA = {"type": "object", "properties": {"winner": {"type": "string", "enum": ["A", "B", "tie"]}},
                   "required": ["winner"]}


def parse_pairwise(text: str) -> str:
    import json
    import re

    m = re.search(r"\{.*\}", text or "", re.S)
    if m:
        try:
            winner = str(json.loads(m.group(0)).get("winner", "")).strip()
            if winner.upper() in ("A", "B"):
                return winner.upper()
            if winner.lower() == "tie":
                return "tie"
        except (json.JSONDecodeError, AttributeError):
            pass
    raise ValueError(f"no winner in pairwise reply: {(text or '')[:120]!r}")


def pairwise_llm(backend, turns: list[dict], first: str, second: str, attempts: int = 3) -> str | None:
    """'A' (first better), 'B' or 'tie' from an LLM judge; None when it never answers usably (the pair is skipped,
    not counted as a tie)."""
    convo = "\n".join(f"[{t['role']}] {t['content']}" for t in turns)
    req = LLMRequest(messages=[{"role": "user", "content": f"CONVERSATION:\n{convo}\n\nRESPONSE A:\n{first}\n\nRESPONSE B:\n{second}\n\nVerdict (JSON):"}],
                     system=PAIRWISE_SYSTEM, temperature=0.0, max_tokens=64, json_schema=PAIRWISE_SCHEMA)
    for _ in range(attempts):
        try:
            result = backend.call(req) if hasattr(backend, "call") else backend.generate(req)
            return parse_pairwise(result.text)
        except LLMError as err:
            if err.fatal:
                raise UserError(str(err)) from None
            if not err.retriable:
                return None
        except ValueError:
            continue
    return None
