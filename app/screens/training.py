"""Live training: loss, GRPO reward and its nine components, KL, lengths, LR, tokens/s, VRAM (or RAM/CPU), log, samples.

Layout slots other rooms fill: `#training-charts` holds the reward chart, the small multiples and the small grid
(extra charts go in `SMALL` or their own grid there); `#training-side` holds the device panel, samples and log.
"""

from __future__ import annotations

import time

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid, Horizontal, Vertical, VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Header, RichLog, Static

from app.run_model import RunModel
from app.failures import ReportsFailures
from app.widgets.quiet import update_if_changed
from app.widgets.chart import PALETTE, Line, LineChart
from app.widgets.health_strip import DoctorCharts, HealthStrip, step_at
from app.widgets.vram import HostSample, VramPanel, sample_host
from app.screens.base import QuickResume
from engine.dims import DIMENSIONS, SHORT
from engine.progress import progress_cell
from engine.registry import TRAINING_STAGES
from engine.text import inert

SMALL = [("loss", "loss"), ("kl", "KL"), ("completions/mean_length", "completion length"),
         ("learning_rate", "learning rate"), ("tokens_per_s", "tokens/s"), ("grad_norm", "grad norm")]
HOST_SAMPLE_S = 1.0
CHART_EVERY_S = 0.25  # live charts at 4 Hz: a poll (0.2 s) plus this stays under the 500 ms commit-to-screen target
# Redraws are spread over frames: a frame redraws at most this many charts (each costs 2-8 ms of the UI thread to
# draw and compose), so a key pressed while the charts catch up waits for a few charts, never for all of them.
CHARTS_PER_FRAME = 3


