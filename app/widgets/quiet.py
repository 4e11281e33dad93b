"""Redraw only what changed: a live screen updates a dozen widgets per poll, most of them with the same content."""

from __future__ import annotations

from typing import Literal

from rich.text import Text
from textual.css.scalar import Unit
from textual.widgets import Static


def quiet_key(content: Text) -> tuple:
    """What a Text reads and looks like: two Texts with the same key draw the same."""
    return (content.plain, tuple(content.spans), str(content.style))


def fixed_rows(widget: Static) -> int | None:
    """The widget's height when it was given a number of rows (styles.height in cells), else None (auto, fr...)."""
    height = widget.styles.height
    return int(height.value) if height is not None and height.unit == Unit.CELLS else None


def update_if_changed(widget: Static, content: Text, *, layout: bool | Literal["lines"] = True) -> bool:
    """Static.update, skipped when the new Text reads and looks the same (an update costs a layout pass).
    True when it updated.

    layout="lines": for a Text that is never wrapped (no_wrap, or lines cut to the width before): the layout pass
    is asked for only when the number of lines changed; otherwise the widget just repaints.
    """
    key = quiet_key(content)
    old = getattr(widget, "_quiet_key", None)
    if old == key:
        return False
    if layout == "lines":
        layout = old is None or old[0].count("\n") != content.plain.count("\n")
    widget._quiet_key = key  # type: ignore[attr-defined]
    widget.update(content, layout=layout)
    return True


class StatusLine(Static):
    """A status line that may wrap (at 80 columns), laid out again only when the rows it needs change, with slack:
    a setting toggled on and off (a text a character longer, then shorter) near a wrap boundary would otherwise
    relayout the screen at every key. It is given the rows its text needs were it SLACK characters longer."""

    SLACK = 12

    def show(self, text: Text) -> None:
        self._text = text
        update_if_changed(self, text, layout=False)
        self._fit()

    def on_resize(self) -> None:
        self._fit()

    def _fit(self) -> None:
        text = getattr(self, "_text", None)
        width = self.content_size.width
        if text is None or not width:
            return
        console = self.app.console
        need = len(text.wrap(console, width))
        spare = len(Text(text.plain + " " + "x" * self.SLACK).wrap(console, width))
        have = fixed_rows(self)
        if have is None or need > have or spare < have:
            self.styles.height = spare
