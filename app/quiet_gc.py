"""Python's full garbage collections, moved to the moments the person is not typing.

A full (generation 2) collection walks every tracked object: with Textual, numpy, the engine and seven screens that is
~150,000 objects, and the walk stops the panel's event loop for 100-300 ms on a busy 2-core machine (measured by
bench/loopwatch.py: the largest single stalls under bench/ui_panel.py were these). CPython starts one on its own
whenever enough objects have survived the young collections, so it lands on key presses at random.

What this does instead:
- objects that live as long as the panel (modules, classes, the screens' widgets once built) are moved out of the
  collector's sight with `gc.freeze()`: after the first frame and after each screen's first build;
- automatic full collections are switched off (generation 2's threshold set out of reach); young collections stay
  as they are (they take a millisecond or two);
- a 1 Hz check runs the full collection itself when no key or mouse event came for IDLE_S and enough was allocated
  since the last one, and in any case once FORCE_AFTER young collections have piled up, so memory stays bounded
  even under constant typing.
"""

from __future__ import annotations

import gc
import time

IDLE_S = 2.0  # no input for this long: the person is reading, a full collection will not be felt
MIN_GEN1 = 10  # collect only when this many generation-1 collections happened since the last full one (CPython's own)
FORCE_AFTER = 2_000  # ... and regardless of input past this many (about 14M net allocations): memory stays bounded
CHECK_S = 1.0
NEVER = 1 << 30


class QuietGC:
    """Installed once by the app; `input_seen()` on every key and mouse event, `freeze()` after a screen's build."""

    def __init__(self) -> None:
        self.last_input = time.monotonic()
        self.full_collections = 0
        self.longest_s = 0.0
        self._installed = False
        self._saved: tuple[int, int, int] | None = None

    def install(self) -> None:
        if self._installed:
            return
        self._installed = True
        self._saved = gc.get_threshold()
        t0, t1, _ = self._saved
        gc.set_threshold(t0, t1, NEVER)
        gc.freeze()

    def uninstall(self) -> None:
        """Back to CPython's own schedule (the app closed; tests run many apps in one process)."""
        if self._installed and self._saved is not None:
            gc.set_threshold(*self._saved)
            gc.unfreeze()
            self._installed = False

    def input_seen(self) -> None:
        self.last_input = time.monotonic()

    def freeze(self) -> None:
        """A screen was built: its widgets live as long as the panel. Young garbage first, so it is not kept."""
        if self._installed:
            gc.collect(1)
            gc.freeze()

    def tick(self) -> None:
        if not self._installed:
            return
        pending = gc.get_count()[2]
        idle = time.monotonic() - self.last_input >= IDLE_S
        if (idle and pending >= MIN_GEN1) or pending >= FORCE_AFTER:
            t = time.perf_counter()
            gc.collect()
            self.full_collections += 1
            self.longest_s = max(self.longest_s, time.perf_counter() - t)
