"""Trace review: a paged table over every trace, filters and sorting, the trace in full, and score edits.

Every read of the run database runs in a thread worker that hands back a message; edits go through one writer
thread, in the order they were made, each keyed by the trace it was typed on. A value is shown once its transaction
committed (until then the pane says "saving"); a failed commit says why in one line. A run that cannot be written
opens read-only and says so. The UI thread only draws.
"""

from __future__ import annotations

import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Footer, Header, Static

from app.failures import ReportsFailures
from app.screens.trace_agreement import AgreementPane
from app.screens.trace_detail import DetailScroll, EditDone, IdsLoaded, TraceLoaded, TraceView, make_view, scores_text
from app.screens.trace_dialogs import Filters, FilterScreen, ScoreInput, SortPicker
from app.widgets.quiet import update_if_changed
from app.widgets.trace_table import TraceTable, format_row, legend, sort_label
from app.screens.base import QuickResume
from engine.dims import DIMENSIONS, SHORT
from engine.errors import UserError
from engine.store import RunStore, open_for_edits, write_failure
from engine.text import inert

SIGNATURE_S = 1.0  # how often the run is checked for traces or edits from elsewhere
SAVING_AFTER_S = 0.05  # "saving…" is said for an edit not committed by then (a quick commit shows its row at once)


