"""Evaluation: the battery grid (pass/fail per test and model), ratings with intervals, the checklist, export."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from rich.table import Table
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.widgets import DataTable, Footer, Header, ProgressBar, Static

from app.screens.base import ReadingScreen
from app.widgets.quiet import update_if_changed
from engine.store import RunStore
from engine.text import inert


class EvalScreen(ReadingScreen):
    BINDINGS = [
        Binding("s", "app.start_stage('eval')", "start eval/export…"),  # the app's start key, eval picked
        Binding("f", "reload", "refresh"),
    ]

    @dataclass
    class Loaded(Message):
        """The eval results of a run, read by a worker thread."""

        run_dir: Path | None
        battery: dict[str, dict] = field(default_factory=dict)
        ratings: dict[str, dict] = field(default_factory=dict)
        checklist: dict[str, dict] = field(default_factory=dict)
        exports: list[dict] = field(default_factory=list)

    def __init__(self) -> None:
        super().__init__()
        self.battery: dict[str, dict] = {}
        self._seen = None
        self._shown: tuple | None = None  # what the grid and panes show, as read: read again on each visit

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal():
            with Vertical():
                yield DataTable(id="eval-grid", cursor_type="cell")
                yield VerticalScroll(Static(id="eval-output-text"), id="eval-output")
            with VerticalScroll():
                yield Static(id="ratings")
                yield Static(id="checklist")
                yield Static(id="export-status")
                bar = ProgressBar(id="export-progress", show_eta=False)
                bar.display = False
                yield bar
        yield Footer(compact=True, show_command_palette=False)  # q and ? stay on at 80 columns (ctrl+p: palette)

    def on_screen_resume(self) -> None:  # also the first time the screen is shown
        self.action_reload()

    def update_from(self, model) -> None:
        export = model.stage("export")
        bar = self.query_one("#export-progress", ProgressBar)
        # No bar until the export has a total: an empty bar would pulse as if something were running.
        bar.display = bool(export is not None and export.progress_total)
        if bar.display:
            bar.update(total=export.progress_total, progress=export.progress or 0)
        status = Text("export: ")
        status.append(export.status if export else "not in this run", style="bold")
        if export is not None and export.progress_label:
            status.append(f"  {export.progress_label}")
        update_if_changed(self.query_one("#export-status", Static), status)  # every poll: drawn when it changed
        key = model.status_key("eval", "export", "ties")
        if key != self._seen:
            self._seen = key
            self.action_reload()

    def action_reload(self) -> None:
        self._load(self.app.model.run_dir)  # type: ignore[attr-defined]

    @work(thread=True, exclusive=True, group="eval-load", exit_on_error=False)
    def _load(self, run_dir: Path | None) -> None:
        if run_dir is None:
            self.post_message(self.Loaded(None))
            return
        with RunStore(run_dir / "run.db", readonly=True) as store:
            self.post_message(self.Loaded(run_dir, store.results("eval", "battery"), store.results("eval", "ratings"),
                                          store.results("eval", "checklist"), store.artifacts("export")))

    def on_eval_screen_loaded(self, message: Loaded) -> None:
        if message.run_dir != self.app.model.run_dir:  # type: ignore[attr-defined]
            return  # read for a run no longer open
        shown = (message.run_dir, message.battery, message.ratings, message.checklist, message.exports)
        if shown == self._shown:
            return  # the same results as drawn: the grid is not rebuilt
        self._shown = shown
        grid = self.query_one("#eval-grid", DataTable)
        grid.clear(columns=True)
        if message.run_dir is None:
            self.query_one("#ratings", Static).update(Text("no run open", style="dim"))
            return
        self.battery, ratings, checklist = message.battery, message.ratings, message.checklist
        models = sorted({r["model"] for r in self.battery.values()})
        tests = list(dict.fromkeys(r["test"] for r in self.battery.values()))  # the battery's own order
        if not self.battery:
            self.query_one("#eval-output-text", Static).update(Text("no battery results yet: run the eval stage (s)", style="dim"))
        grid.add_columns("test", *models)
        for test in tests:
            cells = []
            for m in models:
                r = self.battery.get(f"{m}/{test}")
                cells.append(Text("") if r is None else Text("pass", style="green") if r["passed"] else Text("FAIL", style="red"))
            grid.add_row(test, *cells, key=test)
        table = Table("model", "rating", "95% interval", "W-L-T", title="tournament ratings (Bradley-Terry, Elo scale)", box=None)
        for name, r in sorted(ratings.items(), key=lambda kv: -kv[1]["rating"]):
            table.add_row(name, f"{r['rating']:.0f}", f"{r['lo']:.0f} .. {r['hi']:.0f}", f"{r['wins']}-{r['losses']}-{r['ties']}")
        self.query_one("#ratings", Static).update(table)
        text = Text("success checklist\n", style="bold")
        for item, r in checklist.items():
            text.append("  ✓ " if r["passed"] else "  ✗ ", style="green" if r["passed"] else "red")
            text.append(f"{item}: {inert(r['detail'])}\n")
        for a in message.exports:
            text.append(f"\n{a['kind']}: {a['path']}", style="dim")
        self.query_one("#checklist", Static).update(text)

    def on_data_table_cell_highlighted(self, event: DataTable.CellHighlighted) -> None:
        grid = self.query_one("#eval-grid", DataTable)
        if event.coordinate.column == 0 or not grid.row_count:
            return
        test = str(grid.get_row_at(event.coordinate.row)[0])
        model = str(grid.ordered_columns[event.coordinate.column].label)
        r = self.battery.get(f"{model}/{test}")
        out = Text()
        if r:
            out.append(f"{inert(test)} on {inert(model)}: {'pass' if r['passed'] else 'FAIL'}  ({inert(r['detail'])})\n\n",
                       style="bold")
            out.append(inert(r["output"]))  # model output: literal and inert
        self.query_one("#eval-output-text", Static).update(out)
