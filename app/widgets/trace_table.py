"""A virtual table of traces: holds only the sorted id list and pages rows in from SQLite as they scroll into view."""

from __future__ import annotations

from dataclasses import dataclass

from rich.segment import Segment
from rich.style import Style
from textual import events
from textual.binding import Binding
from textual.geometry import Size
from textual.message import Message
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip

from engine.dims import DIMENSIONS, SHORT
from engine.store import RunStore

COLUMNS = [("id", "id", 7), ("category", "category", 12), ("tier", "tier", 9), ("weighted", "score", 6)]
COLUMNS += [(d, SHORT[d], 5) for d in DIMENSIONS] + [("reviewed", "rev", 4), ("judge_failed", "fail", 5)]
PAGE = 200


def header_text(sort: str, descending: bool) -> str:
    parts = []
    for key, title, width in COLUMNS:
        mark = ("▼" if descending else "▲") if key == sort else ""
        parts.append(f"{title + mark:<{width}}"[:width])
    return " ".join(parts)


def format_row(row: tuple) -> str:
    """row = (id, category, tier, weighted, nine effective scores, reviewed, judge_failed, n_human)."""
    tid, cat, tier, weighted = row[0], row[1] or "", row[2] or "", row[3]
    scores = row[4 : 4 + len(DIMENSIONS)]
    reviewed, failed = row[4 + len(DIMENSIONS)], row[5 + len(DIMENSIONS)]
    cells = [str(tid), cat, tier, "" if weighted is None else f"{weighted:.2f}"]
    cells += ["" if v is None else f"{v:.2f}" for v in scores]
    cells += ["✓" if reviewed else "", "FAIL" if failed else ""]
    return " ".join(f"{c:<{w}}"[:w] for c, (_, _, w) in zip(cells, COLUMNS))


class TraceTable(ScrollView, can_focus=True):
    """Keyboard: up/down/page/home/end move; the highlighted trace is announced with Highlighted."""

    DEFAULT_CSS = """
    TraceTable { height: 1fr; }
    TraceTable > .trace-table--cursor { background: $accent 40%; }
    """
    BINDINGS = [
        Binding("up", "move(-1)", "up", show=False),
        Binding("down", "move(1)", "down", show=False),
        Binding("pageup", "move(-20)", "page up", show=False),
        Binding("pagedown", "move(20)", "page down", show=False),
        Binding("home", "jump(0)", "first", show=False),
        Binding("end", "jump(-1)", "last", show=False),
    ]
    COMPONENT_CLASSES = {"trace-table--cursor"}

    @dataclass
    class Highlighted(Message):
        """The cursor moved to another trace (or None: the table is empty)."""

        table: TraceTable
        trace_id: int | None

        @property
        def control(self) -> TraceTable:
            return self.table

        def can_replace(self, message: Message) -> bool:
            return isinstance(message, TraceTable.Highlighted)

    cursor = reactive(0)

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.store: RunStore | None = None
        self.ids: list[int] = []
        self._rows: dict[int, str] = {}

    def load(self, store: RunStore | None, ids: list[int], keep: int | None = None) -> None:
        """Show these ids (already filtered and sorted); keep the cursor on trace `keep` when it is still there."""
        self.store = store
        self.ids = ids
        self._rows.clear()
        width = sum(w + 1 for _, _, w in COLUMNS)
        self.virtual_size = Size(width, len(ids))
        target = ids.index(keep) if keep is not None and keep in ids else 0
        self.cursor = min(target, max(len(ids) - 1, 0))
        self.scroll_to(y=max(self.cursor - 3, 0), animate=False)
        self.refresh()
        self.post_message(self.Highlighted(self, self.current_id))

    def invalidate(self, trace_id: int) -> None:
        """Re-read one row (after an edit)."""
        if trace_id in self.ids:
            self._rows.pop(self.ids.index(trace_id), None)
            self.refresh()

    @property
    def current_id(self) -> int | None:
        return self.ids[self.cursor] if 0 <= self.cursor < len(self.ids) else None

    def _fetch(self, index: int) -> str:
        if index not in self._rows and self.store is not None:
            start = max(index - PAGE // 4, 0)
            ids = self.ids[start : start + PAGE]
            for i, row in enumerate(self.store.trace_summaries(ids)):
                self._rows[start + i] = format_row(row)
        return self._rows.get(index, "")

    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y = self.scroll_offset
        index = scroll_y + y
        width = self.scrollable_content_region.width
        if index >= len(self.ids):
            return Strip.blank(width)
        text = self._fetch(index)
        style = self.get_component_rich_style("trace-table--cursor") if index == self.cursor else Style()
        strip = Strip([Segment(text.ljust(self.virtual_size.width), style)])
        return strip.crop(scroll_x, scroll_x + width)

    def watch_cursor(self, old: int, new: int) -> None:
        self.refresh()
        top = self.scroll_offset.y
        height = self.scrollable_content_region.height
        if new < top:
            self.scroll_to(y=new, animate=False)
        elif height and new >= top + height:
            self.scroll_to(y=new - height + 1, animate=False)
        self.post_message(self.Highlighted(self, self.current_id))

    def action_move(self, delta: int) -> None:
        if self.ids:
            self.cursor = max(0, min(len(self.ids) - 1, self.cursor + delta))

    def action_jump(self, index: int) -> None:
        if self.ids:
            self.cursor = index % len(self.ids)

    def on_click(self, event: events.Click) -> None:
        index = self.scroll_offset.y + event.y
        if 0 <= index < len(self.ids):
            self.cursor = index
        self.focus()
