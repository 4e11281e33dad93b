"""The traces screen's dialogs: a score to type, the filters, the sort column. Each closes with Esc."""

from __future__ import annotations

from dataclasses import dataclass, replace

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Checkbox, Input, OptionList, Select, Static
from textual.widgets.option_list import Option

from app.widgets.trace_table import COLUMNS
from engine.dims import TIERS
from engine.text import inert


@dataclass(frozen=True)
class Filters:
    category: str | None = None
    tier: str | None = None
    min_score: float | None = None
    max_score: float | None = None
    unreviewed: bool = False
    failed: bool = False

    def describe(self) -> str:
        parts = [f"category {inert(self.category, oneline=True) if self.category else 'any'}",
                 f"tier {self.tier or 'any'}"]
        if self.min_score is not None or self.max_score is not None:
            lo = "0" if self.min_score is None else f"{self.min_score:g}"
            hi = "1" if self.max_score is None else f"{self.max_score:g}"
            parts.append(f"score {lo}..{hi}")
        if self.unreviewed:
            parts.append("unreviewed only")
        if self.failed:
            parts.append("judge failed only")
        return "  ".join(parts)

    def as_kwargs(self) -> dict:
        return dict(self.__dict__)


class Tick(Checkbox):
    """A checkbox that draws its mark only when ticked (Textual's draws a dim X either way)."""

    @property
    def BUTTON_INNER(self) -> str:  # type: ignore[override]
        return "✓" if self.value else " "


class ScoreInput(ModalScreen[float | None]):
    """Ask for an exact score in 0..1."""

    BINDINGS = [Binding("escape", "dismiss(None)", "Cancel")]

    def __init__(self, dim: str, current: float | None) -> None:
        super().__init__()
        self.dim, self.current = dim, current

    def compose(self) -> ComposeResult:
        with Vertical(id="score-dialog"):
            yield Static(Text(f"New score for {self.dim} (0..1), Enter to save, Esc to cancel"))
            yield Input(value="" if self.current is None else f"{self.current:.2f}", id="score-value")
            yield Static(id="score-error")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        try:
            value = float(event.value)
        except ValueError:
            self.query_one("#score-error", Static).update(Text(f"not a number: {event.value!r}", style="red"))
            return
        if not 0.0 <= value <= 1.0:
            self.query_one("#score-error", Static).update(Text("a score must be within 0..1", style="red"))
            return
        self.dismiss(value)


class FilterScreen(ModalScreen[Filters | None]):
    """The filters in one dialog: Enter applies, Esc leaves them as they were, ctrl+r clears them."""

    BINDINGS = [Binding("escape", "dismiss(None)", "Cancel"), Binding("enter", "apply", "Apply", priority=True),
                Binding("ctrl+r", "clear", "Clear all")]

    def __init__(self, current: Filters, categories: list[str]) -> None:
        super().__init__()
        self.current, self.categories = current, categories

    def compose(self) -> ComposeResult:
        f = self.current
        with Vertical(id="filter-dialog"):
            yield Static(Text("Filters: Tab moves, space opens a list, Enter applies, Esc cancels, ctrl+r clears", style="bold"))
            with Horizontal(classes="filter-row"):
                yield Select([(inert(c, oneline=True), c) for c in self.categories], prompt="any category",
                             value=f.category if f.category in self.categories else Select.NULL, id="f-category")
                yield Select([(t, t) for t in TIERS], prompt="any tier", value=f.tier or Select.NULL, id="f-tier")
            with Horizontal(classes="filter-row"):
                yield Input(value="" if f.min_score is None else f"{f.min_score:g}", placeholder="min score",
                            id="f-min", restrict=r"[0-9.]*")
                yield Input(value="" if f.max_score is None else f"{f.max_score:g}", placeholder="max score",
                            id="f-max", restrict=r"[0-9.]*")
            with Horizontal(classes="filter-row"):
                yield Tick("unreviewed only", f.unreviewed, id="f-unreviewed")
                yield Tick("judge failed only", f.failed, id="f-failed")

    def on_mount(self) -> None:
        self.query_one("#f-category", Select).focus()

    def _num(self, id_: str) -> float | None:
        text = self.query_one(id_, Input).value.strip()
        try:
            return float(text) if text else None
        except ValueError:
            return None

    def check_action(self, action: str, parameters: tuple) -> bool | None:
        if action == "apply" and any(s.expanded for s in self.query(Select)):
            return False  # Enter inside an open drop-down picks its option; it does not apply yet
        return True

    def on_input_submitted(self) -> None:
        self.action_apply()

    def action_apply(self) -> None:
        cat, tier = self.query_one("#f-category", Select).value, self.query_one("#f-tier", Select).value
        self.dismiss(Filters(cat if isinstance(cat, str) else None, tier if isinstance(tier, str) else None,
                             self._num("#f-min"), self._num("#f-max"), self.query_one("#f-unreviewed", Tick).value,
                             self.query_one("#f-failed", Tick).value))

    def action_clear(self) -> None:
        self.dismiss(replace(Filters()))


class SortPicker(ModalScreen[str | None]):
    """Pick the column to sort by (Enter); the same column again reverses the order."""

    BINDINGS = [Binding("escape", "dismiss(None)", "Cancel")]

    def __init__(self, current: str) -> None:
        super().__init__()
        self.current = current

    def compose(self) -> ComposeResult:
        with Vertical(id="sort-dialog"):
            yield Static(Text("Sort by (Enter picks; the current column again reverses)", style="bold"))
            yield OptionList(*[Option(f"{c.title:<9} {c.name}", id=c.key) for c in COLUMNS], id="sort-options")

    def on_mount(self) -> None:
        options = self.query_one(OptionList)
        options.highlighted = next(i for i, c in enumerate(COLUMNS) if c.key == self.current)
        options.focus()

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(event.option.id)
