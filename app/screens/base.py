"""What the panel's screens and widgets share: store reads in thread workers, and their failures in the app's one handler."""

from __future__ import annotations

from textual import events
from textual.screen import Screen

from app.failures import ReportsFailures


class QuickResume:
    """Mixed into the rooms (the app's modes), before Screen: coming back to a room does not apply the CSS to each of
    its widgets again (Textual's switch_mode asks for that on every switch: 20-40 ms on the Training screen; its
    pop_screen does not). A change of CSS or theme meanwhile still reaches the room through App.refresh_css, a
    resize through the room's own Resize."""

    def _on_screen_resume(self, event: events.ScreenResume) -> None:
        event.refresh_styles = False  # read by Screen._on_screen_resume, which runs after this


class ReadingScreen(ReportsFailures, QuickResume, Screen):
    """A screen whose store reads run in `@work(thread=True, exclusive=True, exit_on_error=False)` workers: the
    worker posts a message with what it read; the handler (on the UI thread) fills the widgets."""
