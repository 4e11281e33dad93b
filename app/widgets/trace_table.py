"""A virtual table of traces: holds the sorted id list; rows are paged in by a thread worker ahead of the viewport."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from rich.segment import Segment
from rich.style import Style
from textual import events, work
from textual.binding import Binding
from textual.geometry import Size
from textual.message import Message
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip

from app.failures import ReportsFailures
from engine.dims import DIMENSIONS, SHORT
from engine.store import RunStore
from engine.text import inert

PAGE = 200  # rows per read; the worker keeps one page above and one below the viewport loaded
MAX_ROWS = 12 * PAGE  # formatted rows kept (least recently drawn or read go first): a 1M-trace run stays small


@dataclass(frozen=True)
class Column:
    key: str  # the store's sort key
    title: str
    width: int
    name: str  # said in full in the legend and the sort picker


def _score(v: float | None) -> str:
    """Three cells for a 0..1 score: .53, 1.0, .00."""
    if v is None:
        return ""
    return "1.0" if v >= 0.995 else f"{v:.2f}"[1:]


COLUMNS = [Column("id", "id", 6, "trace id"), Column("category", "category", 10, "category"),
           Column("tier", "tier", 4, "tier"), Column("weighted", "wtd", 3, "weighted score")]
COLUMNS += [Column(d, SHORT[d], 3, d) for d in DIMENSIONS]
COLUMNS += [Column("reviewed", "rev", 3, "reviewed"), Column("judge_failed", "fail", 4, "judge failed")]
WIDTH = sum(c.width + 1 for c in COLUMNS)
TIER_SHORT = {"chosen": "chos", "adequate": "adeq", "rejected": "rej"}


LEGEND_WORDS = {"entropy_reduction": "entropy", "calibrated_uncertainty": "calibration", "conflict_resolution": "conflict",
                "context_faithfulness": "context", "process_transparency": "process", "honest_engagement": "honesty",
                "helpfulness": "helpfulness", "harm_avoidance": "harm", "instruction_following": "instructions"}


def legend() -> str:
    """The header legend: every abbreviation said in a word (the trace pane names each dimension in full)."""
    return "  ".join(f"{SHORT[d]} {LEGEND_WORDS[d]}" for d in DIMENSIONS) + "  wtd weighted (.53 = 0.53)"


def header_cells() -> list[str]:
    return [f"{c.title:<{c.width}}"[: c.width] if c.key == "category" else f"{c.title:>{c.width}}"[-c.width:]
            for c in COLUMNS]


def sort_label(sort: str, descending: bool) -> str:
    col = next(c for c in COLUMNS if c.key == sort)
    return f"sorted by {col.title} ({col.name}) {'▼' if descending else '▲'}"


def format_row(row: tuple) -> str:
    """row = (id, category, tier, weighted, nine effective scores, reviewed, judge_failed, n_human)."""
    tid, cat, tier, weighted = row[0], inert(row[1] or "", oneline=True), row[2] or "", row[3]
    scores = row[4 : 4 + len(DIMENSIONS)]
    reviewed, failed = row[4 + len(DIMENSIONS)], row[5 + len(DIMENSIONS)]
    cells = [str(tid), cat, TIER_SHORT.get(tier, inert(tier, oneline=True)), _score(weighted)]
    cells += [_score(v) for v in scores]
    cells += ["✓" if reviewed else "", "FAIL" if failed else ""]
    out = []
    for c, col in zip(cells, COLUMNS):
        out.append(f"{c:<{col.width}}"[: col.width] if col.key == "category" else f"{c:>{col.width}}"[-col.width:])
    return " ".join(out)


class TraceTable(ReportsFailures, ScrollView, can_focus=True):
    """Keyboard: up/down/page/home/end move, left/right scroll; the highlighted trace is announced with Highlighted.

    The first line is the header, drawn with the rows' horizontal scroll so titles stay over their columns.
    """

    DEFAULT_CSS = """
    TraceTable { height: 1fr; }
    TraceTable > .trace-table--cursor { background: $accent 40%; }
    TraceTable > .trace-table--header { text-style: bold; background: $boost; }
    """
    BINDINGS = [
        Binding("up", "move(-1)", "up", show=False),
        Binding("down", "move(1)", "down", show=False),
        Binding("pageup", "move(-20)", "page up", show=False),
        Binding("pagedown", "move(20)", "page down", show=False),
        Binding("home", "jump(0)", "first", show=False),
        Binding("end", "jump(-1)", "last", show=False),
    ]
    COMPONENT_CLASSES = {"trace-table--cursor", "trace-table--header"}

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

    @dataclass
    class RowsLoaded(Message):
        """A page of rows read by the worker, for the id list of `generation`."""

        store: RunStore
        generation: int
        start: int
        rows: dict[int, str]  # by trace id

    @dataclass
    class HeaderClicked(Message):
        """A column title was clicked: sort by that column (again: reverse)."""

        key: str

    cursor = reactive(0)

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.store: RunStore | None = None
        self.ids: list[int] = []
        self.sort, self.descending = "id", False
        self._rows: OrderedDict[int, str] = OrderedDict()  # by trace id, LRU: a re-sort or reload keeps what was read
        self._generation = 0
        self._asked: tuple[int, int, int] | None = None  # (generation, start, end) of the read under way

    def load(self, store: RunStore | None, ids: list[int], keep: int | None = None) -> None:
        """Show these ids (already filtered and sorted); keep the cursor on trace `keep` when it is still there."""
        if store is not self.store:
            self._rows.clear()
        self.store = store
        self.ids = ids
        self._generation += 1
        self._asked = None
        self.virtual_size = Size(WIDTH, len(ids) + 1)
        target = ids.index(keep) if keep is not None and keep in ids else 0
        self.cursor = min(target, max(len(ids) - 1, 0))
        self._scroll_cursor_into_view(centre=True)
        self.refresh()
        self._page_ahead()
        self.post_message(self.Highlighted(self, self.current_id))

    def forget_rows(self) -> None:
        """Re-read every row (another panel or process changed the run)."""
        self._rows.clear()
        self._asked = None
        self._page_ahead()
        self.refresh()

    def invalidate(self, trace_id: int) -> None:
        """Re-read one row (after an edit)."""
        if self._rows.pop(trace_id, None) is not None:
            self._asked = None
            self._page_ahead()

    def set_row(self, trace_id: int, text: str) -> None:
        """One row as it now stands (an edit's commit read it back): repainted at once if on screen and changed."""
        if self._rows.get(trace_id) != text:
            self._rows[trace_id] = text
            if trace_id in self._shown_ids():
                self.refresh()
        self._rows.move_to_end(trace_id)

    def reread_rows(self) -> None:
        """The run changed elsewhere: read the rows around the viewport again, keeping what is shown until the new
        rows arrive (repainted only where they differ); rows further away are dropped (read when reached)."""
        if self.store is None or not self.ids:
            return
        top = int(self.scroll_offset.y)
        height = max(self.scrollable_content_region.height, 20)
        lo, hi = max(top - PAGE // 2, 0), min(top + height + PAGE // 2, len(self.ids))
        keep = set(self.ids[lo:hi])
        for tid in [t for t in self._rows if t not in keep]:
            del self._rows[tid]
        self._asked = (self._generation, lo, hi)
        self._read(self.store, self._generation, lo, self.ids[lo:hi])

    def _shown_ids(self) -> list[int]:
        top = int(self.scroll_offset.y)
        return self.ids[top : top + self.scrollable_content_region.height]

    @property
    def current_id(self) -> int | None:
        return self.ids[self.cursor] if 0 <= self.cursor < len(self.ids) else None

    # -- paging: the worker reads, the UI thread only draws what it has --------------------------

    def _page_ahead(self) -> None:
        """Read the rows around the viewport before they are needed: when the rows within PAGE/4 of it are not all
        read, the whole PAGE/2 margin on each side is read in one go (a read per ~50 rows moved, not per row)."""
        if self.store is None or not self.ids:
            return
        top = int(self.scroll_offset.y)
        height = max(self.scrollable_content_region.height, 20)
        near_lo, near_hi = max(top - PAGE // 4, 0), min(top + height + PAGE // 4, len(self.ids))
        rows, ids = self._rows, self.ids
        if all(ids[i] in rows for i in range(near_lo, near_hi)):
            return
        lo, hi = max(top - PAGE // 2, 0), min(top + height + PAGE // 2, len(self.ids))
        missing = [i for i in range(lo, hi) if ids[i] not in rows]
        if not missing:
            return
        start, end = missing[0], missing[-1] + 1
        asked = self._asked
        if asked and asked[0] == self._generation and asked[1] <= start and end <= asked[2]:
            return  # already being read
        self._asked = (self._generation, start, end)
        self._read(self.store, self._generation, start, self.ids[start:end])

    @work(thread=True, exclusive=True, group="trace-pages", exit_on_error=False)
    def _read(self, store: RunStore, generation: int, start: int, ids: list[int]) -> None:
        rows = store.trace_summaries(ids)
        by_id = {r[0]: format_row(r) for r in rows}
        self.post_message(self.RowsLoaded(store, generation, start, by_id))

    def on_trace_table_rows_loaded(self, message: TraceTable.RowsLoaded) -> None:
        message.stop()
        if message.store is not self.store:
            return  # rows of a run no longer open
        rows = message.rows
        # Repainted only when a row on screen is new or differs: rows read ahead of the viewport, or read again
        # unchanged after a change elsewhere, repaint nothing.
        changed = any(tid in rows and self._rows.get(tid) != rows[tid] for tid in self._shown_ids())
        self._rows.update(rows)  # rows are keyed by trace id: still right under another sort
        for tid in rows:
            self._rows.move_to_end(tid)
        self._trim()
        if self._asked and self._asked[1] == message.start:
            self._asked = None
        if changed:
            self.refresh()
        self._page_ahead()

    def _trim(self) -> None:
        """Drop the least recently used rows beyond MAX_ROWS (those on screen were just drawn: they stay)."""
        # Never fewer than two read-ahead windows: evicting rows of the window being read would read them again.
        limit = max(MAX_ROWS, 2 * (PAGE + max(self.scrollable_content_region.height, 20)))
        while len(self._rows) > limit:
            self._rows.popitem(last=False)

    # -- drawing ---------------------------------------------------------------------------------

    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y = self.scroll_offset
        width = self.scrollable_content_region.width
        if y == 0:  # the sorted column's title is drawn reversed
            style = self.get_component_rich_style("trace-table--header")
            segs = []
            for c, cell in zip(COLUMNS, header_cells()):
                segs += [Segment(cell, style + Style(reverse=True) if c.key == self.sort else style), Segment(" ", style)]
            segs.append(Segment(" " * max(WIDTH - sum(len(s.text) for s in segs), 0), style))
            return Strip(segs).crop(scroll_x, scroll_x + width)
        index = scroll_y + y - 1
        if index >= len(self.ids):
            return Strip.blank(width)
        tid = self.ids[index]
        text = self._rows.get(tid)
        if text is not None:
            self._rows.move_to_end(tid)
        style = self.get_component_rich_style("trace-table--cursor") if index == self.cursor else Style()
        if text is None:  # not read yet: the worker is on it
            text, style = f"{self.ids[index]:>6} …", style + Style(dim=True)
        return Strip([Segment(text.ljust(WIDTH), style)]).crop(scroll_x, scroll_x + width)

    def watch_scroll_y(self, old: float, new: float) -> None:
        super().watch_scroll_y(old, new)
        self._page_ahead()

    def on_resize(self) -> None:
        self._page_ahead()

    def _scroll_cursor_into_view(self, centre: bool = False) -> None:
        top = int(self.scroll_offset.y)
        rows = max(self.scrollable_content_region.height - 1, 1)  # less the header line
        new = self.cursor
        if centre:
            self.scroll_to(y=max(new - rows // 2, 0), animate=False)
        elif new < top:
            self.scroll_to(y=new, animate=False)
        elif new >= top + rows:
            self.scroll_to(y=new - rows + 1, animate=False)

    def watch_cursor(self, old: int, new: int) -> None:
        self.refresh()
        self._scroll_cursor_into_view()
        self.post_message(self.Highlighted(self, self.current_id))

    def action_move(self, delta: int) -> None:
        if self.ids:
            self.cursor = max(0, min(len(self.ids) - 1, self.cursor + delta))

    def action_jump(self, index: int) -> None:
        if self.ids:
            self.cursor = index % len(self.ids)

    def on_click(self, event: events.Click) -> None:
        if event.y == 0:  # the header: which column is under the pointer
            x = int(self.scroll_offset.x) + event.x
            for c in COLUMNS:
                if x < c.width + 1:
                    self.post_message(self.HeaderClicked(c.key))
                    break
                x -= c.width + 1
        index = int(self.scroll_offset.y) + event.y - 1
        if event.y >= 1 and 0 <= index < len(self.ids):
            self.cursor = index
        self.focus()
