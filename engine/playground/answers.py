"""One question's answers as the worker's events build them: the same fold for the panel and `aba chat`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from engine.dims import DIMENSIONS
from engine.playground.settings import split_live


@dataclass
class Answer:
    model: str
    source: str = ""
    raw: str = ""  # the streamed text, <think> block included
    status: str = "waiting"  # waiting, streaming, done, length, cancelled, error
    error: str = ""
    note: str = ""
    stats: dict[str, Any] = field(default_factory=dict)
    scores: dict[str, float] | None = None
    weighted: float | None = None
    judge_error: str = ""
    judged: bool = False
    exchange_id: int | None = None

    @property
    def parts(self) -> tuple[str, str, bool]:
        """(reasoning, answer, thinking still open)."""
        return split_live(self.raw)

    def as_dict(self) -> dict[str, Any]:
        reasoning, answer, _ = self.parts
        return {"model": self.model, "source": self.source, "status": self.status, "error": self.error or None,
                "note": self.note or None, "answer": answer, "reasoning": reasoning, "scores": self.scores,
                "weighted": self.weighted, "judge_error": self.judge_error or None, "exchange_id": self.exchange_id,
                **{k: self.stats.get(k) for k in ("prompt_tokens", "new_tokens", "ttft_s", "tokens_per_s", "total_s")}}


@dataclass
class Turn:
    """A question to every chosen model; `finished` once every answer is in and judged (or failed)."""

    turn: int
    prompt: str
    models: list[str]
    settings: dict[str, Any]
    answers: dict[str, Answer] = field(default_factory=dict)
    finished: bool = False

    @staticmethod
    def from_event(event: dict[str, Any]) -> Turn:
        t = Turn(event["turn"], event["prompt"], list(event["models"]), dict(event.get("settings") or {}))
        t.answers = {m: Answer(m) for m in t.models}
        return t

    def apply(self, event: dict[str, Any]) -> Answer | None:
        """Fold one event in; the answer it changed (None for events about the turn or another turn)."""
        if event.get("turn") != self.turn:
            return None
        ev = event["ev"]
        if ev == "turn_done":
            self.finished = True
            return None
        a = self.answers.get(event.get("model", ""))
        if a is None:
            return None
        if ev == "start":
            a.source, a.status = event.get("source", ""), "streaming"
        elif ev == "text":
            a.raw += event["text"]
        elif ev == "answer":
            a.raw = event.get("raw", a.raw)
            a.status, a.note = event["status"], event.get("note") or ""
            a.stats = {k: event.get(k) for k in ("prompt_tokens", "new_tokens", "ttft_s", "tokens_per_s", "total_s")}
        elif ev == "scores":
            a.scores, a.weighted = event.get("scores"), event.get("weighted")
            a.judge_error, a.exchange_id, a.judged = event.get("judge_error") or "", event.get("id"), True
        elif ev == "error":
            a.status, a.error, a.judged = "error", event.get("message", ""), True
        return a

    def leaders(self) -> set[str]:
        """The models with the highest weighted total among those judged (the higher of each pair when two)."""
        judged = {m: a.weighted for m, a in self.answers.items() if a.weighted is not None}
        if len(judged) < 2:
            return set()
        best = max(judged.values())
        if all(v == best for v in judged.values()):
            return set()
        return {m for m, v in judged.items() if v == best}

    def dim_leaders(self) -> dict[str, set[str]]:
        """Per dimension, which models scored highest (none when all tie)."""
        out: dict[str, set[str]] = {}
        for d in DIMENSIONS:
            vals = {m: a.scores[d] for m, a in self.answers.items() if a.scores}
            if len(vals) >= 2 and len(set(vals.values())) > 1:
                best = max(vals.values())
                out[d] = {m for m, v in vals.items() if v == best}
        return out
