"""Redraw only what changed: a live screen updates a dozen widgets per poll, most of them with the same content."""

from __future__ import annotations

from typing import Literal

from rich.text import Text
from textual.widgets import Static


def update_if_changed(widget: Static, content: Text, *, layout: bool | Literal["lines"] = True) -> None:
    """Static.update, skipped when the new Text reads and looks the same (an update costs a layout pass).

    layout="lines": for a Text that is never wrapped (no_wrap, or lines cut to the width before): the layout pass
    is asked for only when the number of lines changed; otherwise the widget just repaints.
    """
    key = (content.plain, tuple(content.spans), str(content.style))
    old = getattr(widget, "_quiet_key", None)
    if old != key:
        if layout == "lines":
            layout = old is None or old[0].count("\n") != content.plain.count("\n")
        widget._quiet_key = key  # type: ignore[attr-defined]
        widget.update(content, layout=layout)