class TracesScreen(ReportsFailures, AgreementPane, QuickResume, Screen):
    BINDINGS = [
        Binding("escape", "focus_table", "Table", show=False),
        Binding("left_square_bracket", "dim(-1)", "prev dim", show=False),
        Binding("right_square_bracket", "dim(1)", "dim", key_display="[ ]"),
        Binding("plus,equals_sign", "nudge(0.1)", "score ±0.1", key_display="+/-"),
        Binding("minus", "nudge(-0.1)", "score -0.1", show=False),
        Binding("enter", "set_score", "type"),
        Binding("x", "reset_score", "judge's score", show=False),
        Binding("u", "undo", "undo"),
        Binding("v", "toggle_reviewed", "reviewed", show=False),
        Binding("g", "next_unreviewed", "next unreviewed", show=False),
        Binding("o", "pick_sort", "sort", show=False),
        Binding("O", "reverse_sort", "reverse sort", show=False),
        Binding("slash", "filters", "filter"),
        Binding("a", "toggle_agreement", "agreement", show=False),
        Binding("end", "detail_end", "whole trace", show=False),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.store: RunStore | None = None
        self.dim_index = 0
        self.sort = "id"
        self.descending = False
        self.filters = Filters()
        self.categories: list[str] = []
        self.view: TraceView | None = None
        self._shown_chunks = 0
        self._run = None
        self._last_total = -1
        self._generation = 0
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="trace-edits")  # edits stay in order
        self._agreement: dict[str, dict] = {}
        self._agreement_dims: set[str] = set()
        self._agreement_timer = None
        self._count_text = ""
        self.readonly_reason: str | None = None  # why edits are off (a read-only run), or None
        self._pending: dict[int, int] = {}  # trace id -> edits queued and not yet committed
        self._signature: tuple | None = None  # what the table shows was read at this review state
        self._signature_at = 0.0
        self._edit_store: RunStore | None = None  # the writer thread's connection (opened and used there only)

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(id="trace-filterbar")
        with Horizontal(id="trace-main"):
            with Vertical(id="trace-left"):
                yield Static(Text(legend(), style="dim"), id="trace-legend")
                yield TraceTable(id="trace-table")
                yield Static(id="trace-count")
                yield Static(id="agreement")
            with DetailScroll(id="trace-detail"):
                yield Static(id="trace-save")
                yield Static(id="trace-scores")
                yield Vertical(id="trace-body")
                yield Static(id="trace-more")
        yield Footer(compact=True, show_command_palette=False)  # q and ? stay on at 80 columns (ctrl+p: palette)

    def on_mount(self) -> None:
        self.query_one("#agreement").display = False
        self.open_store()

    def on_unmount(self) -> None:
        self._writer.submit(self._close_edit_store)
        self._writer.shutdown(wait=False)

    def on_screen_resume(self) -> None:
        if self._run != self.app.model.run_dir:  # type: ignore[attr-defined]
            self.open_store()

    def open_store(self) -> None:
        """Another run: its database is opened in a worker too (opening may migrate the schema)."""
        run_dir = self.app.model.run_dir  # type: ignore[attr-defined]
        self._run = run_dir
        if self.store is not None:
            self.store.close()
        self.store = None
        self.query_one(TraceTable).focus()
        if run_dir is None:
            self._store_opened(None, None)
        else:
            self._open(run_dir)

    @work(thread=True, exclusive=True, group="trace-open", exit_on_error=False)
    def _open(self, run_dir) -> None:
        store, readonly = open_for_edits(run_dir / "run.db")
        self.app.call_from_thread(self._store_opened, run_dir, store, readonly)

    def _store_opened(self, run_dir, store: RunStore | None, readonly: str | None = None) -> None:
        if run_dir != self._run:  # another run was opened meanwhile
            if store is not None:
                store.close()
            return
        self.store = store
        self.readonly_reason = readonly
        self._pending.clear()
        self._signature = None
        self._draw_save_state()
        if readonly:
            self.notify(inert(readonly, oneline=True), severity="warning", timeout=10, markup=False)
        self._agreement = {}
        self.reload()
        self.refresh_agreement(None)

    def update_from(self, model) -> None:
        """New traces (datagen or judge running), or edits made by another panel or process, are looked for in a
        worker at most every SIGNATURE_S (the look is a scan of the traces table); on a change the rows on screen
        and the trace pane are read again."""
        now = time.monotonic()
        if self.store is not None and now - self._signature_at >= SIGNATURE_S:
            self._signature_at = now
            self._count(self.store)

    @work(thread=True, exclusive=True, group="trace-count", exit_on_error=False)
    def _count(self, store: RunStore) -> None:
        try:
            signature = store.review_signature()
        except (sqlite3.Error, OSError):
            return  # the app's poller says what is wrong with the database
        self.app.call_from_thread(self._counted, store, signature)

    def _counted(self, store: RunStore, signature: tuple) -> None:
        if store is not self.store or signature == self._signature:
            return
        old, self._signature = self._signature, signature
        if old is None:
            self.reload()
            return
        # Someone changed the run (or it is the echo of this panel's own edit): the rows on screen are read again
        # (repainted only where they differ), and the id list only when its order or membership can have moved.
        table = self.query_one(TraceTable)
        table.reread_rows()
        self.show_trace(table.current_id)
        if old[2] != signature[2] or self._order_follows_scores():
            self.reload()

    def _order_follows_scores(self) -> bool:
        """Whether an edit (a score, an undo, a reviewed mark) can move traces in or out of the list or in its
        order: sorted by a score, the weighted score or the reviewed mark, or filtered on the score or review."""
        f = self.filters
        return (self.sort not in ("id", "category", "tier", "judge_failed") or f.min_score is not None
                or f.max_score is not None or f.unreviewed)

    @property
    def weights(self) -> dict[str, float]:
        return self.app.run_weights()  # type: ignore[attr-defined]

    # -- the id list: read in a worker ----------------------------------------------------------------

    def reload(self, keep: int | None = None) -> None:
        table = self.query_one(TraceTable)
        table.sort, table.descending = self.sort, self.descending
        update_if_changed(self.query_one("#trace-filterbar", Static), Text(
            f"{sort_label(self.sort, self.descending)}   filters: {self.filters.describe()}   (o sort, / filter)",
            style="dim"))
        if self.store is None:
            table.load(None, [])
            update_if_changed(self.query_one("#trace-count", Static), Text("no run open", style="dim"))
            return
        self._generation += 1
        self._read_ids(self.store, self._generation, self.filters, self.sort, self.descending, keep)

    @work(thread=True, exclusive=True, group="trace-ids", exit_on_error=False)
    def _read_ids(self, store: RunStore, generation: int, filters: Filters, sort: str, descending: bool,
                  keep: int | None) -> None:
        ids = store.filtered_trace_ids(**filters.as_kwargs(), sort=sort, descending=descending)
        self.post_message(IdsLoaded(generation, ids, store.trace_count(), store.trace_categories(), keep))

    def on_ids_loaded(self, message: IdsLoaded) -> None:
        if message.generation != self._generation:
            return
        self._last_total = message.total
        self.categories = message.categories
        table = self.query_one(TraceTable)
        # The cursor stays on the trace it is on now (keys typed while the ids were read moved it), never jumps back.
        keep = table.current_id if message.keep is None else message.keep
        if table.store is not self.store or message.ids != table.ids or keep != table.current_id:
            table.load(self.store, message.ids, keep=keep)  # the same list in the same place: nothing to redo
        self._count_text = f"{len(message.ids)} of {message.total} traces"
        self._draw_count()

    def _draw_count(self) -> None:
        d = DIMENSIONS[self.dim_index]
        update_if_changed(self.query_one("#trace-count", Static),
                          Text(f"{self._count_text}  ·  editing {SHORT[d]} ({d})  ·  a: agreement", style="dim"))

    # -- the trace in the right pane: read and made inert in a worker, drawn a chunk at a time --------

    def on_trace_table_highlighted(self, message: TraceTable.Highlighted) -> None:
        self._draw_save_state()
        self.show_trace(message.trace_id)

    def show_trace(self, trace_id: int | None) -> None:
        if trace_id is None or self.store is None:
            self.view = None
            update_if_changed(self.query_one("#trace-scores", Static), Text("no trace selected", style="dim"))
            self._draw_body()
            return
        self._read_trace(self.store, trace_id, self.dim_index, self._scores_width())

    def _scores_width(self) -> int:
        return self.query_one("#trace-scores", Static).content_region.width

    @work(thread=True, exclusive=True, group="trace-detail", exit_on_error=False)
    def _read_trace(self, store: RunStore, trace_id: int, dim_index: int, width: int) -> None:
        self.post_message(TraceLoaded(make_view(store.trace(trace_id), dim_index, width)))

    def on_trace_loaded(self, message: TraceLoaded) -> None:
        if message.view.trace["id"] != self.query_one(TraceTable).current_id:
            return  # a read for a row the cursor has already left
        same = self.view is not None and self.view.trace["id"] == message.view.trace["id"]
        self.view = message.view
        self._draw_scores()
        if not same:  # an edit re-reads the trace: its text did not change, keep the reader's place
            self._draw_body()

    def _draw_scores(self) -> None:
        """The scores table, drawn by the worker that read the trace (or here, for another dimension or width)."""
        view = self.view
        if view is None:
            return
        want = (self.dim_index, self._scores_width())
        if view.scores is None or view.scores_for != want:
            view.scores, view.scores_for = scores_text(view.trace, *want), want
        update_if_changed(self.query_one("#trace-scores", Static), view.scores, layout="lines")

    def on_resize(self) -> None:
        self._draw_scores()

    def _draw_body(self) -> None:
        """Another trace: its first part goes into the part widget already there (one layout pass, no widget
        unmounted and mounted per cursor move); parts of a longer trace shown before are removed."""
        body = self.query_one("#trace-body", Vertical)
        parts = list(body.children)
        self._shown_chunks = 0
        self.query_one("#trace-detail", DetailScroll).scroll_home(animate=False)
        keep = 1 if parts and self.view is not None and self.view.chunks else 0
        if len(parts) > keep:
            body.remove_children(parts[keep:])
        if keep:
            parts[0].update(self.view.chunks[0])  # type: ignore[union-attr]
            self._shown_chunks = 1
        self._more_chunks(0 if keep else 1)

    def _more_chunks(self, n: int) -> None:
        view = self.view
        more = self.query_one("#trace-more", Static)
        if view is None:
            update_if_changed(more, Text(""))
            return
        new = view.chunks[self._shown_chunks : self._shown_chunks + n]
        if new:
            self.query_one("#trace-body", Vertical).mount_all([Static(chunk, classes="trace-chunk") for chunk in new])
            self._shown_chunks += len(new)
        left = len(view.chunks) - self._shown_chunks
        update_if_changed(more, Text(f"… {left} more part(s) of {view.lines} lines: scroll on, or End for all",
                                     style="dim") if left else Text(""))

    @on(DetailScroll.NearEnd)
    def _near_end(self) -> None:
        if self.view is not None and self._shown_chunks < len(self.view.chunks):
            self._more_chunks(1)

    def action_detail_end(self) -> None:
        if self.view is not None:
            self._more_chunks(len(self.view.chunks))
            self.query_one("#trace-detail", DetailScroll).scroll_end(animate=False)

    # -- edits: one writer thread, in order, each on the trace it was typed on ------------------------------

    def _edit_store_for(self, path) -> RunStore:
        """The writer thread's own connection to the run (reads on the screen's connection never delay a commit)."""
        if self._edit_store is not None and self._edit_store.path != path:
            self._close_edit_store()
        if self._edit_store is None:
            self._edit_store = RunStore(path)
        return self._edit_store

    def _close_edit_store(self) -> None:
        if self._edit_store is not None:
            self._edit_store.close()
            self._edit_store = None

    def _edit(self, trace_id: int, dim: str, job, note=None) -> None:
        """Queue `job(store)` (a write for trace `trace_id`) on the writer thread, which has its own connection;
        EditDone says how it ended and carries the row as committed."""
        if self.readonly_reason:
            self.notify(inert(self.readonly_reason, oneline=True), severity="error", markup=False)
            return
        path = self.store.path if self.store is not None else "run.db"

        def run() -> None:
            try:
                store = self._edit_store_for(path)
                result = job(store)
                rows = store.trace_summaries([trace_id])
            except UserError as err:
                self.post_message(EditDone(trace_id, dim, None, str(err)))
            except (sqlite3.Error, OSError) as err:  # a read-only file, a full disk: said, never lost in the pool
                self.post_message(EditDone(trace_id, dim, None, "edit not saved: " + write_failure(err, path)))
            except Exception as err:  # noqa: BLE001 - whatever it was, the panel must not show it as saved
                self.post_message(EditDone(trace_id, dim, None, f"edit not saved: {type(err).__name__}: {err}"))
            else:
                row = format_row(rows[0]) if rows else None
                self.post_message(EditDone(trace_id, dim, note(result) if note else None, row=row))

        self._pending[trace_id] = self._pending.get(trace_id, 0) + 1
        self.set_timer(SAVING_AFTER_S, self._draw_save_state)
        self._writer.submit(run)

    def on_edit_done(self, message: EditDone) -> None:
        left = self._pending.get(message.trace_id, 1) - 1
        if left > 0:
            self._pending[message.trace_id] = left
        else:
            self._pending.pop(message.trace_id, None)
        self._draw_save_state()
        if message.error:
            self.notify(inert(message.error, oneline=True), severity="error", markup=False)
        elif message.note:
            self.notify(message.note, markup=False)
        table = self.query_one(TraceTable)
        if message.row is not None:
            table.set_row(message.trace_id, message.row)  # the committed row, repainted in the next frame
        else:
            table.invalidate(message.trace_id)
        if message.trace_id == table.current_id:  # what is shown is what the database holds now
            self.show_trace(message.trace_id)
        if not message.error:
            if self._order_follows_scores():
                self.reload()  # the edited row moves to its place in the sort order; the cursor stays where it is
            self.refresh_agreement(message.dim)

    def _draw_save_state(self) -> None:
        line = self.query_one("#trace-save", Static)
        tid = self.query_one(TraceTable).current_id
        if self.readonly_reason:
            update_if_changed(line, Text(f"read-only: {inert(self.readonly_reason, oneline=True)}", style="bold yellow"))
        elif tid in self._pending:  # one line, always: repainted without a layout pass
            n = self._pending[tid]
            update_if_changed(line, Text(f"saving {n} edit{'s' if n > 1 else ''} of trace {tid}…", style="yellow",
                                         no_wrap=True, overflow="ellipsis"), layout=False)
        else:
            update_if_changed(line, Text(""), layout=False)

    def _current_id(self) -> int | None:
        return self.query_one(TraceTable).current_id if self.store is not None else None

    def _current(self) -> dict | None:
        tid = self.query_one(TraceTable).current_id
        return self.view.trace if self.view is not None and self.view.trace["id"] == tid else None

    def _set(self, trace_id: int, value: float | None) -> None:
        dim, store, weights = DIMENSIONS[self.dim_index], self.store, self.weights
        if store is not None:
            self._edit(trace_id, dim, lambda s: s.edit_score(trace_id, dim, value, weights))

    def action_dim(self, delta: int) -> None:
        self.dim_index = (self.dim_index + delta) % len(DIMENSIONS)
        self._draw_scores()
        self._draw_count()

    def action_nudge(self, delta: float) -> None:
        """On the trace under the cursor now, from the score the database holds when the edit commits (so keys
        typed faster than the pane redraws each count once, on the trace they were typed on)."""
        tid, store, weights = self._current_id(), self.store, self.weights
        if tid is None or store is None:
            return
        dim = DIMENSIONS[self.dim_index]
        self._edit(tid, dim, lambda s: s.nudge_score(tid, dim, delta, weights))

    def action_set_score(self) -> None:
        t = self._current()
        if not t:
            return
        dim = DIMENSIONS[self.dim_index]
        current = t["effective"][dim] if t["effective"] else None

        def done(value: float | None) -> None:
            if value is not None:
                self._set(t["id"], value)

        self.app.push_screen(ScoreInput(dim, current), done)

    def action_reset_score(self) -> None:
        t = self._current()
        if t and DIMENSIONS[self.dim_index] in t["human"]:
            self._set(t["id"], None)

    def action_undo(self) -> None:
        t, store, weights = self._current(), self.store, self.weights
        if not t or store is None:
            return
        judge = dict(t["judge"] or {})

        def say(undone: dict | None) -> str:
            if undone is None:
                return f"trace {t['id']}: nothing to undo"
            d = undone["dim"]

            def val(v: float | None) -> str:
                return f"{v:.2f}" if v is not None else f"{judge[d]:.2f} (the judge's)" if judge.get(d) is not None else "none"

            return f"undid {SHORT[d]} ({d}) on trace {t['id']}: {val(undone['new'])} -> {val(undone['old'])}"

        self._edit(t["id"], DIMENSIONS[self.dim_index], lambda s: s.undo_edit(t["id"], weights), say)

    def action_toggle_reviewed(self) -> None:
        t, store = self._current(), self.store
        if t and store:
            self._edit(t["id"], DIMENSIONS[self.dim_index], lambda s: s.set_reviewed(t["id"], not t["reviewed"]))

    def action_next_unreviewed(self) -> None:
        if self.store is not None:
            table = self.query_one(TraceTable)
            self._find_unreviewed(self.store, list(table.ids), table.cursor)

    @work(thread=True, exclusive=True, group="trace-find", exit_on_error=False)
    def _find_unreviewed(self, store: RunStore, ids: list[int], cursor: int) -> None:
        unreviewed = set(store.filtered_trace_ids(unreviewed=True))
        order = ids[cursor + 1 :] + ids[: cursor + 1]
        nxt = next((i for i in order if i in unreviewed), None)
        self.app.call_from_thread(self._go_to, nxt)

    def _go_to(self, trace_id: int | None) -> None:
        table = self.query_one(TraceTable)
        if trace_id is None:
            self.notify("every trace in view is reviewed")
        elif trace_id in table.ids:
            table.cursor = table.ids.index(trace_id)

    # -- sorting and filtering -------------------------------------------------------------------------

    def _sort_by(self, key: str | None) -> None:
        if key is None:
            return
        if key == self.sort:
            self.descending = not self.descending
        else:
            self.sort, self.descending = key, key not in ("id", "category", "tier")  # scores: best first
        self.reload()

    def action_pick_sort(self) -> None:
        self.app.push_screen(SortPicker(self.sort), self._sort_by)

    def on_trace_table_header_clicked(self, message: TraceTable.HeaderClicked) -> None:
        self._sort_by(message.key)

    def action_reverse_sort(self) -> None:
        self.descending = not self.descending
        self.reload()

    def action_filters(self) -> None:
        def chosen(f: Filters | None) -> None:
            if f is not None:
                self.filters = f
                self.reload()

        self.app.push_screen(FilterScreen(self.filters, self.categories), chosen)

    def action_focus_table(self) -> None:
        self.query_one(TraceTable).focus()
