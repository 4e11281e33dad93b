"""Worker failures reach the user: every screen or widget that starts a thread worker mixes this in."""

from __future__ import annotations

from textual.worker import Worker


class ReportsFailures:
    """Mixed into every screen or widget that starts a worker (`@work(..., exit_on_error=False)`).

    A worker's state change goes to the node that started it and does not bubble, so without this a failed read
    would vanish. This hands it to the app's `on_worker_state_changed`, where every failure is reported the same
    way (a notification naming the error). `tests/test_panel_failures.py` checks every node with a worker has it.
    """

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if self is not self.app:  # type: ignore[attr-defined]
            self.app.on_worker_state_changed(event)  # type: ignore[attr-defined]
