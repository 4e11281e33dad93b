"""The pipeline: every stage of the open run with status, attempts, durations, fallbacks and reasons; control."""

from __future__ import annotations

import time

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, RichLog, Static
from textual.widgets.data_table import CellDoesNotExist

from app.run_model import RunModel
from app.widgets.quiet import update_if_changed
from app.screens.base import QuickResume
from engine.progress import duration, progress_cell
from engine.registry import STAGES
from engine.runner import supervisor as sup
from engine.text import cut_words, inert

STATUS_STYLE = {"succeeded": "green", "failed": "red", "crashed": "bold red", "cancelled": "yellow",
                "running": "bold cyan", "pending": "dim", "skipped": "dim italic"}


def _elapsed(started: float | None, ended: float | None) -> str:
    """How long a stage ran (or has run so far), in engine.progress.duration's words."""
    return duration((ended or time.time()) - started) if started else ""


def _reason(s, width: int) -> Text:
    """Why a stage ended; while it runs, what it is doing (its progress label: e.g. building the demo model).
    Cut after a whole word to the width left on screen (the whole reason is in the log pane and `aba status`)."""
    if s.status == "running" and s.progress_label:
        return Text(cut_words(inert(s.progress_label, oneline=True), width), style="dim")
    return Text(cut_words(inert(s.reason or "", oneline=True), width))


