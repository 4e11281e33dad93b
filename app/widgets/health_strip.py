"""The GRPO doctor on screen: a strip of rule chips (ok / warn / alarm), the doctor's charts, first-fire notices."""

from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid, Horizontal, Vertical
from textual.message import Message
from textual.widgets import Static

from app.run_model import RunModel
from app.widgets.chart import PALETTE, Line, LineChart
from engine.store import EventRow
from engine.training.health_rules import RULES

# The signals practitioners watch besides reward (KL and completion length are charted by the screen already).
DOCTOR_CHARTS = [("reward_std", "reward std"), ("frac_reward_zero_std", "zero-std groups"), ("entropy", "entropy"),
                 ("clip_ratio/region_mean", "clip ratio"), ("completions/clipped_ratio", "clipped completions"),
                 ("step_time_s", "step time s")]
CHIP_W = 15  # cells per chip with its gap: the icon, the title and a first-fired step (`▲ saturated@12`)
ICON = {"ok": "●", "warn": "▲", "alarm": "■", "no data": "○"}
STYLE = {"ok": "green", "warn": "bold yellow", "alarm": "bold red", "no data": "dim"}
TITLES = {r.name: r.title for r in RULES} | {"judge_fooled": "fooled"}
EXPLAIN = {r.name: f"{r.explain} Try: {r.remedy}" for r in RULES}


def latest_states(events: list[EventRow], stage: str, prefix: str = "") -> dict[str, dict]:
    """The newest `health` event per rule of one stage (the audit's judge_fooled included); for grpo-dims, of one
    dimension's LoRA (`prefix` "entropy_reduction/": each is watched by its own rules)."""
    out: dict[str, dict] = {}
    for e in events:
        if (e.kind == "health" and e.stage == stage and isinstance(e.data, dict) and e.data.get("rule")
                and (e.data.get("prefix") or "") == prefix):
            out[e.data["rule"]] = e.data
    return out


def first_fire_notices(events: list[EventRow]) -> list[tuple[str, str]]:
    """(message, severity) for every rule that fires for the first time in these new events."""
    notices = []
    for e in events:
        d = e.data if isinstance(e.data, dict) else {}
        if e.kind == "health" and d.get("first") and d.get("state") in ("warn", "alarm"):
            detail = str(d.get("detail") or "")
            notices.append((f"{e.stage} step {d.get('step')}: {d.get('rule')}: {detail}",
                            "error" if d["state"] == "alarm" else "warning"))
    return notices


class RuleChip(Static, can_focus=True):
    """One rule: its icon and title in its state's colour; focus shows the explanation."""

    BINDINGS = [Binding("right", "app.focus_next", "Next rule", show=False),
                Binding("left", "app.focus_previous", "Previous rule", show=False)]

    @dataclass
    class Focused(Message):
        chip: RuleChip

    def __init__(self, rule: str) -> None:
        super().__init__(id=f"rule-{rule}", classes="rule-chip")
        self.rule = rule
        self.data: dict = {}
        self.set_state("no data")

    def set_state(self, state: str, data: dict | None = None) -> None:
        self.state = state
        self.data = data or {}
        text = Text(f"{ICON.get(state, '?')} {TITLES.get(self.rule, self.rule)}", style=STYLE.get(state, ""))
        if self.data.get("first_step") is not None:  # it fired once, even if it has cleared since
            text.append(f"@{self.data['first_step']}", style="dim" if state == "ok" else STYLE.get(state, ""))
        self.update(text)

    def on_focus(self) -> None:
        self.post_message(self.Focused(self))


