"""Trace review: a paged table over every trace, filters and sorting, the trace in full, and score edits.

Every read of the run database runs in a thread worker that hands back a message; edits go through one writer
thread, in the order they were made. The UI thread only draws.
"""

from __future__ import annotations

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
from app.screens.trace_detail import DetailScroll, EditDone, IdsLoaded, TraceLoaded, TraceView, make_view, scores_table
from app.screens.trace_dialogs import Filters, FilterScreen, ScoreInput, SortPicker
from app.widgets.trace_table import TraceTable, legend, sort_label
from engine.dims import DIMENSIONS, SHORT
from engine.errors import UserError
from engine.store import RunStore
from engine.text import inert


class TracesScreen(ReportsFailures, AgreementPane, Screen):
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
                yield Static(id="trace-scores")
                yield Vertical(id="trace-body")
                yield Static(id="trace-more")
        yield Footer(compact=True, show_command_palette=False)  # q and ? stay on at 80 columns (ctrl+p: palette)

    def on_mount(self) -> None:
        self.query_one("#agreement").display = False
        self.open_store()

    def on_unmount(self) -> None:
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
        store = RunStore(run_dir / "run.db")
        self.app.call_from_thread(self._store_opened, run_dir, store)

    def _store_opened(self, run_dir, store: RunStore | None) -> None:
        if run_dir != self._run:  # another run was opened meanwhile
            if store is not None:
                store.close()
            return
        self.store = store
        self._agreement = {}
        self.reload()
        self.refresh_agreement(None)

    def update_from(self, model) -> None:
        """New traces may have arrived (datagen or judge running): count them in a worker, reload on change."""
        if self.store is not None and not model.version % 8:
            self._count(self.store)

    @work(thread=True, exclusive=True, group="trace-count", exit_on_error=False)
    def _count(self, store: RunStore) -> None:
        total = store.trace_count()
        self.app.call_from_thread(self._counted, store, total)

    def _counted(self, store: RunStore, total: int) -> None:
        if store is self.store and total != self._last_total:
            self.reload()

    @property
    def weights(self) -> dict[str, float]:
        return self.app.run_weights()  # type: ignore[attr-defined]

    # -- the id list: read in a worker ----------------------------------------------------------------

    def reload(self, keep: int | None = None) -> None:
        table = self.query_one(TraceTable)
        table.sort, table.descending = self.sort, self.descending
        self.query_one("#trace-filterbar", Static).update(
            Text(f"{sort_label(self.sort, self.descending)}   filters: {self.filters.describe()}   (o sort, / filter)",
                 style="dim"))
        if self.store is None:
            table.load(None, [])
            self.query_one("#trace-count", Static).update(Text("no run open", style="dim"))
            return
        self._generation += 1
        self._read_ids(self.store, self._generation, self.filters, self.sort, self.descending,
                       keep if keep is not None else table.current_id)

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
        self.query_one(TraceTable).load(self.store, message.ids, keep=message.keep)
        self._count_text = f"{len(message.ids)} of {message.total} traces"
        self._draw_count()

    def _draw_count(self) -> None:
        d = DIMENSIONS[self.dim_index]
        self.query_one("#trace-count", Static).update(
            Text(f"{self._count_text}  ·  editing {SHORT[d]} ({d})  ·  a: agreement", style="dim"))

    # -- the trace in the right pane: read and made inert in a worker, drawn a chunk at a time --------

    def on_trace_table_highlighted(self, message: TraceTable.Highlighted) -> None:
        self.show_trace(message.trace_id)

    def show_trace(self, trace_id: int | None) -> None:
        if trace_id is None or self.store is None:
            self.view = None
            self.query_one("#trace-scores", Static).update(Text("no trace selected", style="dim"))
            self._draw_body()
            return
        self._read_trace(self.store, trace_id)

    @work(thread=True, exclusive=True, group="trace-detail", exit_on_error=False)
    def _read_trace(self, store: RunStore, trace_id: int) -> None:
        self.post_message(TraceLoaded(make_view(store.trace(trace_id))))

    def on_trace_loaded(self, message: TraceLoaded) -> None:
        if message.view.trace["id"] != self.query_one(TraceTable).current_id:
            return  # a read for a row the cursor has already left
        same = self.view is not None and self.view.trace["id"] == message.view.trace["id"]
        self.view = message.view
        self._draw_scores()
        if not same:  # an edit re-reads the trace: its text did not change, keep the reader's place
            self._draw_body()

    def _draw_scores(self) -> None:
        if self.view is not None:
            self.query_one("#trace-scores", Static).update(scores_table(self.view.trace, self.dim_index))

    def _draw_body(self) -> None:
        body = self.query_one("#trace-body", Vertical)
        body.remove_children()
        self._shown_chunks = 0
        self.query_one("#trace-detail", DetailScroll).scroll_home(animate=False)
        self._more_chunks(1)

    def _more_chunks(self, n: int) -> None:
        view = self.view
        more = self.query_one("#trace-more", Static)
        if view is None:
            more.update("")
            return
        new = view.chunks[self._shown_chunks : self._shown_chunks + n]
        if new:
            self.query_one("#trace-body", Vertical).mount_all([Static(chunk, classes="trace-chunk") for chunk in new])
            self._shown_chunks += len(new)
        left = len(view.chunks) - self._shown_chunks
        more.update(Text(f"… {left} more part(s) of {view.lines} lines: scroll on, or End for all", style="dim")
                    if left else "")

    @on(DetailScroll.NearEnd)
    def _near_end(self) -> None:
        if self.view is not None and self._shown_chunks < len(self.view.chunks):
            self._more_chunks(1)

    def action_detail_end(self) -> None:
        if self.view is not None:
            self._more_chunks(len(self.view.chunks))
            self.query_one("#trace-detail", DetailScroll).scroll_end(animate=False)

    # -- edits: one writer thread, in order; the row is re-sorted and the trace re-read after each ------

    def _edit(self, trace_id: int, dim: str, job, note=None) -> None:
        def run() -> None:
            try:
                result = job()
            except UserError as err:
                self.post_message(EditDone(trace_id, dim, None, str(err)))
                return
            self.post_message(EditDone(trace_id, dim, note(result) if note else None))

        self._writer.submit(run)

    def on_edit_done(self, message: EditDone) -> None:
        if message.error:
            self.notify(inert(message.error, oneline=True), severity="error", markup=False)
            return
        if message.note:
            self.notify(message.note, markup=False)
        self.query_one(TraceTable).invalidate(message.trace_id)
        self.reload(keep=message.trace_id)  # the edited row moves to its place in the sort order; re-read follows
        self.refresh_agreement(message.dim)

    def _current(self) -> dict | None:
        tid = self.query_one(TraceTable).current_id
        return self.view.trace if self.view is not None and self.view.trace["id"] == tid else None

    def _set(self, t: dict, value: float | None) -> None:
        dim, store, weights = DIMENSIONS[self.dim_index], self.store, self.weights
        if store is None:
            return
        if value is not None:  # shown at once; the writer commits it
            t["human"][dim] = value
            if t["effective"] is not None:
                t["effective"][dim] = value
            self._draw_scores()
        self._edit(t["id"], dim, lambda: store.edit_score(t["id"], dim, value, weights))

    def action_dim(self, delta: int) -> None:
        self.dim_index = (self.dim_index + delta) % len(DIMENSIONS)
        self._draw_scores()
        self._draw_count()

    def action_nudge(self, delta: float) -> None:
        t = self._current()
        if not t or t["effective"] is None:
            return
        dim = DIMENSIONS[self.dim_index]
        self._set(t, round(min(1.0, max(0.0, t["effective"][dim] + delta)), 4))

    def action_set_score(self) -> None:
        t = self._current()
        if not t:
            return
        dim = DIMENSIONS[self.dim_index]
        current = t["effective"][dim] if t["effective"] else None

        def done(value: float | None) -> None:
            if value is not None:
                self._set(t, value)

        self.app.push_screen(ScoreInput(dim, current), done)

    def action_reset_score(self) -> None:
        t = self._current()
        if t and DIMENSIONS[self.dim_index] in t["human"]:
            self._set(t, None)

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

        self._edit(t["id"], DIMENSIONS[self.dim_index], lambda: store.undo_edit(t["id"], weights), say)

    def action_toggle_reviewed(self) -> None:
        t, store = self._current(), self.store
        if t and store:
            self._edit(t["id"], DIMENSIONS[self.dim_index], lambda: store.set_reviewed(t["id"], not t["reviewed"]))

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
