"""Modal questions: a confirmation that names what will happen, and the stage picker (any stage of the registry)."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import OptionList, Static
from textual.widgets.option_list import Option


class ConfirmScreen(ModalScreen[bool]):
    """Blocks until answered: y does it, n or Esc does nothing. Enter is not an answer (no accidental yes)."""

    BINDINGS = [Binding("y", "answer(True)", "yes, do it"), Binding("n,escape", "answer(False)", "no")]

    def __init__(self, title: str, what: str) -> None:
        super().__init__()
        self.title_, self.what = title, what

    def compose(self) -> ComposeResult:
        with Vertical(id="confirm-dialog"):
            yield Static(Text(self.title_, style="bold"), id="confirm-title")
            yield Static(Text(self.what), id="confirm-what")
            yield Static(Text("y: yes, do it     n / Esc: no", style="dim"), id="confirm-keys")

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)


def stage_note(row, running: list[str]) -> str:
    """What starting this stage now would do, in a few words."""
    if row is None or (not row.selected and row.attempts == 0):
        return "not in this run: adds it and starts it"
    if row.status == "running":
        return "running now"
    if running:
        return f"waits: {', '.join(running)} running"
    if row.status == "succeeded":
        return f"succeeded: re-run replaces its results (attempt {row.attempts + 1})"
    if row.attempts:
        return f"{row.status}: starts attempt {row.attempts + 1} from its last checkpoint"
    return "pending: starts it"


class StagePicker(ModalScreen[str | None]):
    """Every stage of the pipeline, with what starting it now would do; Enter picks, Esc closes."""

    BINDINGS = [Binding("escape", "dismiss(None)", "Cancel")]

    def __init__(self, stages: list[str], rows: dict, running: list[str], current: str | None,
                 verb: str = "Start") -> None:
        super().__init__()
        self.stages, self.rows, self.running, self.current, self.verb = stages, rows, running, current, verb

    def compose(self) -> ComposeResult:
        width = max(len(s) for s in self.stages) + 2
        options = [Option(Text(f"{s:<{width}}") + Text(stage_note(self.rows.get(s), self.running), style="dim"), id=s)
                   for s in self.stages]
        with Vertical(id="stage-dialog"):
            yield Static(Text(f"{self.verb} which stage? (Enter picks, Esc closes)", style="bold"))
            yield OptionList(*options, id="stage-options")

    def on_mount(self) -> None:
        options = self.query_one(OptionList)
        if self.current in self.stages:
            options.highlighted = self.stages.index(self.current)
        options.focus()

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(event.option.id)
