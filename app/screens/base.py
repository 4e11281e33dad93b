"""What the panel's screens share: store reads in thread workers, and their failures in the app's one handler."""

from __future__ import annotations

from textual.screen import Screen
from textual.worker import Worker


class ReadingScreen(Screen):
    """A screen whose store reads run in `@work(thread=True, exclusive=True, exit_on_error=False)` workers.

    The worker posts a message with what it read; the handler (on the UI thread) fills the widgets. A worker's
    state change goes to the node that started it and does not bubble, so this hands it to the app, where every
    failure is reported the same way.
    """

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        self.app.on_worker_state_changed(event)  # type: ignore[attr-defined]