class PipelineScreen(QuickResume, Screen):
    # The run-control keys (n s c r k e) are the app's, the same on every screen; here they act on the selected row.
    BINDINGS = [
        Binding("n", "app.new_run", "new"),
        Binding("s", "app.start_stage", "start"),
        Binding("c", "app.cancel", "cancel"),
        Binding("r", "app.resume_run", "resume"),
        Binding("k", "app.skip", "skip"),
        Binding("e", "app.edit_config", "config"),
    ]

    def compose(self) -> ComposeResult:
        yield Header()
        with Vertical():
            yield Static(id="run-title")
            yield DataTable(id="stages", cursor_type="row", zebra_stripes=True)
            yield RichLog(id="pipeline-log", markup=False, highlight=False, wrap=True, max_lines=500)
        yield Footer(compact=True, show_command_palette=False)  # q and ? stay on at 80 columns (ctrl+p: palette)

    def on_mount(self) -> None:
        table = self.query_one("#stages", DataTable)
        table.add_columns("stage", "status", "attempts", "time", "progress", "fallbacks", "reason")
        self._last_log = 0
        self._shown_run = None
        self._shown_rows: list[tuple] = []  # the stage table's rows as drawn (key and cells), to redraw only changes
        self._events_seen = 0
        self._fallbacks: dict[str, int] = {}
        self.update_from(self.app.model)  # type: ignore[attr-defined]

    def on_screen_resume(self) -> None:
        self.update_from(self.app.model)  # type: ignore[attr-defined]

    def _draw_rows(self, table: DataTable, rows: list[tuple]) -> None:
        """The same stages as drawn: only the cells that differ are set; other stages: the table is rebuilt."""
        def same(a, b) -> bool:
            return a == b if not isinstance(a, Text) else isinstance(b, Text) and (a.plain, a.style) == (b.plain, b.style)

        old = self._shown_rows
        changed = False
        if [k for k, _ in old] == [k for k, _ in rows] and table.row_count == len(rows):
            columns = list(table.columns)
            for (key, cells), (_, before) in zip(rows, old):
                for col, new, was in zip(columns, cells, before):
                    if not same(new, was):
                        table.update_cell(key, col, new, update_width=True)
                        changed = True
        else:
            keep = table.cursor_row
            table.clear()
            for key, cells in rows:
                table.add_row(*cells, key=key)
            if table.row_count:
                table.move_cursor(row=min(keep, table.row_count - 1))
            changed = True
        if changed and rows:
            # DataTable measures columns when idle, after it may have drawn (and cached) rows at the old widths; its
            # row cache is not keyed by width. Setting a cell again (same value) once the widths are in drops that
            # cache. (Rebuilt on every poll, as it was, the table hid this.)
            first_key, first_cells = rows[0]
            table.call_after_refresh(self._redraw_cell, table, first_key, first_cells[0])
        self._shown_rows = rows

    @staticmethod
    def _redraw_cell(table: DataTable, key: str, value) -> None:
        try:
            table.update_cell(key, next(iter(table.columns)), value)
        except CellDoesNotExist:  # rebuilt again meanwhile: that rebuild brings its own
            pass

    def selected_stage(self) -> str | None:
        table = self.query_one("#stages", DataTable)
        if table.row_count == 0:
            return None
        return str(table.get_row_at(table.cursor_row)[0])

    def update_from(self, model: RunModel) -> None:
        """Every poll: the title and the stage table say where the run is. A row is redrawn only where a cell
        changed (a poll that changed nothing redraws nothing: no table rebuilt five times a second)."""
        if not self.query("#run-title"):
            return  # a poll that landed before the screen was composed
        app = self.app
        title = self.query_one("#run-title", Static)
        if model.run_dir is None:
            cfg = getattr(app, "config_path", None)
            head = Text(f"No run open. Press n to start a new run from {cfg}" if cfg else
                        "No run open. Press F5 to open one, or n to start one from a config file.", style="bold")
        else:
            running = [s.name for s in model.stages if s.status == "running"]
            state = sup.run_state(model.stages)  # the word `aba status` and `aba runs` use
            if running:
                state = f"running {', '.join(running)}"
            head = Text(f"run {model.run_dir.name}   {state}   (reattach any time: aba-tui {model.run_dir.name})",
                        style="bold")
        table = self.query_one("#stages", DataTable)
        if self._shown_run != model.run_dir or len(model.events) < self._events_seen:
            self._events_seen, self._fallbacks = 0, {}
        for e in model.events[self._events_seen:]:  # new events only: the list grows all run long
            if e.kind == "fallback":
                self._fallbacks[e.stage] = self._fallbacks.get(e.stage, 0) + 1
        self._events_seen = len(model.events)
        fallbacks = self._fallbacks
        stages = model.stages or []
        # The other columns' widths (with their padding), as last drawn: the rest of the screen goes to the reason.
        used = sum(c.get_render_width(table) for c in list(table.columns.values())[:-1])
        reason_w = max(self.size.width - used - 4, 24)
        rows: list[tuple] = []
        if stages:
            for s in stages:
                if not s.selected and s.status == "pending" and s.attempts == 0:
                    continue
                prog = progress_cell(s.status, s.progress, s.progress_total, getattr(app, "etas", {}).get(s.name))
                rows.append((s.name, (s.name, Text(s.status, style=STATUS_STYLE.get(s.status, "")), str(s.attempts),
                                      _elapsed(s.started, s.ended), prog, str(fallbacks.get(s.name, "")),
                                      _reason(s, reason_w))))
        elif model.problem and model.run_dir is not None:  # never "not started" for a run that cannot be read
            head = Text(f"run {model.run_dir.name}   UNREADABLE", style="bold red")
            for name in getattr(app, "draft_stages", None) or STAGES:
                rows.append((name, (name, Text("unknown", style="red"), "", "", "", "",
                                    Text(inert(model.problem, oneline=True), style="red"))))
        else:
            for name in getattr(app, "draft_stages", None) or STAGES:
                rows.append((name, (name, Text("not started", style="dim"), "", "", "", "", Text(""))))
        update_if_changed(title, head)
        self._draw_rows(table, rows)
        log = self.query_one("#pipeline-log", RichLog)
        if self._shown_run != model.run_dir:
            log.clear()
            self._shown_run, self._last_log = model.run_dir, 0
        for row in model.logs:
            if row.id > self._last_log:
                log.write(Text(f"[{row.stage}] {inert(row.message)}", style="red" if row.level == "error" else ""))
        if model.logs:
            self._last_log = max(self._last_log, model.logs[-1].id)
