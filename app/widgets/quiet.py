"""Redraw only what changed: a live screen updates a dozen widgets per poll, most of them with the same content."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static


def update_if_changed(widget: Static, content: Text, *, layout: bool = True) -> None:
    """Static.update, skipped when the new Text reads and looks the same (an update costs a layout pass)."""
    key = (content.plain, tuple(content.spans), str(content.style))
    if getattr(widget, "_quiet_key", None) != key:
        widget._quiet_key = key  # type: ignore[attr-defined]
        widget.update(content, layout=layout)
