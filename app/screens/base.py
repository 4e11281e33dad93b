"""What the panel's screens and widgets share: store reads in thread workers, and their failures in the app's one handler."""

from __future__ import annotations

from textual.screen import Screen

from app.failures import ReportsFailures


class ReadingScreen(ReportsFailures, Screen):
    """A screen whose store reads run in `@work(thread=True, exclusive=True, exit_on_error=False)` workers: the
    worker posts a message with what it read; the handler (on the UI thread) fills the widgets."""
