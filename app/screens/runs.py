"""Runs with what each one did; marked runs compared: config diff, reward deltas, tournament, one metric overlaid."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from rich.table import Table
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Select, Static

from app.failures import ReportsFailures
from app.widgets.chart import PALETTE, Line, LineChart
from app.screens.base import QuickResume
from engine.dims import DIMENSIONS, SHORT
from engine.progress import duration
from engine.runner import supervisor as sup
from engine.text import inert

from engine.text import cut_middle, inert

STATUS_MARK = {"succeeded": "✓", "failed": "✗", "crashed": "✗", "running": "▶", "pending": "·", "cancelled": "⊘",
               "skipped": "-"}
# The metric columns come right after the run and its name, so they stay on screen at 120 columns (80: scroll);
# the stages and the data source, long and wordy, go last. The id and name are cut in the middle to fit.
COLUMNS = ["", "run", "name", "time", "SFT loss", "reward", *[SHORT[d] for d in DIMENSIONS], "rating", "check",
           "stages", "data"]
FIRST_METRIC, LAST_METRIC, STAGES_COLUMN = 3, 3 + 2 + len(DIMENSIONS) + 2, 5 + len(DIMENSIONS) + 2 + 1
ID_W, NAME_W = 15, 16


def _num(v: float | None, fmt: str = "{:.4f}") -> str:
    return "" if v is None else fmt.format(v)


def _sort_value(row: dict[str, Any], column: int) -> Any:
    """What a column sorts by: numbers as numbers, the run id (newest first) for the rest."""
    values = [None, row["id"], row["name"], row["duration_s"], row["sft_loss"], row["grpo_reward"],
              *[row["grpo_components"][d] for d in DIMENSIONS], (row["rating"] or {}).get("rating"), row["checklist_passed"],
              None, row["data"]]
    return values[column]


def load_summaries(root: Path) -> list[dict[str, Any]]:
    from engine.reporting.compare import summary_or_damage
    from engine.sweep.queue import positions
    from engine.sweep.sweeps import membership

    queued = positions(root)  # run id -> "queued #N" / "running": the queue's order, shown in the stages column
    out = []
    for path in sup.list_run_dirs(root):
        try:
            row = summary_or_damage(path)  # a damaged database is a row that says so, never left out
            if row is not None:
                sweep = membership(path)
                row = row | {"queue": queued.get(path.name, ""), "sweep": sweep["sweep"] if sweep else ""}
        except Exception:  # noqa: BLE001 - a run being created: never crash the list
            continue
        if row is not None:
            out.append(row | {"path": path})
    return out


class RunsScreen(ReportsFailures, QuickResume, Screen):
    BINDINGS = [
        Binding("enter", "open_run", "Open"),
        Binding("space", "mark", "Mark to compare"),
        Binding("o", "sort", "Sort by next column"),
        Binding("O", "reverse", "Reverse sort", show=False),
        Binding("f", "reload", "Refresh"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.marked: list[str] = []
        self.rows: list[dict[str, Any]] = []
        self.sort_column = 1  # by run id: newest first
        self.descending = True
        self.metric_key: str | None = None
        self.offered_keys: list[str] = []
        self.compare_view: Table | None = None

    def compose(self) -> ComposeResult:
        yield Header()
        with Vertical():
            yield DataTable(id="runs", cursor_type="row", zebra_stripes=True, cell_padding=0)
            with Horizontal(id="compare-pane"):
                yield Static(Text("Mark two or more runs with space to compare them."), id="compare-diff")
                with Vertical(id="compare-right"):
                    yield Select([], prompt="metric to overlay", id="compare-key", allow_blank=True)
                    yield LineChart("marked runs overlaid", id="compare-chart")
        yield Footer(compact=True, show_command_palette=False)  # q and ? stay on at 80 columns (ctrl+p: palette)

    def on_mount(self) -> None:
        self.query_one("#runs", DataTable).add_columns(*[f" {c}" for c in COLUMNS])  # cell_padding 0: one space each
        self.action_reload()

    def on_screen_resume(self) -> None:
        self.action_reload()

    # -- the table ---------------------------------------------------------------------------

    def action_reload(self) -> None:
        self._load(self.app.runs_dir)  # type: ignore[attr-defined]

    @work(thread=True, exclusive=True, group="runs", exit_on_error=False)
    def _load(self, root: Path) -> None:
        rows = load_summaries(root)
        self.app.call_from_thread(self._show, rows)

    def _show(self, rows: list[dict[str, Any]]) -> None:
        if rows == self.rows and self.query_one("#runs", DataTable).row_count:
            return  # read again on every visit: the same runs as drawn are not drawn again
        self.rows = rows
        self._render_table()

    def _render_table(self) -> None:
        table = self.query_one("#runs", DataTable)
        cursor = table.cursor_row
        table.clear()
        have = [r for r in self.rows if _sort_value(r, self.sort_column) is not None]
        lack = [r for r in self.rows if _sort_value(r, self.sort_column) is None]
        have.sort(key=lambda r: _sort_value(r, self.sort_column), reverse=self.descending)
        for r in have + lack:  # runs without the value go last whichever way the sort runs
            rating = r["rating"]
            numbers = [duration(r["duration_s"]), _num(r["sft_loss"]), _num(r["grpo_reward"]),
                       *[_num(r["grpo_components"][d], "{:.2f}") for d in DIMENSIONS],
                       f"{rating['rating']:.0f}±{(rating['hi'] - rating['lo']) / 2:.0f}" if rating else "",
                       f"{r['checklist_passed']}/{r['checklist_total']}" if r["checklist_total"] else ""]
            table.add_row(
                "●" if r["id"] in self.marked else "", Text(" " + cut_middle(r["id"], ID_W)),
                Text(" " + cut_middle(inert(r["name"], oneline=True), NAME_W), style="bold red" if r.get("damaged") else ""),
                *[Text(" " + v, justify="right") for v in numbers],
                Text(" " + " ".join([*([f"[{r['queue']}]"] if r.get("queue") else []),  # the queue's order
                                     *(f"{k}{STATUS_MARK.get(v, '?')}" for k, v in r["stages"].items())])),
                Text(" " + inert(r["data"], oneline=True)),
                key=r["id"],
            )
        if table.row_count:
            table.move_cursor(row=min(cursor, table.row_count - 1))

    def action_sort(self) -> None:
        self.sort_column = self.sort_column + 1 if self.sort_column + 1 < len(COLUMNS) else 1
        if self.sort_column == STAGES_COLUMN:  # the stages column has no order
            self.sort_column += 1
        self.descending = FIRST_METRIC <= self.sort_column <= LAST_METRIC  # numbers: largest first
        self.notify(f"sorted by {COLUMNS[self.sort_column]}", timeout=1.5)
        self._render_table()

    def action_reverse(self) -> None:
        self.descending = not self.descending
        self._render_table()

    def on_data_table_header_selected(self, event: DataTable.HeaderSelected) -> None:
        if event.column_index in (0, STAGES_COLUMN):
            return
        if event.column_index == self.sort_column:
            self.descending = not self.descending
        else:
            self.sort_column, self.descending = event.column_index, FIRST_METRIC <= event.column_index <= LAST_METRIC
        self._render_table()

    def _selected(self) -> str | None:
        table = self.query_one("#runs", DataTable)
        if not table.row_count:
            return None
        return table.coordinate_to_cell_key((table.cursor_row, 0)).row_key.value  # the whole id (the cell may be cut)

    def _path(self, run_id: str) -> Path:
        return next(r["path"] for r in self.rows if r["id"] == run_id)

    def action_open_run(self) -> None:
        run_id = self._selected()
        if run_id:
            self.app.open_run(self._path(run_id))  # type: ignore[attr-defined]
            self.app.switch_mode("pipeline")

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        self.action_open_run()

    # -- compare -----------------------------------------------------------------------------

    def action_mark(self) -> None:
        run_id = self._selected()
        if not run_id:
            return
        if run_id in self.marked:
            self.marked.remove(run_id)
        else:
            self.marked.append(run_id)
        self._render_table()
        self._start_compare()

    def on_select_changed(self, event: Select.Changed) -> None:
        if event.select.id == "compare-key" and not event.select.is_blank() and event.value != self.metric_key:
            self.metric_key = str(event.value)
            self._start_compare()

    def _start_compare(self) -> None:
        """Read what the thread needs here, on the UI thread; the thread gets plain values and never a widget."""
        paths = [self._path(i) for i in self.marked if any(r["id"] == i for r in self.rows)]
        if len(paths) < 2:
            self.query_one("#compare-diff", Static).update(Text("Mark two or more runs with space to compare them."))
            self.query_one("#compare-chart", LineChart).set_lines([])
            return
        self._compare(paths, self.metric_key)

    @work(thread=True, exclusive=True, group="compare", exit_on_error=False)
    def _compare(self, paths: list[Path], key: str | None) -> None:
        from engine.reporting.compare import compare_marked  # the CLI's comparison (`aba compare`), one code path

        result = compare_marked(paths, key)
        self.app.call_from_thread(self._show_compare, result)

    def _show_compare(self, result: dict[str, Any]) -> None:
        self.metric_key = result["key"]
        select = self.query_one("#compare-key", Select)
        if result["keys"] != self.offered_keys:  # only keys these runs really have: no typo shows "waiting for data"
            self.offered_keys = result["keys"]
            with select.prevent(Select.Changed):
                select.set_options([(k, k) for k in result["keys"]])
        if result["key"] and select.value != result["key"]:
            with select.prevent(Select.Changed):
                select.value = result["key"]
        self.compare_view = self._compare_view(result)
        self.query_one("#compare-diff", Static).update(self.compare_view)
        lines = []
        for i, (run_id, steps, values) in enumerate(result["series"]):
            vals = np.array([np.nan if v is None else v for v in values], dtype=float)
            lines.append(Line(run_id, np.asarray(steps, dtype=float), vals, PALETTE[i % len(PALETTE)]))
        self.query_one("#compare-chart", LineChart).set_lines(lines)

    @staticmethod
    def _compare_view(result: dict[str, Any]) -> Table:
        ids = result["ids"]
        grid = Table.grid(padding=(0, 1))
        diff = Table("config key", *ids, title="config: keys that differ", title_justify="left", box=None)
        for key, values in result["diff"] or [("(identical configs)", [""] * len(ids))]:
            diff.add_row(Text(key), *[Text(v) for v in values])
        grid.add_row(diff)
        deltas = Table("vs " + ids[0], *result["deltas"], title="GRPO reward delta, last 10 steps [95% CI]",
                       title_justify="left", box=None)
        for name in ("reward", *DIMENSIONS):
            cells = []
            for d in (result["deltas"][i][name] for i in result["deltas"]):
                cells.append(Text("" if d["delta"] is None else f"{d['delta']:+.3f} [{d['lo']:+.3f},{d['hi']:+.3f}]"))
            deltas.add_row(SHORT.get(name, name), *cells)
        grid.add_row(deltas)
        for other, t in result["tournaments"].items():
            r = t["ratings"]
            grid.add_row(Text(f"final models head to head ({t['prompts']} prompts): " + ", ".join(
                f"{n} {v['rating']:.0f} [{v['lo']:.0f},{v['hi']:.0f}]" for n, v in r.items())))
        return grid