class HealthStrip(Vertical):
    """Every rule's state for the stage on screen, from the run's `health` events; Tab through it to read why."""

    DEFAULT_CSS = """
    HealthStrip { height: auto; border: round $panel; padding: 0 1; }
    HealthStrip > #health-chips { height: auto; grid-size: 7; grid-rows: 1; grid-gutter: 0 1; }
    HealthStrip .rule-chip { width: 1fr; height: 1; }
    HealthStrip .rule-chip:focus { background: $boost; text-style: bold; }
    HealthStrip > #health-explain { height: auto; max-height: 2; color: $text-muted; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.border_title = "health"
        self._shown: tuple = ()

    def compose(self) -> ComposeResult:
        # A grid, not a row: every chip stays on screen however narrow the terminal (as many per line as fit).
        yield Grid(*[RuleChip(r.name) for r in RULES], RuleChip("judge_fooled"), id="health-chips")
        yield Static(Text("Tab to a rule to read what it watches", style="dim"), id="health-explain")

    def update_from(self, model: RunModel, stage: str, prefix: str = "") -> None:
        states = latest_states(model.events, stage, prefix)
        key = (stage, prefix, tuple((r, d.get("state"), d.get("step")) for r, d in states.items()))
        if key == self._shown:
            return
        self._shown = key
        counts = {"warn": 0, "alarm": 0}
        for chip in self.query(RuleChip):
            d = states.get(chip.rule)
            state = d.get("state", "no data") if d else "no data"
            chip.set_state(state, d)
            counts[state] = counts.get(state, 0) + 1
        of = f" of {prefix.rstrip('/')}" if prefix else ""
        self.border_title = f"health{of}: {counts['alarm']} alarm, {counts['warn']} warn" if states else f"health{of}"

    def on_resize(self) -> None:
        grid = self.query_one("#health-chips", Grid)
        n = len(grid.children)
        per_line = max(1, min(n, self.content_region.width // CHIP_W))
        rows = -(-n // per_line)
        per_line = -(-n // rows)  # the same count on every line
        if grid.styles.grid_size_columns != per_line:
            grid.styles.grid_size_columns = per_line

    def focus_first(self) -> None:
        self.query(RuleChip).first().focus()

    def on_rule_chip_focused(self, message: RuleChip.Focused) -> None:
        chip = message.chip
        d = chip.data
        text = Text(f"{chip.rule} ({chip.state}", style=STYLE.get(chip.state, ""))
        if d.get("first_step") is not None:
            text.append(f", first fired at step {d['first_step']}")
        text.append(")  ")
        if d.get("detail"):
            text.append(str(d["detail"]) + "  ", style="bold")
        text.append(EXPLAIN.get(chip.rule) or f"{d.get('explain', '')} Try: {d.get('remedy', '')}")
        self.query_one("#health-explain", Static).update(text)


def step_at(chart: LineChart, offset) -> float | None:
    """The step under a point of a LineChart's content (its plot starts after the 9-column axis and its tick)."""
    if offset is None or not chart.lines:
        return None
    steps = [ln.steps for ln in chart.lines if ln.steps.size]
    if not steps:
        return None
    plot_x0, plot_w = 10, max(chart.size.width - 10, 4)
    col = offset.x - plot_x0
    if col < 0 or col >= plot_w:
        return None
    lo, hi = min(float(s.min()) for s in steps), max(float(s.max()) for s in steps)
    return lo + (col + 0.5) / plot_w * (hi - lo)


class DoctorCharts(Grid):
    """Small charts of the GRPO signals the rules read."""

    DEFAULT_CSS = """
    DoctorCharts { grid-size: 2; grid-gutter: 0; height: auto; }
    DoctorCharts > LineChart { height: 10; }
    """

    def compose(self) -> ComposeResult:
        for i, (_, title) in enumerate(DOCTOR_CHARTS):
            yield LineChart(title, id=f"doctor-{i}")

    def update_from(self, model: RunModel, stage: str, smooth: bool = False, prefix: str = "") -> None:
        for chart, lines in self.chart_lines(model, stage, smooth, prefix):
            chart.set_lines(lines)

    def chart_lines(self, model: RunModel, stage: str, smooth: bool = False,
                    prefix: str = "") -> list[tuple[LineChart, list[Line]]]:
        """What each of the doctor's charts should show (the Training screen spreads the redraws over frames)."""
        charts = list(self.query(LineChart))
        out = []
        for i, (key, title) in enumerate(DOCTOR_CHARTS):
            s = model.get(stage, prefix + key)
            lines = []
            if s is not None and s.n:
                steps, values = s.view(smooth)
                lines = [Line(title, steps, values, PALETTE[(i + 3) % 9])]
            out.append((charts[i], lines))
        return out
