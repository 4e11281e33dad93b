"""Client-side limits around every backend: concurrency, requests and tokens per minute, retries with backoff."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from engine.llm.base import LLMBackend, LLMError, LLMRequest, LLMResult


class RateLimiter:
    """Spaces calls evenly: one request every 60/rpm s, and tokens at tpm per minute. Thread-safe.

    Reserving the next free slot (rather than a refilling bucket) keeps the achieved rate at the cap under any
    concurrency, with no burst that a server-side limiter would answer with 429s.
    """

    def __init__(self, rpm: int, tpm: int, clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep):
        self.req_gap = 60.0 / rpm
        self.tok_rate = tpm / 60.0
        self._next_req = 0.0
        self._next_tok = 0.0
        self._lock = threading.Lock()
        self.clock = clock
        self.sleep = sleep

    def acquire(self, tokens: int = 0) -> float:
        """Wait for a slot; returns the seconds waited."""
        with self._lock:
            now = self.clock()
            slot = max(now, self._next_req, self._next_tok)
            self._next_req = slot + self.req_gap
            self._next_tok = slot + tokens / self.tok_rate
        wait = slot - now
        if wait > 0:
            self.sleep(wait)
        return max(wait, 0.0)

    def push_back(self, seconds: float) -> None:
        """A server said slow down (Retry-After): no one starts before then."""
        with self._lock:
            self._next_req = max(self._next_req, self.clock() + seconds)


@dataclass
class RetryPolicy:
    max_retries: int = 5
    base_s: float = 1.0
    cap_s: float = 60.0

    def delay(self, attempt: int, err: LLMError, rng: random.Random) -> float:
        """Retry-After wins; else exponential backoff with full jitter."""
        if err.retry_after is not None:
            return max(0.0, err.retry_after)
        return rng.uniform(0, min(self.cap_s, self.base_s * 2**attempt))


class LimitedBackend:
    """A backend behind a concurrency cap, a rate limit and a retry policy. Counts tokens per call."""

    def __init__(self, backend: LLMBackend, concurrency: int, rpm: int, tpm: int, retry: RetryPolicy,
                 sleep: Callable[[float], None] = time.sleep, seed: int = 0):
        self.backend = backend
        self.concurrency = concurrency
        self.sem = threading.BoundedSemaphore(concurrency)
        self.limiter = RateLimiter(rpm, tpm, sleep=sleep)
        self.retry = retry
        self.sleep = sleep
        self._rng = random.Random(seed)
        self._rng_lock = threading.Lock()

    @property
    def name(self) -> str:
        return self.backend.name

    def call(self, request: LLMRequest, on_retry: Callable[[int, LLMError, float], None] | None = None) -> LLMResult:
        attempt = 0
        while True:
            self.limiter.acquire(request.approx_tokens())
            start = time.perf_counter()
            try:
                with self.sem:
                    result = self.backend.generate(request)
                result.latency_s = time.perf_counter() - start
                return result
            except LLMError as err:
                if not err.retriable or attempt >= self.retry.max_retries:
                    raise
                with self._rng_lock:
                    delay = self.retry.delay(attempt, err, self._rng)
                if err.retry_after is not None:
                    self.limiter.push_back(delay)
                if on_retry:
                    on_retry(attempt + 1, err, delay)
                self.sleep(delay)
                attempt += 1
