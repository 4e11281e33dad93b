"""View and edit a config with the CLI's own validation: an error shows its key and reason, and nothing is saved."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Select, Static, TextArea

from app.failures import ReportsFailures
from engine import config as config_mod
from engine.errors import UserError


class ConfigScreen(ModalScreen[Path | None]):
    """Edit `path`. Save validates first and writes only a valid config; returns the path saved or None."""

    BINDINGS = [Binding("escape", "dismiss(None)", "Close"), Binding("ctrl+s", "save", "Save")]

    def __init__(self, path: Path, note: str = "") -> None:
        super().__init__()
        self.path = path
        self.note = note

    def compose(self) -> ComposeResult:
        with Vertical(id="config-dialog"):
            yield Static(Text(f"{self.path}   {self.note}", style="bold"))
            yield TextArea(self.path.read_text(encoding="utf-8"), language=None, id="config-text")
            yield Static(id="config-error")
            with Horizontal(id="config-buttons"):
                yield Button("Save (ctrl+s)", id="save", variant="primary")
                yield Button("Close (esc)", id="close")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "save":
            self.action_save()
        else:
            self.dismiss(None)

    def action_save(self) -> None:
        text = self.query_one(TextArea).text
        try:
            config_mod.loads(text, str(self.path))
        except UserError as err:
            self.query_one("#config-error", Static).update(Text(str(err), style="bold red"))
            return
        tmp = self.path.with_suffix(self.path.suffix + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(self.path)
        self.dismiss(self.path)


@dataclass(frozen=True)
class NewRun:
    """What the new-run dialog hands back: the config, where the data comes from, and a name."""

    config: Path
    data_from: str | None = None  # a run id or a .jsonl/.csv file; None: the run generates its own
    name: str | None = None  # None: run.name plus what differs from the config file


GENERATE = "generate"


class NewRunScreen(ReportsFailures, ModalScreen[NewRun | None]):
    """Pick the config file a new run starts from, its data source (generate, another run, a file) and its name."""

    BINDINGS = [Binding("escape", "dismiss(None)", "Cancel")]

    def __init__(self, default: Path | None, runs_dir: Path | None = None) -> None:
        super().__init__()
        self.default = default
        self.runs_dir = runs_dir

    def compose(self) -> ComposeResult:
        with Vertical(id="newrun-dialog"):
            yield Static(Text("Start a new run (Enter), Esc to cancel", style="bold"))
            yield Static(Text("config"))
            yield Input(value=str(self.default or "data/configs/demo.toml"), id="newrun-path")
            yield Static(Text("data: generate it, or take it from a run (generate once, train many)"))
            yield Select([], prompt="generate (datagen, judge)", id="newrun-data", allow_blank=True)
            yield Input(placeholder="... or a .jsonl / .csv file (aba export-data format)", id="newrun-file")
            yield Input(placeholder="name (empty: what differs from the config file)", id="newrun-name")
            yield Static(id="newrun-error")

    def on_mount(self) -> None:
        if self.runs_dir is not None:
            self._load_sources(self.runs_dir)

    @work(thread=True, exclusive=True, exit_on_error=False)
    def _load_sources(self, root: Path) -> None:
        from engine.runner import supervisor as sup
        from engine.store import RunStore

        options = []
        for path in sup.list_run_dirs(root):
            try:
                with RunStore(path / "run.db", readonly=True) as s:
                    n, name = s.trace_count(), s.run_info().get("name", "")
            except UserError:
                continue
            if n:
                options.append((Text(f"{path.name}  {name}  ({n} traces)"), path.name))
        self.app.call_from_thread(self.query_one("#newrun-data", Select).set_options, options)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        path = Path(self.query_one("#newrun-path", Input).value).expanduser()
        try:
            config_mod.load(path)
        except UserError as err:
            self.query_one("#newrun-error", Static).update(Text(str(err), style="bold red"))
            return
        picked = self.query_one("#newrun-data", Select).value
        file = self.query_one("#newrun-file", Input).value.strip()
        name = self.query_one("#newrun-name", Input).value.strip()
        data_from = file or (None if picked is Select.BLANK else str(picked))
        self.dismiss(NewRun(path, data_from, name or None))
