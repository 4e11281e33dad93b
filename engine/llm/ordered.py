"""Results of concurrent calls handed on in submission order, so metric series never depend on thread scheduling."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any


class InOrder:
    """Collect results that finish in any order; `emit` sees them strictly by position 0, 1, 2, ...

    The store writes of each call still happen at once (a finished paid call is never held back); only what is
    derived from the sequence (running counts, per-call metric rows) waits for the calls before it.
    """

    def __init__(self, emit: Callable[[int, Any], None], start: int = 0):
        self._emit = emit
        self._next = start
        self._ready: dict[int, Any] = {}
        self._lock = threading.Lock()

    def done(self, position: int, payload: Any) -> None:
        with self._lock:
            self._ready[position] = payload
            while self._next in self._ready:
                self._emit(self._next, self._ready.pop(self._next))
                self._next += 1

    def skip(self, position: int) -> None:
        """A call that will never report (cancelled before it ran) must not hold back the ones after it."""
        self.done(position, None)
