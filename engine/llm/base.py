"""The one small interface every LLM backend implements, and the errors it raises."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class LLMRequest:
    messages: list[dict[str, str]]  # user/assistant turns
    system: str = ""
    temperature: float = 1.0
    max_tokens: int = 4096
    thinking: str | None = None  # "high" asks for high thinking effort where the backend has it
    json_schema: dict | None = None  # a response schema where the backend supports one
    meta: dict[str, Any] = field(default_factory=dict)  # what the offline backend needs (tier, category)

    def approx_tokens(self) -> int:
        """A cheap upper-ish guess for the token budget before the call (4 characters a token, plus the reply)."""
        chars = len(self.system) + sum(len(m.get("content", "")) for m in self.messages)
        return chars // 4 + min(self.max_tokens, 1024)


@dataclass
class LLMResult:
    text: str
    reasoning: str = ""
    tokens_in: int = 0
    tokens_out: int = 0
    model: str = ""
    latency_s: float = 0.0
    raw: Any = None


class LLMError(Exception):
    """A call that failed. `retriable` errors (408, 429, 5xx, timeouts, cut connections, garbled bodies) are retried;
    `fatal` ones (bad credentials, no permission, unknown model or location) fail every call the same way, so the
    stage stops at once with this one line instead of marking calls failed one by one."""

    def __init__(self, message: str, *, status: int | None = None, retriable: bool = False, retry_after: float | None = None,
                 fatal: bool = False):
        super().__init__(message)
        self.status = status
        self.retriable = retriable and not fatal
        self.retry_after = retry_after
        self.fatal = fatal


def retriable_status(status: int) -> bool:
    return status in (408, 409, 429) or 500 <= status < 600


class LLMBackend:
    """generate(request) -> LLMResult. Implementations do one attempt; the runner adds limits and retries."""

    name = "base"
    labelled_offline = False

    def __init__(self, model: str):
        self.model = model

    def generate(self, request: LLMRequest) -> LLMResult:  # pragma: no cover - interface
        raise NotImplementedError

    def describe(self) -> str:
        return f"{self.name}:{self.model}"
