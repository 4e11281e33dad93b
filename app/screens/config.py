"""View and edit a config with the CLI's own validation: an error shows its key and reason, and nothing is saved."""

from __future__ import annotations

from pathlib import Path

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Static, TextArea

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


class NewRunScreen(ModalScreen[Path | None]):
    """Pick the config file a new run starts from."""

    BINDINGS = [Binding("escape", "dismiss(None)", "Cancel")]

    def __init__(self, default: Path | None) -> None:
        super().__init__()
        self.default = default

    def compose(self) -> ComposeResult:
        with Vertical(id="newrun-dialog"):
            yield Static(Text("Start a new run from this config (Enter), Esc to cancel", style="bold"))
            yield Input(value=str(self.default or "data/configs/demo.toml"), id="newrun-path")
            yield Static(id="newrun-error")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        path = Path(event.value).expanduser()
        try:
            config_mod.load(path)
        except UserError as err:
            self.query_one("#newrun-error", Static).update(Text(str(err), style="bold red"))
            return
        self.dismiss(path)
