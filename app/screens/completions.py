"""One sampled GRPO step: every completion of every group with nine scores, reward, advantage, length, clipped."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.message import Message
from textual.screen import ModalScreen
from textual.widgets import DataTable, Static

from app.failures import ReportsFailures
from engine.dims import DIMENSIONS, SHORT
from engine.store import RunStore
from engine.text import inert


def nearest(entries: list[dict], step: float | None) -> int:
    """Index of the sampled step closest to `step` (the latest when step is None)."""
    if not entries:
        return 0
    if step is None:
        return len(entries) - 1
    return min(range(len(entries)), key=lambda i: abs(entries[i]["step"] - step))


def _f(v, digits: int = 2) -> str:
    return "" if v is None else f"{v:.{digits}f}"


class CompletionsScreen(ReportsFailures, ModalScreen[None]):
    """Opened from the Training screen (c, or a click on the reward chart); [ and ] step through sampled steps."""

    BINDINGS = [Binding("escape,q", "dismiss", "Close"), Binding("left_square_bracket", "move(-1)", "Previous step"),
                Binding("right_square_bracket", "move(1)", "Next step")]
    # Opaque: a translucent modal blends the whole Training screen beneath into every frame (~50 ms a frame here).
    DEFAULT_CSS = """
    CompletionsScreen { align: center middle; background: $background; }
    CompletionsScreen > Vertical { width: 95%; height: 90%; border: round $accent; background: $surface; }
    CompletionsScreen #completions-title { height: auto; padding: 0 1; background: $boost; }
    CompletionsScreen DataTable { height: 1fr; }
    CompletionsScreen #completion-detail { height: 1fr; border-top: tall $panel; padding: 0 1; }
    """

    @dataclass
    class Loaded(Message):
        entries: list[dict]
        run_dir: Path
        stage: str
        target: float | None

    def __init__(self, run_dir: Path, stage: str, step: float | None = None):
        super().__init__()
        self.run_dir = run_dir
        self.stage = stage
        self.target = step
        self.entries: list[dict] = []
        self.index = 0

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(Text("loading completions...", style="dim"), id="completions-title")
            yield DataTable(id="completions-table", cursor_type="row", zebra_stripes=True)
            with VerticalScroll(id="completion-detail"):
                yield Static(id="completion-text")

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        table.add_columns("group", "#", "reward", "advantage", "length", "clipped", *[SHORT[d] for d in DIMENSIONS])

    def show_step(self, run_dir: Path, stage: str, step: float | None) -> None:
        """Opened again (the Training screen keeps one instance installed: no widgets built per open)."""
        self.run_dir, self.stage, self.target = run_dir, stage, step

    def on_screen_resume(self) -> None:
        self.load()  # every open reads the stored completions again: a live GRPO stage adds sampled steps

    def load(self) -> None:
        self._read(self.run_dir, self.stage, self.target)

    @work(thread=True, exclusive=True, group="completions", exit_on_error=False)
    def _read(self, run_dir: Path, stage: str, target: float | None) -> None:
        with RunStore(run_dir / "run.db", readonly=True) as store:
            results = store.results(stage, "completions")
        self.post_message(self.Loaded(sorted(results.values(), key=lambda e: e["step"]), run_dir, stage, target))

    @on(Loaded)
    def _loaded(self, message: Loaded) -> None:
        if (message.run_dir, message.stage, message.target) != (self.run_dir, self.stage, self.target):
            return  # read for an earlier open
        self.entries = message.entries
        self.index = nearest(self.entries, self.target)
        self.show()

    def show(self) -> None:
        table = self.query_one(DataTable)
        table.clear()
        title = self.query_one("#completions-title", Static)
        if not self.entries:
            title.update(Text(f"{self.stage}: no completions stored yet (every grpo.sample_every steps)  esc: close"))
            self.query_one("#completion-text", Static).update("")
            return
        e = self.entries[self.index]
        t = Text(f"{self.stage} step {e['step']}", style="bold")
        t.append(f"  ({self.index + 1} of {len(self.entries)} sampled steps; {len(e['rows'])} completions in groups of "
                 f"{e['num_generations']}; clipped at {e['max_completion_length']} tokens)   [ ]: step   esc: close", style="dim")
        title.update(t)
        for i, r in enumerate(e["rows"]):
            adv = r.get("advantage")
            table.add_row(
                str(r["group"]), str(r["index"]), _f(r.get("reward"), 3),
                Text(_f(adv), style="green" if adv and adv > 0 else "red" if adv and adv < 0 else ""),
                "" if r.get("length") is None else str(r["length"]),
                Text("clipped", style="yellow") if r.get("clipped") else Text("no" if r.get("clipped") is False else ""),
                *[_f(r["scores"].get(d)) for d in DIMENSIONS], key=str(i),
            )
        self._detail(0)

    def _detail(self, i: int) -> None:
        if not self.entries or not (0 <= i < len(self.entries[self.index]["rows"])):
            return
        r = self.entries[self.index]["rows"][i]
        text = Text(f"group {r['group']} completion {r['index']}\n", style="bold")
        text.append("prompt: ", style="dim")
        text.append(inert(r.get("prompt") or "") + "\n\n")
        text.append(inert(r.get("completion") or "(empty)"))
        self.query_one("#completion-text", Static).update(text)

    @on(DataTable.RowHighlighted)
    def _highlighted(self, event: DataTable.RowHighlighted) -> None:
        self._detail(event.cursor_row)

    def action_move(self, delta: int) -> None:
        if self.entries:
            self.index = max(0, min(len(self.entries) - 1, self.index + delta))
            self.show()
