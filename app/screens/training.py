"""Live training: loss, GRPO reward and its nine components, KL, lengths, LR, tokens/s, VRAM, log, samples."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid, Horizontal, Vertical, VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Header, RichLog, Static

from app.watch import RunModel
from app.widgets.chart import PALETTE, Line, LineChart
from app.widgets.health import DoctorCharts, HealthStrip, step_at
from app.widgets.vram import VramPanel
from engine.dims import DIMENSIONS, SHORT
from engine.stages.registry import TRAINING_STAGES

SMALL = [("loss", "loss"), ("kl", "KL"), ("completions/mean_length", "completion length"),
         ("learning_rate", "learning rate"), ("tokens_per_s", "tokens/s"), ("grad_norm", "grad norm")]


class TrainingScreen(Screen):
    BINDINGS = [
        Binding("tab", "next_stage", "Stage"),
        Binding("m", "toggle_multiples", "One chart/multiples"),
        Binding("s", "toggle_smooth", "EMA"),
        Binding("0", "toggle_total", "Total", show=False),
        Binding("c", "completions", "Completions"),
        Binding("h", "focus_health", "Health", show=False),
        *[Binding(str(i + 1), f"toggle_dim({i})", SHORT[d], show=False) for i, d in enumerate(DIMENSIONS)],
    ]

    def __init__(self) -> None:
        super().__init__()
        self.stage = "grpo"
        self.smooth = False
        self.multiples = False
        self.show_total = True
        self.shown_dims = set(range(len(DIMENSIONS)))
        self._seen_version = -1
        self._last_log = 0

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(id="training-title")
        yield HealthStrip(id="health-strip")
        with Horizontal():
            with VerticalScroll(id="training-charts"):
                yield LineChart("reward", id="chart-reward")
                yield LineChart("judge", id="chart-judge")
                yield Grid(*[LineChart(f"{SHORT[d]}", id=f"chart-dim-{i}") for i, d in enumerate(DIMENSIONS)], id="dim-grid")
                yield Grid(*[LineChart(title, id=f"chart-{i}") for i, (_, title) in enumerate(SMALL)], id="small-grid")
                yield DoctorCharts(id="doctor-grid")
            with Vertical(id="training-side"):
                yield VramPanel(id="vram")
                yield Static(id="samples")
                yield RichLog(id="training-log", markup=False, wrap=True, max_lines=300)
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#dim-grid").display = False
        self.query_one("#chart-judge").display = False
        self.update_from(self.app.model)  # type: ignore[attr-defined]

    def on_screen_resume(self) -> None:
        self._seen_version = -1
        self.update_from(self.app.model)  # type: ignore[attr-defined]

    def _pick_stage(self, model: RunModel) -> None:
        running = [s.name for s in model.stages if s.status == "running" and s.name in TRAINING_STAGES]
        if running and running[0] != self.stage and self._seen_version < 0:
            self.stage = running[0]

    def _line(self, model: RunModel, key: str, label: str, color: str) -> Line | None:
        s = model.get(self.stage, key)
        if s is None or not s.n:
            return None
        steps, values = s.view(self.smooth)
        return Line(label, steps, values, color)

    def update_from(self, model: RunModel) -> None:
        if model.version == self._seen_version:
            return
        self._pick_stage(model)
        self._seen_version = model.version
        row = model.stage(self.stage)
        status = row.status if row else "not in this run"
        keys = model.keys(self.stage)
        title = Text(f"{self.stage}: {status}", style="bold")
        title.append(f"   tab: next stage   m: {'multiples' if self.multiples else 'one chart'}   "
                     f"s: EMA {'on' if self.smooth else 'off'}   0-9: toggle total/components", style="dim")
        self.query_one("#training-title", Static).update(title)
        # Reward: the total and the nine components (TRL's rewards/<dim>/mean), or the loss where there is no reward.
        has_reward = "reward" in keys or any(k.startswith("rewards/") for k in keys)
        lines = []
        if has_reward:
            if self.show_total and (ln := self._line(model, "reward", "reward", PALETTE[9])):
                lines.append(ln)
            if not self.multiples:
                for i, d in enumerate(DIMENSIONS):
                    if i in self.shown_dims and (ln := self._line(model, f"rewards/{d}/mean", SHORT[d], PALETTE[i])):
                        lines.append(ln)
        else:
            for key, label in (("loss", "loss"), ("lm_loss", "LM loss"), ("kl_loss", "KL")):
                if ln := self._line(model, key, label, PALETTE[0 if key == "loss" else 2]):
                    lines.append(ln)
        chart = self.query_one("#chart-reward", LineChart)
        chart.border_title = "reward: total and components" if has_reward else "loss"
        chart.set_lines(lines)
        grid = self.query_one("#dim-grid")
        grid.display = self.multiples and has_reward
        if grid.display:
            for i, d in enumerate(DIMENSIONS):
                ln = self._line(model, f"rewards/{d}/mean", SHORT[d], PALETTE[i])
                self.query_one(f"#chart-dim-{i}", LineChart).set_lines([ln] if ln else [])
        self._update_judge(model, keys)
        for i, (key, title_) in enumerate(SMALL):
            ln = self._line(model, key, title_, PALETTE[i % 9])
            self.query_one(f"#chart-{i}", LineChart).set_lines([ln] if ln else [])
        self.query_one(VramPanel).update_from(model, self.stage)
        self.query_one(HealthStrip).update_from(model, self.stage)
        self.query_one(DoctorCharts).update_from(model, self.stage, self.smooth)
        self._update_samples(model)
        log = self.query_one("#training-log", RichLog)
        for r in model.logs:
            if r.id > self._last_log and r.stage == self.stage:
                log.write(Text(r.message))
        if model.logs:
            self._last_log = max(self._last_log, model.logs[-1].id)

    def _update_judge(self, model: RunModel, keys: list[str]) -> None:
        """GRPO's LLM judge per step (calls, cache hits, failures), with the run's failure count in the title."""
        chart = self.query_one("#chart-judge", LineChart)
        chart.display = "judge/calls" in keys
        if not chart.display:
            return
        total = {}
        for key in ("judge/calls", "judge/failures", "judge/unscored"):
            s = model.get(self.stage, key)
            total[key] = int(s.view(False)[1].sum()) if s is not None and s.n else 0
        calls, failed = total["judge/calls"], total["judge/failures"]
        share = f"{failed / calls:.0%}" if calls else "n/a"
        chart.border_title = (f"judge: {failed} of {calls} calls failed ({share}); "
                              f"{total['judge/unscored']} completions got no reward")
        lines = [ln for i, (key, label) in enumerate((("judge/calls", "calls"), ("judge/cache_hits", "cache hits"),
                                                      ("judge/failures", "failures")))
                 if (ln := self._line(model, key, label, PALETTE[(0, 2, 3)[i]]))]
        chart.set_lines(lines)

    def _update_samples(self, model: RunModel) -> None:
        samples = model.samples.get(self.stage, [])
        text = Text("latest samples\n", style="bold")
        if not samples:
            text.append("none yet (GRPO stores a few every grpo.sample_every steps)", style="dim")
        for s in samples[:3]:
            reward = "n/a" if s["reward"] is None else f"{s['reward']:.3f}"
            text.append(f"step {s['step']}  reward {reward}\n", style="bold")
            text.append("prompt: ", style="dim")
            text.append(s["prompt"][:200] + "\n")
            text.append(s["completion"][:400] + "\n")
            scores = "  ".join(f"{SHORT[d]} {v:.2f}" for d, v in s["scores"].items() if v is not None)
            text.append(scores + "\n\n", style="dim")
        self.query_one("#samples", Static).update(text)

    # -- actions --------------------------------------------------------------------------------

    def _redraw(self) -> None:
        self._seen_version = -2
        self.update_from(self.app.model)  # type: ignore[attr-defined]

    def action_next_stage(self) -> None:
        i = TRAINING_STAGES.index(self.stage) if self.stage in TRAINING_STAGES else -1
        self.stage = TRAINING_STAGES[(i + 1) % len(TRAINING_STAGES)]
        self.query_one("#training-log", RichLog).clear()
        self._last_log = 0
        self._redraw()

    def action_toggle_smooth(self) -> None:
        self.smooth = not self.smooth
        self._redraw()

    def action_toggle_multiples(self) -> None:
        self.multiples = not self.multiples
        self._redraw()

    def action_toggle_total(self) -> None:
        self.show_total = not self.show_total
        self._redraw()

    def action_toggle_dim(self, i: int) -> None:
        self.shown_dims ^= {i}
        self._redraw()

    # -- the GRPO doctor: health strip and completions --------------------------------------------

    def action_focus_health(self) -> None:
        self.query_one(HealthStrip).focus_first()

    def action_completions(self, step: float | None = None) -> None:
        from app.screens.completions import CompletionsScreen

        run_dir = self.app.model.run_dir  # type: ignore[attr-defined]
        if run_dir is not None:
            self.app.push_screen(CompletionsScreen(run_dir, self.stage, step))

    def on_click(self, event) -> None:
        """A click on the reward chart opens that step's completions (the nearest sampled step)."""
        chart = self.query_one("#chart-reward", LineChart)
        if event.widget is chart:
            step = step_at(chart, event.get_content_offset(chart))
            if step is not None:
                self.action_completions(step)