class TrainingScreen(ReportsFailures, QuickResume, Screen):
    BINDINGS = [
        Binding("tab", "next_stage(1)", "stage", priority=True),
        Binding("shift+tab", "next_stage(-1)", "prev stage", show=False, priority=True),
        Binding("m", "toggle_multiples", "multiples"),
        Binding("t", "toggle_smooth", "EMA"),
        Binding("0", "toggle_total", "total", show=False),
        *[Binding(str(i + 1), f"toggle_dim({i})", f"toggle {SHORT[d]}", show=False) for i, d in enumerate(DIMENSIONS)],
        Binding("l", "completions", "completions"),
        Binding("h", "focus_health", "health", show=False),
        # grpo-dims trains one LoRA per dimension: [ ] pick whose charts are shown (the same keys as on Traces)
        Binding("right_square_bracket", "dim(1)", "dimension", show=False, key_display="]"),
        Binding("left_square_bracket", "dim(-1)", "prev dimension", show=False, key_display="["),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.stage = "grpo"
        self.follow = True  # the view follows the running training stage until the user picks one with Tab
        self.smooth = False
        self.multiples = False
        self.show_total = True
        self.shown_dims = set(range(len(DIMENSIONS)))
        self._seen_version = -1
        self._last_log = 0
        self._last_running: str | None = None
        self._charts_at = 0.0
        self._catch_up = None
        self._pending: dict[LineChart, list[Line]] = {}  # charts to redraw, in order, a few per frame
        self._pumping = False
        self.prefix = ""  # grpo-dims: the dimension whose LoRA is charted ("entropy_reduction/"); "" elsewhere
        self.prefix_pinned = False  # chosen with d; otherwise the dimension training now

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(id="training-title")
        yield HealthStrip(id="health-strip")
        with Horizontal(id="training-main"):
            with VerticalScroll(id="training-charts"):
                yield LineChart("reward", id="chart-reward")
                yield LineChart("judge", id="chart-judge")
                yield Grid(*[LineChart(f"{SHORT[d]}", id=f"chart-dim-{i}") for i, d in enumerate(DIMENSIONS)], id="dim-grid")
                yield Grid(*[LineChart(title, id=f"chart-{i}") for i, (_, title) in enumerate(SMALL)], id="small-grid")
                yield DoctorCharts(id="doctor-grid")
            with Vertical(id="training-side"):
                yield VramPanel(id="vram")
                yield Static(id="samples")
                yield RichLog(id="training-log", markup=False, wrap=True, max_lines=300, min_width=20)  # wrap to the pane
        yield Footer(compact=True, show_command_palette=False)  # q and ? stay on at 80 columns (ctrl+p: palette)

    def on_mount(self) -> None:
        # The widgets every poll touches, found once (a query walks the screen's DOM each time).
        self._reward = self.query_one("#chart-reward", LineChart)
        self._judge = self.query_one("#chart-judge", LineChart)
        self._dim_grid = self.query_one("#dim-grid", Grid)
        self._dims = [self.query_one(f"#chart-dim-{i}", LineChart) for i in range(len(DIMENSIONS))]
        self._small = [self.query_one(f"#chart-{i}", LineChart) for i in range(len(SMALL))]
        self._title_w = self.query_one("#training-title", Static)
        self._log_w = self.query_one("#training-log", RichLog)
        self._dim_grid.display = False
        self._judge.display = False
        self.update_from(self.app.model, force=True)  # type: ignore[attr-defined]
        self.set_interval(HOST_SAMPLE_S, self._sample)
        self._sample()  # the first figures at once, not a second later

    def on_screen_resume(self) -> None:
        self.update_from(self.app.model, force=True)  # type: ignore[attr-defined]

    def on_resize(self) -> None:
        if self.query("#training-title"):  # the header's hints fit the new width
            update_if_changed(self.query_one("#training-title", Static), self._title(self.app.model))  # type: ignore[attr-defined]

    # -- which stage: those of the run that train; the running one unless the user chose -----------

    def run_stages(self, model: RunModel) -> list[str]:
        """The training stages of this run: selected, or started at least once."""
        names = [s.name for s in model.stages if s.name in TRAINING_STAGES and (s.selected or s.attempts)]
        return names or ([self.stage] if model.run_dir is None else [])

    def _pick_stage(self, model: RunModel) -> None:
        running = next((s.name for s in model.stages if s.status == "running" and s.name in TRAINING_STAGES), None)
        if running is not None and running != self._last_running:
            self.follow = True  # a new training stage started: show it
        self._last_running = running
        stages = self.run_stages(model)
        target = running if self.follow and running else self.stage
        if stages and target not in stages:
            target = stages[0]
        if target != self.stage:
            self._switch(target)

    def prefixes(self, model: RunModel) -> list[str]:
        """The per-dimension metric prefixes of the stage shown, in the order they started (grpo-dims), else []."""
        out: dict[str, None] = {}
        for stage, key in model.series:  # insertion order: the order the rows arrived
            head = key.split("/", 1)[0]
            if stage == self.stage and head in DIMENSIONS and "/" in key:
                out[head + "/"] = None
        return list(out)

    def _pick_prefix(self, model: RunModel) -> None:
        prefixes = self.prefixes(model)
        if not prefixes:
            self.prefix = ""
        elif not self.prefix_pinned or self.prefix not in prefixes:
            self.prefix = prefixes[-1]  # the dimension training now (they train one after another)

    def _switch(self, stage: str) -> None:
        self.stage = stage
        self.prefix, self.prefix_pinned = "", False
        self.query_one("#training-log", RichLog).clear()
        self._last_log = 0
        self.query_one(VramPanel).reset()

    # -- drawing ------------------------------------------------------------------------------------

    def _line(self, model: RunModel, key: str, label: str, color: str, bold: bool = False) -> Line | None:
        s = model.get(self.stage, self.prefix + key)
        if s is None or not s.n:
            return None
        steps, values = s.view(self.smooth)
        return Line(label, steps, values, color, bold)

    def _title(self, model: RunModel) -> Text:
        row = model.stage(self.stage)
        stages = self.run_stages(model)
        title = Text()
        if not stages:
            return Text("no training stage in this run (start one with s)", style="dim")
        for name in stages:
            style = "bold reverse" if name == self.stage else "dim"
            title.append(f" {name} ", style=style)
            title.append(" ")
        title.append("  ")
        if row is None:
            title.append("not started", style="dim")
        else:
            eta = getattr(self.app, "etas", {}).get(self.stage)
            title.append(f"{row.status} ", style="bold")
            title.append(progress_cell(row.status, row.progress, row.progress_total, eta))
        if self.prefix:
            title.append(f"  {self.prefix.rstrip('/')}", style="bold")
            title.append(" ([ ]: dimension)", style="dim")
        # The hints go as far as the line allows: the header stays one line at any width (? lists every key).
        room = self.size.width - 2 - title.cell_len
        for hint in ("  following" if self.follow else "  pinned (tab)", f"  t: EMA {'on' if self.smooth else 'off'}",
                     f"  m: {'multiples' if self.multiples else 'one chart'}", "  0-9: lines"):
            if len(hint) > room:
                break
            title.append(hint, style="dim")
            room -= len(hint)
        title.truncate(max(self.size.width - 2, 20), overflow="ellipsis")
        return title

    def update_from(self, model: RunModel, force: bool = False) -> None:
        """A poll brought rows: title and log at once; charts at most every CHART_EVERY_S, so that keys stay quick
        while metrics pour in (a key redraws at once, with force)."""
        if (model.version == self._seen_version and not force) or not hasattr(self, "_title_w"):
            return  # nothing new, or a poll that landed before the screen was composed
        self._pick_stage(model)
        self._pick_prefix(model)
        self._seen_version = model.version
        update_if_changed(self._title_w, self._title(model), layout=False)  # one line, always (#training-title)
        log = self._log_w
        for r in model.logs:
            if r.id > self._last_log and r.stage == self.stage:
                log.write(Text(inert(r.message), style="red" if r.level == "error" else ""))
        if model.logs:
            self._last_log = max(self._last_log, model.logs[-1].id)
        wait = CHART_EVERY_S - (time.monotonic() - self._charts_at)
        if force or wait <= 0:
            self._draw_charts(model, first=1 if force else CHARTS_PER_FRAME)
        elif self._catch_up is None:
            self._catch_up = self.set_timer(wait, self._charts_due)

    def _charts_due(self) -> None:
        self._catch_up = None
        self._draw_charts(self.app.model)  # type: ignore[attr-defined]

    # -- charts: what each shows is worked out at once; the redraws go out a few per frame --------------------

    def _queue(self, chart: LineChart, lines: list[Line]) -> None:
        self._pending[chart] = lines  # a newer picture replaces one still waiting, in its place in the order

    def _pump(self, budget: int = CHARTS_PER_FRAME, scheduled: bool = False) -> None:
        """Hand up to `budget` changed charts their lines (each repaints in the next frame); the rest after it."""
        if scheduled:
            self._pumping = False
        while self._pending and budget > 0:
            chart = next(iter(self._pending))
            if chart.set_lines(self._pending.pop(chart)):
                budget -= 1
        if self._pending and not self._pumping:  # one follow-up at a time
            self._pumping = True
            self.call_after_refresh(self._pump, CHARTS_PER_FRAME, True)

    def charts_settled(self) -> bool:
        """Every chart shows the newest lines handed to it (tests and the bench wait for this)."""
        return not self._pending

    def _draw_charts(self, model: RunModel, first: int = CHARTS_PER_FRAME) -> None:
        """Work out every chart's lines, then redraw: `first` charts in the next frame (the reward chart leads), the
        others a few per frame after it."""
        if not self.query(DoctorCharts):
            return  # a poll or a timer that landed while the screen is built or torn down (the app closing)
        self._charts_at = time.monotonic()
        keys = [k[len(self.prefix):] for k in model.keys(self.stage) if k.startswith(self.prefix)]
        # Reward: the weighted total (bold, on top) and the nine components, or the loss where there is no reward.
        has_reward = "reward" in keys or any(k.startswith("rewards/") for k in keys)
        lines = []
        if has_reward:
            if self.show_total and (ln := self._line(model, "reward", "reward", PALETTE[9], bold=True)):
                lines.append(ln)
            if not self.multiples:
                for i, d in enumerate(DIMENSIONS):
                    if i in self.shown_dims and (ln := self._line(model, f"rewards/{d}/mean", SHORT[d], PALETTE[i])):
                        lines.append(ln)
        else:
            for key, label in (("loss", "loss"), ("lm_loss", "LM loss"), ("kl_loss", "KL")):
                if ln := self._line(model, key, label, PALETTE[0 if key == "loss" else 2], bold=key == "loss"):
                    lines.append(ln)
        chart = self._reward
        chart.border_title = "reward: weighted total (bold) and components" if has_reward else "loss"
        self._queue(chart, lines)
        grid = self._dim_grid
        grid.display = self.multiples and has_reward
        if grid.display:
            for i, d in enumerate(DIMENSIONS):
                ln = self._line(model, f"rewards/{d}/mean", SHORT[d], PALETTE[i])
                self._queue(self._dims[i], [ln] if ln else [])
        self._update_judge(model, keys)
        for i, (key, title_) in enumerate(SMALL):
            ln = self._line(model, key, title_, PALETTE[i % 9])
            self._queue(self._small[i], [ln] if ln else [])
        for doctor, doctor_lines in self.query_one(DoctorCharts).chart_lines(model, self.stage, self.smooth, self.prefix):
            self._queue(doctor, doctor_lines)
        self.query_one(VramPanel).update_from(model, self.stage)
        self.query_one(HealthStrip).update_from(model, self.stage, self.prefix)
        self._update_samples(model)
        self._pump(first)

    def _update_judge(self, model: RunModel, keys: list[str]) -> None:
        """GRPO's LLM judge per step (calls, cache hits, failures), with the run's failure count in the title."""
        chart = self._judge
        chart.display = "judge/calls" in keys
        if not chart.display:
            return
        total = {}
        for key in ("judge/calls", "judge/failures", "judge/unscored"):
            s = model.get(self.stage, self.prefix + key)
            total[key] = int(s.view(False)[1].sum()) if s is not None and s.n else 0
        calls, failed = total["judge/calls"], total["judge/failures"]
        share = f"{failed / calls:.0%}" if calls else "n/a"
        chart.border_title = (f"judge: {failed} of {calls} calls failed ({share}); "
                              f"{total['judge/unscored']} completions got no reward")
        lines = [ln for i, (key, label) in enumerate((("judge/calls", "calls"), ("judge/cache_hits", "cache hits"),
                                                      ("judge/failures", "failures")))
                 if (ln := self._line(model, key, label, PALETTE[(0, 2, 3)[i]]))]
        self._queue(chart, lines)

    def _update_samples(self, model: RunModel) -> None:
        samples = model.samples.get(self.stage, [])
        text = Text("latest samples\n", style="bold")
        if not samples:
            text.append("none yet (GRPO stores a few every grpo.sample_every steps)", style="dim")
        for s in samples[:2]:
            reward = "n/a" if s["reward"] is None else f"{s['reward']:.3f}"
            text.append(f"step {s['step']}  reward {reward}\n", style="bold")
            text.append("prompt: ", style="dim")
            text.append(inert(s["prompt"][:200], oneline=True) + "\n")
            text.append(inert(s["completion"][:400]) + "\n")
            scores = "  ".join(f"{SHORT.get(d, inert(d))} {v:.2f}" for d, v in s["scores"].items() if v is not None)
            text.append(scores + "\n\n", style="dim")
        update_if_changed(self.query_one("#samples", Static), text)

    # -- RAM and CPU of the stage's process, sampled off the UI thread ------------------------------

    def _sample(self) -> None:
        row = self.app.model.stage(self.stage)  # type: ignore[attr-defined]
        panel = self.query_one(VramPanel)
        if not panel.has_gpu:
            self._sample_host(row.pid if row is not None and row.status == "running" else None)

    @work(thread=True, exclusive=True, group="host-sample", exit_on_error=False)
    def _sample_host(self, pid: int | None) -> None:
        self.post_message(HostSample(sample_host(pid), time.time()))

    def on_host_sample(self, message: HostSample) -> None:
        self.query_one(VramPanel).show_host(message)

    # -- actions ------------------------------------------------------------------------------------

    def _redraw(self) -> None:
        self.update_from(self.app.model, force=True)  # type: ignore[attr-defined]

    def action_next_stage(self, step: int) -> None:
        stages = self.run_stages(self.app.model)  # type: ignore[attr-defined]
        if not stages:
            return
        i = stages.index(self.stage) if self.stage in stages else -1
        self.follow = False
        self._switch(stages[(i + step) % len(stages)])
        self._redraw()

    def action_dim(self, step: int) -> None:
        prefixes = self.prefixes(self.app.model)  # type: ignore[attr-defined]
        if not prefixes:
            self.notify("one reward here: [ ] pick a dimension in grpo-dims, which trains one LoRA per dimension")
            return
        i = prefixes.index(self.prefix) if self.prefix in prefixes else -1
        self.prefix, self.prefix_pinned = prefixes[(i + step) % len(prefixes)], True
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
        if run_dir is None:
            return
        # One instance, installed: opening it again does not build its widgets again (a table, a scroll pane).
        if not self.app.is_screen_installed("completions"):
            self.app.install_screen(CompletionsScreen(run_dir, self.stage, step), "completions")
        screen = self.app.get_screen("completions")
        screen.show_step(run_dir, self.stage, step)  # type: ignore[attr-defined]
        self.app.push_screen("completions")

    def on_click(self, event) -> None:
        """A click on the reward chart opens that step's completions (the nearest sampled step)."""
        chart = self.query_one("#chart-reward", LineChart)
        if event.widget is chart:
            step = step_at(chart, event.get_content_offset(chart))
            if step is not None:
                self.action_completions(step)
