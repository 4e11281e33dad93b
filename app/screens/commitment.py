"""The commitment sweep (seed 003): consistency and coherence per (lambda, layers) cell, samples on select."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.message import Message
from textual.widgets import DataTable, Footer, Header, Static

from app.screens.base import ReadingScreen
from engine.store import RunStore
from engine.text import inert


def _heat(value: float | None, good_high: bool, lo: float, hi: float) -> str:
    if value is None:
        return ""
    t = 0.5 if hi <= lo else (value - lo) / (hi - lo)
    t = t if good_high else 1 - t
    return "on #1f6f3f" if t > 0.66 else "on #6f6f1f" if t > 0.33 else "on #6f1f1f"


class CommitmentScreen(ReadingScreen):
    BINDINGS = [Binding("f", "reload", "Refresh"), Binding("d", "cycle_metric", "metric")]
    METRICS = ("consistency", "perplexity", "distinct2", "repetition")

    @dataclass
    class Loaded(Message):
        """The sweep's cells of a run, read by a worker thread."""

        run_dir: Path | None
        cells: dict[str, dict] = field(default_factory=dict)

    def __init__(self) -> None:
        super().__init__()
        self.cells: dict[str, dict] = {}
        self.metric = "consistency"
        self._seen = None

    def compose(self) -> ComposeResult:
        yield Header()
        with Vertical():
            yield Static(id="sweep-title")
            yield DataTable(id="sweep", cursor_type="cell")
            yield VerticalScroll(Static(id="sweep-samples-text"), id="sweep-samples")
        yield Footer(compact=True, show_command_palette=False)  # q and ? stay on at 80 columns (ctrl+p: palette)

    def on_screen_resume(self) -> None:  # also the first time the screen is shown
        self.action_reload()

    def update_from(self, model) -> None:
        key = model.status_key("commitment", "entangled")
        if key != self._seen:
            self._seen = key
            self.action_reload()

    def action_cycle_metric(self) -> None:
        self.metric = self.METRICS[(self.METRICS.index(self.metric) + 1) % len(self.METRICS)]
        self._show()  # the cells are in hand: no read

    def action_reload(self) -> None:
        self._load(self.app.model.run_dir)  # type: ignore[attr-defined]

    @work(thread=True, exclusive=True, group="commitment-load", exit_on_error=False)
    def _load(self, run_dir: Path | None) -> None:
        if run_dir is None:
            self.post_message(self.Loaded(None))
            return
        with RunStore(run_dir / "run.db", readonly=True) as store:
            self.post_message(self.Loaded(run_dir, store.results("commitment", "cell")))

    def on_commitment_screen_loaded(self, message: Loaded) -> None:
        if message.run_dir != self.app.model.run_dir:  # type: ignore[attr-defined]
            return  # read for a run no longer open
        if (message.run_dir, message.cells) == getattr(self, "_shown", None):
            return  # read again on each visit: the same cells as drawn are not drawn again
        self._shown = (message.run_dir, message.cells)
        self.cells = message.cells
        self._show()

    def _show(self) -> None:
        table = self.query_one("#sweep", DataTable)
        table.clear(columns=True)
        title = Text(f"commitment sweep: {self.metric} per cell (d: next metric; higher is better for consistency "
                     "and distinct-2, lower for perplexity and repetition)", style="bold")
        self.query_one("#sweep-title", Static).update(title)
        if self.app.model.run_dir is None:  # type: ignore[attr-defined]
            return
        if not self.cells:
            self.query_one("#sweep-samples-text", Static).update(Text("no sweep yet: start the commitment stage with s", style="dim"))
            return
        lambdas = sorted({c["lambda"] for c in self.cells.values()}, reverse=True)
        layers = list(dict.fromkeys(c["layers"] for c in self.cells.values()))
        values = [c.get(self.metric) for c in self.cells.values() if c.get(self.metric) is not None]
        lo, hi = (min(values), max(values)) if values else (0, 1)
        good_high = self.metric in ("consistency", "distinct2")
        table.add_columns("lambda", *layers)
        for lam in lambdas:
            row = [Text("baseline" if lam == 0 else f"{lam:g}")]
            for lay in layers:
                c = self.cells.get(f"{lam:g}|{lay}")
                v = None if c is None else c.get(self.metric)
                row.append(Text("" if v is None else f"{v:.3f}", style=_heat(v, good_high, lo, hi)))
            table.add_row(*row)

    def on_data_table_cell_highlighted(self, event: DataTable.CellHighlighted) -> None:
        table = self.query_one("#sweep", DataTable)
        if event.coordinate.column == 0 or not table.row_count:
            return
        lam_text = str(table.get_row_at(event.coordinate.row)[0])
        lam = "0" if lam_text == "baseline" else lam_text
        layers = str(table.ordered_columns[event.coordinate.column].label)
        cell = self.cells.get(f"{lam}|{layers}")
        out = Text()
        if cell:
            out.append(f"lambda {lam}, layers {layers}: consistency {cell['consistency']:.3f}, perplexity "
                       f"{cell['perplexity']:.2f}, distinct-2 {cell['distinct2']:.3f}, repetition {cell['repetition']:.3f}\n\n",
                       style="bold")
            for s in cell.get("samples", [])[:4]:
                out.append(f"probe: {inert(s['probe'])}\n", style="dim")
                out.append(f"first: {inert(s['first'])}\nfollow-up: {inert(s['second'])}\n", style="")
                out.append(f"consistent: {s['consistent']}\n\n", style="dim")
        self.query_one("#sweep-samples-text", Static).update(out)
