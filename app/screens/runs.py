"""Runs, newest first: open one, or mark two and compare their curves on one chart."""

from __future__ import annotations

import time

import numpy as np
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Input, Static

from app.widgets.chart import PALETTE, Line, LineChart
from engine.runner import supervisor as sup
from engine.store import RunStore


class RunsScreen(Screen):
    BINDINGS = [
        Binding("enter", "open_run", "Open"),
        Binding("space", "mark", "Mark to compare"),
        Binding("f", "reload", "Refresh"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.marked: list[str] = []
        self.paths: dict[str, object] = {}

    def compose(self) -> ComposeResult:
        yield Header()
        with Vertical():
            yield DataTable(id="runs", cursor_type="row", zebra_stripes=True)
            with Horizontal(id="compare-bar"):
                yield Static(Text("compare stage/key:"), id="compare-label")
                yield Input(value="grpo/reward", id="compare-key")
            yield LineChart("compare two runs (mark with space)", id="compare-chart")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#runs", DataTable).add_columns("", "run", "name", "created", "state", "stages")
        self.action_reload()

    def on_screen_resume(self) -> None:
        self.action_reload()

    @work(thread=True, exclusive=True, group="runs", exit_on_error=False)
    def action_reload(self) -> None:
        runs = sup.list_runs(self.app.runs_dir)  # type: ignore[attr-defined]
        self.app.call_from_thread(self._show, runs)

    def _show(self, runs) -> None:
        table = self.query_one("#runs", DataTable)
        table.clear()
        self.paths = {}
        for r in runs:
            self.paths[r.id] = r.path
            stages = " ".join(f"{s.name}:{s.status}" for s in r.stages if s.selected)
            mark = "●" if r.id in self.marked else ""
            table.add_row(mark, r.id, Text(r.name), time.strftime("%Y-%m-%d %H:%M", time.localtime(r.created)), r.state,
                          Text(stages), key=r.id)

    def _selected(self) -> str | None:
        table = self.query_one("#runs", DataTable)
        if not table.row_count:
            return None
        return str(table.get_row_at(table.cursor_row)[1])

    def action_open_run(self) -> None:
        run_id = self._selected()
        if run_id:
            self.app.open_run(self.paths[run_id])  # type: ignore[attr-defined]
            self.app.switch_mode("pipeline")

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        self.action_open_run()

    def action_mark(self) -> None:
        run_id = self._selected()
        if not run_id:
            return
        if run_id in self.marked:
            self.marked.remove(run_id)
        else:
            self.marked = (self.marked + [run_id])[-2:]
        self.action_reload()
        self.compare()

    def on_input_submitted(self) -> None:
        self.compare()

    @work(thread=True, exclusive=True, group="compare", exit_on_error=False)
    def compare(self) -> None:
        stage, _, key = self.query_one("#compare-key", Input).value.partition("/")
        lines = []
        for i, run_id in enumerate(self.marked):
            with RunStore(self.paths[run_id] / "run.db") as store:  # type: ignore[operator]
                _, steps, values = store.metric_series(stage, key)
            vals = np.array([np.nan if v is None else v for v in values], dtype=float)
            lines.append(Line(run_id, np.asarray(steps, dtype=float), vals, PALETTE[i]))
        self.app.call_from_thread(self.query_one("#compare-chart", LineChart).set_lines, lines)
