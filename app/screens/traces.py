"""Trace review: a paged table over every trace, filters and sorting, the trace in full, and score edits."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widgets import Checkbox, Footer, Header, Input, Select, Static

from app.widgets.trace_table import COLUMNS, TraceTable, header_text
from engine.dims import DIMENSIONS, SHORT, TIERS
from engine.errors import UserError
from engine.reporting.agreement import judge_agreement
from engine.store import RunStore, StoreError

SORT_KEYS = [key for key, _, _ in COLUMNS]


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


class TracesScreen(Screen):
    BINDINGS = [
        Binding("left_square_bracket", "dim(-1)", "Prev dim", show=False),
        Binding("right_square_bracket", "dim(1)", "[ ] dim"),
        Binding("plus,equals_sign", "nudge(0.1)", "+/- 0.1"),
        Binding("minus", "nudge(-0.1)", "-0.1", show=False),
        Binding("enter", "set_score", "Set"),
        Binding("x", "reset_score", "Reset"),
        Binding("u", "undo", "Undo"),
        Binding("v", "toggle_reviewed", "Reviewed"),
        Binding("n", "next_unreviewed", "Next unreviewed", show=False),
        Binding("o", "cycle_sort", "Sort"),
        Binding("O", "reverse_sort", "Reverse", show=False),
        Binding("slash", "focus_filters", "Filter", show=False),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.store: RunStore | None = None
        self.dim_index = 0
        self.sort = "id"
        self.descending = False
        self._run = None
        self._last_total = -1

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="trace-filters"):
            yield Select([], prompt="category", id="f-category")
            yield Select([(t, t) for t in TIERS], prompt="tier", id="f-tier")
            yield Input(placeholder="min score", id="f-min", restrict=r"[0-9.]*")
            yield Input(placeholder="max score", id="f-max", restrict=r"[0-9.]*")
            yield Checkbox("unreviewed", id="f-unreviewed")
            yield Checkbox("judge failed", id="f-failed")
        with Horizontal():
            with Vertical(id="trace-left"):
                yield Static(id="trace-header")
                yield TraceTable(id="trace-table")
                yield Static(id="trace-count")
            with VerticalScroll(id="trace-detail"):
                yield Static(id="trace-scores")
                yield Static(id="trace-body")
                yield Static(id="agreement")
        yield Footer()

    def on_mount(self) -> None:
        self.open_store()

    def on_screen_resume(self) -> None:
        if self._run != self.app.model.run_dir:  # type: ignore[attr-defined]
            self.open_store()

    def open_store(self) -> None:
        run_dir = self.app.model.run_dir  # type: ignore[attr-defined]
        self._run = run_dir
        if self.store is not None:
            self.store.close()
        self.store = RunStore(run_dir / "run.db") if run_dir else None
        cats = self.store.trace_categories() if self.store else []
        self.query_one("#f-category", Select).set_options([(c, c) for c in cats])
        self.reload()
        self.query_one(TraceTable).focus()

    def update_from(self, model) -> None:
        """New traces arrived (datagen or judge running): reload, keeping the cursor where it was."""
        if self.store is None or model.version % 8:
            return
        total = self.store.trace_count()
        if total != self._last_total:
            self._last_total = total
            self.reload()

    @property
    def weights(self) -> dict[str, float]:
        return self.app.run_weights()  # type: ignore[attr-defined]

    def _filters(self) -> dict:
        def num(id_: str) -> float | None:
            text = self.query_one(id_, Input).value.strip()
            try:
                return float(text) if text else None
            except ValueError:
                return None

        cat = self.query_one("#f-category", Select).value
        tier = self.query_one("#f-tier", Select).value
        return {
            "category": cat if isinstance(cat, str) else None, "tier": tier if isinstance(tier, str) else None,
            "min_score": num("#f-min"), "max_score": num("#f-max"),
            "unreviewed": self.query_one("#f-unreviewed", Checkbox).value,
            "failed": self.query_one("#f-failed", Checkbox).value,
        }

    def reload(self, keep: int | None = None) -> None:
        table = self.query_one(TraceTable)
        self.query_one("#trace-header", Static).update(Text(header_text(self.sort, self.descending), style="bold"))
        if self.store is None:
            table.load(None, [])
            self.query_one("#trace-count", Static).update(Text("no run open", style="dim"))
            return
        ids = self.store.filtered_trace_ids(**self._filters(), sort=self.sort, descending=self.descending)
        table.load(self.store, ids, keep=keep if keep is not None else table.current_id)
        total = self.store.trace_count()
        self.query_one("#trace-count", Static).update(Text(f"{len(ids)} of {total} traces", style="dim"))
        self.show_agreement()

    @on(Select.Changed)
    @on(Checkbox.Changed)
    @on(Input.Changed, "#f-min, #f-max")
    def _filter_changed(self) -> None:
        self.reload()

    def on_trace_table_highlighted(self, message: TraceTable.Highlighted) -> None:
        self.show_trace(message.trace_id)

    # -- detail -------------------------------------------------------------------------------

    def show_trace(self, trace_id: int | None) -> None:
        scores = self.query_one("#trace-scores", Static)
        body = self.query_one("#trace-body", Static)
        if trace_id is None or self.store is None:
            scores.update(Text("no trace selected", style="dim"))
            body.update("")
            return
        t = self.store.trace(trace_id)
        table = Table("", "dimension", "judge", "human", "eff", box=None, padding=(0, 1), title=self._title(t))
        for i, d in enumerate(DIMENSIONS):
            judge = t["judge"][d] if t["judge"] else None
            human = t["human"].get(d)
            eff = human if human is not None else judge
            table.add_row("▶" if i == self.dim_index else "", d, _n(judge), _n(human),
                          Text(_n(eff), style="bold" if human is not None else ""),
                          style="reverse" if i == self.dim_index else None)
        scores.update(table)
        text = Text()
        if t["offline"]:
            text.append("OFFLINE trace (shipped example or composed), not a model's output\n\n", style="yellow")
        for turn in t["turns"]:  # every turn, literally: never parsed as markup
            text.append(f"{turn['role']}: ", style="bold")
            text.append(turn["content"] + "\n")
        text.append("\nreasoning\n", style="bold underline")
        text.append((t["reasoning"] or "(none)") + "\n")
        text.append("\nanswer\n", style="bold underline")
        text.append((t["answer"] or "") + "\n")
        if t["judge_failed"]:
            text.append("\njudge failed; raw reply kept:\n", style="bold red")
            text.append(t["judge_raw"] or "(no reply)")
        body.update(text)

    def _title(self, t: dict) -> Text:
        flags = ["reviewed" if t["reviewed"] else "unreviewed"]
        if t["judge_rescaled"]:
            flags.append("judge rescaled")
        w = "n/a" if t["weighted"] is None else f"{t['weighted']:.3f}"
        return Text(f"trace {t['id']}  {t['category']}/{t['tier']}  weighted {w}  ({', '.join(flags)})")

    def show_agreement(self) -> None:
        if self.store is None:
            return
        rows = judge_agreement(self.store)
        table = Table("dim", "n", "MAE", "Spearman", "Kendall", "alpha", box=None, title="judge vs human", padding=(0, 1))
        for d, r in rows.items():
            table.add_row(SHORT[d], str(r["n"]), _n(r["mae"]), _n(r["spearman"]), _n(r["kendall_tau"]), _n(r["alpha"]))
        self.query_one("#agreement", Static).update(table)

    # -- edits: each one committed at once ------------------------------------------------------

    def _current(self) -> dict | None:
        tid = self.query_one(TraceTable).current_id
        return self.store.trace(tid) if tid is not None and self.store else None

    def _apply(self, trace_id: int, value: float | None) -> None:
        dim = DIMENSIONS[self.dim_index]
        try:
            self.store.edit_score(trace_id, dim, value, self.weights)  # type: ignore[union-attr]
        except (StoreError, UserError) as err:
            self.notify(str(err), severity="error")
            return
        self.query_one(TraceTable).invalidate(trace_id)
        self.show_trace(trace_id)
        self.show_agreement()

    def action_dim(self, delta: int) -> None:
        self.dim_index = (self.dim_index + delta) % len(DIMENSIONS)
        self.show_trace(self.query_one(TraceTable).current_id)

    def action_nudge(self, delta: float) -> None:
        t = self._current()
        if not t or t["effective"] is None:
            return
        dim = DIMENSIONS[self.dim_index]
        self._apply(t["id"], round(min(1.0, max(0.0, t["effective"][dim] + delta)), 4))

    def action_set_score(self) -> None:
        t = self._current()
        if not t:
            return
        dim = DIMENSIONS[self.dim_index]
        current = t["effective"][dim] if t["effective"] else None

        def done(value: float | None) -> None:
            if value is not None:
                self._apply(t["id"], value)

        self.app.push_screen(ScoreInput(dim, current), done)

    def action_reset_score(self) -> None:
        t = self._current()
        if t and DIMENSIONS[self.dim_index] in t["human"]:
            self._apply(t["id"], None)

    def action_undo(self) -> None:
        t = self._current()
        if not t or self.store is None:
            return
        undone = self.store.undo_edit(t["id"], self.weights)
        if undone is None:
            self.notify("nothing to undo on this trace")
            return
        self.notify(f"undid {undone['dim']}: {_n(undone['new'])} -> {_n(undone['old'])}")
        self.query_one(TraceTable).invalidate(t["id"])
        self.show_trace(t["id"])
        self.show_agreement()

    def action_toggle_reviewed(self) -> None:
        t = self._current()
        if t and self.store:
            self.store.set_reviewed(t["id"], not t["reviewed"])
            self.query_one(TraceTable).invalidate(t["id"])
            self.show_trace(t["id"])

    def action_next_unreviewed(self) -> None:
        table = self.query_one(TraceTable)
        if self.store is None or not table.ids:
            return
        unreviewed = set(self.store.filtered_trace_ids(unreviewed=True))
        order = table.ids[table.cursor + 1 :] + table.ids[: table.cursor + 1]
        nxt = next((i for i in order if i in unreviewed), None)
        if nxt is None:
            self.notify("every trace in view is reviewed")
        else:
            table.cursor = table.ids.index(nxt)

    def action_cycle_sort(self) -> None:
        self.sort = SORT_KEYS[(SORT_KEYS.index(self.sort) + 1) % len(SORT_KEYS)]
        self.reload()

    def action_reverse_sort(self) -> None:
        self.descending = not self.descending
        self.reload()

    def action_focus_filters(self) -> None:
        self.query_one("#f-category", Select).focus()


def _n(v: float | None) -> str:
    return "" if v is None else f"{v:.2f}"

