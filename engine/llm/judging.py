"""The LLM judge: a separate call with its own prompt (Approach B), strict parsing, retries, then judge_failed."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from engine.judge import JUDGE_SYSTEM, RESPONSE_SCHEMA, JudgeReplyError, ParsedScores, judge_user_message, parse_judge_reply
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
        """For GRPO rewards: the nine scores, or None for each when the judge failed (TRL treats None as unscorable)."""
        try:
            return self.judge(turns, reasoning, answer).parsed.scores
        except JudgeFailed:
            from engine.dims import DIMENSIONS

            return {d: None for d in DIMENSIONS}
