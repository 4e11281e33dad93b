"""The control panel: rooms as modes, one poll thread that reads the run database, engine calls in workers."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from pathlib import Path

from textual import events, on, work
from textual.app import App, ScreenStackError
from textual.binding import Binding
from textual.css.query import NoMatches
from textual.screen import ModalScreen
from textual.widget import AwaitMount
from textual.worker import Worker, WorkerState

from app.control import EtaUpdate, RunControl
from app.messages import RunDelta, RunOpened, RunProblem
from app.quiet_gc import CHECK_S, QuietGC
from app.run_model import RunModel
from app.widgets.health_strip import first_fire_notices
from engine import config as config_mod
from engine.runner import supervisor as sup
from engine.progress import eta_left
from engine.runner.follow import Follower
from engine.dims import equal_weights
from engine.errors import UserError
from engine.store.check import describe_unreadable
from engine.text import inert

POLL_S = 0.2
RUNS_SCAN_S = 1.0  # how often the runs folder is listed for runs started elsewhere
# Rooms built in the background while the person reads the first one (F8, the playground, starts a model worker
# process: it is built when asked). A room's first build costs 150-300 ms of the UI thread (its widgets, their CSS, a
# first layout); built ahead, its first visit paints like a later one.
PREBUILT = ("training", "traces", "runs", "eval", "commitment")
PREBUILD_IDLE_S = 0.5  # ... one room at a time, each after this long without a key or a click
ROOT = Path(__file__).resolve().parent.parent


class AbaApp(RunControl, App):
    TITLE = "aba-tui"
    SUB_TITLE = "Entropy-Joy pipeline"
    CSS_PATH = ROOT / "styles" / "app.tcss"
    # Screen classes for narrow and short terminals (styles/app.tcss lays the rooms out again at 80x24).
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (100, "-wide")]
    VERTICAL_BREAKPOINTS = [(0, "-short"), (32, "-tall")]
    BINDINGS = [
        # Rooms: listed in the help screen and the palette, kept out of the footer so it stays short at 80 columns.
        Binding("f2", "switch_mode('pipeline')", "Pipeline", show=False),
        Binding("f3", "switch_mode('training')", "Training", show=False),
        Binding("f4", "switch_mode('traces')", "Traces", show=False),
        Binding("f5", "switch_mode('runs')", "Runs", show=False),
        Binding("f6", "switch_mode('eval')", "Eval", show=False),
        Binding("f7", "switch_mode('commitment')", "Commitment", show=False),
        Binding("f8", "switch_mode('playground')", "Playground", show=False),
        # Run control: one meaning on every screen; each asks first where it stops, replaces or doubles work.
        Binding("n", "new_run", "new run", show=False),
        Binding("s", "start_stage", "start stage", show=False),
        Binding("c", "cancel", "cancel", show=False),
        Binding("r", "resume_run", "resume", show=False),
        Binding("k", "skip", "skip", show=False),
        Binding("e", "edit_config", "config", show=False),
        Binding("question_mark,f1", "help", "help", key_display="?"),
        Binding("q", "quit", "quit"),
    ]
    CONTROL = frozenset({"new_run", "start_stage", "cancel", "resume_run", "skip", "edit_config", "help"})

    def __init__(self, runs_dir: Path, run_dir: Path | None = None, config_path: Path | None = None):
        from app.screens.commitment import CommitmentScreen
        from app.screens.evals import EvalScreen
        from app.screens.pipeline import PipelineScreen
        from app.screens.playground import PlaygroundScreen
        from app.screens.runs import RunsScreen
        from app.screens.traces import TracesScreen
        from app.screens.training import TrainingScreen

        self.MODES = {
            "pipeline": PipelineScreen, "training": TrainingScreen, "traces": TracesScreen, "runs": RunsScreen,
            "eval": EvalScreen, "commitment": CommitmentScreen, "playground": PlaygroundScreen,
        }
        super().__init__()
        self.runs_dir = runs_dir
        self.config_path = config_path
        self.model = RunModel()
        self.model.reset(run_dir)
        self.draft_stages = config_mod.load(config_path).run.stages if config_path else None
        self.etas: dict[str, float | None] = {}  # seconds left per running stage, read by the poll thread
        self.latency: list[float] = []  # commit-to-screen delays seen, for the latency benchmark
        self._weights: tuple[Path | None, dict[str, float]] = (None, {})
        self._delta_consumed = threading.Event()  # the last RunDelta was applied: the poll thread may post again
        self._delta_consumed.set()
        self.starting_run = False  # a run being started from this panel (its folder is not news)
        self.poll_waits = 0  # times the poll thread waited for the UI (backpressure), for the benchmark
        self.quiet_gc = QuietGC()  # full garbage collections wait for a pause in typing

    def on_mount(self) -> None:
        self.call_after_refresh(self.quiet_gc.install)  # what exists at the first frame lives as long as the panel
        self.set_interval(CHECK_S, self.quiet_gc.tick)
        self.run_worker(self._prebuild_rooms(), group="prebuild", exit_on_error=False)
        self.switch_mode("pipeline")
        self._resume_queue(self.runs_dir)
        if self.model.run_dir is not None:
            self.open_run(self.model.run_dir)
        self.watch_runs_folder()

    def on_unmount(self) -> None:
        self.quiet_gc.uninstall()

    def _handle_exception(self, error: Exception) -> None:
        # A room being built in the background when the panel closes: Textual composes nothing once it is shutting
        # down, so that room's on_mount (or its Header's title watcher) finds no children. Nothing is lost and
        # nothing is wrong with the run: not a crash to print on the way out.
        if isinstance(error, NoMatches) and (not self._running or self._exit):
            return
        super()._handle_exception(error)

    async def on_event(self, event: events.Event) -> None:
        if isinstance(event, events.InputEvent):
            self.quiet_gc.input_seen()
        await super().on_event(event)

    def switch_mode(self, mode: str):
        first = mode not in self._screen_stacks
        done = super().switch_mode(mode)
        if first:  # a room built for the first time: its widgets stay; out of the full collections' sight
            self.set_timer(1.0, self.quiet_gc.freeze)
        return done

    async def _prebuild_rooms(self) -> None:
        """Build the rooms not visited yet, one at a time, each once the person has not typed for PREBUILD_IDLE_S.

        The steps are Textual's own for a mode's first visit (App._init_mode: the screen made, its CSS loaded,
        registered, sized) and for a screen in the stack that is not shown (App.refresh_css: the stylesheet
        reparsed and applied to it), without making it the current screen; its first visit then only resumes it."""
        await asyncio.sleep(PREBUILD_IDLE_S)
        for mode in PREBUILT:
            while time.monotonic() - self.quiet_gc.last_input < PREBUILD_IDLE_S:
                await asyncio.sleep(0.1)
            if mode in self._screen_stacks or not self._running or self._exit:
                continue
            await self._build_room(mode)
        # The room shown at start was refreshed before it was mounted, so Textual never marked it up to date (its
        # count stays -1): returning to it would reparse and reapply every stylesheet (60-110 ms). Marked here;
        # a room that missed a change meanwhile is brought up to date first.
        for stack in list(self._screen_stacks.values()):
            for screen in stack:
                if screen._css_update_count != self._css_update_count and screen.is_mounted:
                    if screen is not self.screen:
                        self.stylesheet.update(screen)
                    screen._css_update_count = self._css_update_count
        self.quiet_gc.freeze()
        self.prebuilt_at = time.monotonic()

    async def _build_room(self, mode: str) -> None:
        screen = self.MODES[mode]()
        self._load_screen_css(screen)
        widgets = self._register(self, screen)
        self._screen_stacks[mode] = [screen]
        screen._screen_resized(self.size)
        await AwaitMount(screen, widgets)
        screen.post_message(events.Resize(self.size, self.size))  # its size classes (-wide, -tall...) set now
        await asyncio.sleep(0.05)  # keys pressed meanwhile go first; the mount's own callbacks run
        if screen is not self.screen and screen._css_update_count != self._css_update_count:
            self.stylesheet.set_variables(self.get_css_variables())
            self.stylesheet.reparse()  # the new widgets' default CSS
            self.stylesheet.update(screen)
            screen._css_update_count = self._css_update_count

    # -- runs started anywhere (the CLI, another panel) -----------------------------------------

    @work(thread=True, exclusive=True, group="runs-folder", exit_on_error=False)
    def watch_runs_folder(self) -> None:
        """Every RUNS_SCAN_S, the run folders that appeared since the panel opened: the newest opens when no run is
        open, the others are announced (F5 lists them)."""
        from textual.worker import get_current_worker

        worker = get_current_worker()
        seen = set(sup.list_run_dirs(self.runs_dir))
        while not worker.is_cancelled:
            time.sleep(RUNS_SCAN_S)
            now = sup.list_run_dirs(self.runs_dir)  # newest first
            new = [p for p in now if p not in seen]
            seen.update(new)
            if new:
                self.call_from_thread(self._runs_appeared, new)

    def _runs_appeared(self, new: list[Path]) -> None:
        new = [p for p in new if p != self.model.run_dir]  # one this panel started is open already
        if not new or self.starting_run:
            return
        if self.model.run_dir is None:
            self.open_run(new[0])
            self.notify(f"run {new[0].name} started elsewhere: following it (F5: every run)", markup=False)
            new = new[1:]
        for p in new:
            self.notify(f"run {p.name} started elsewhere (F5 to open it)", markup=False)
        screen = self.screen
        if hasattr(screen, "action_reload") and type(screen).__name__ == "RunsScreen":
            screen.action_reload()

    @work(thread=True, exclusive=True, group="queue", exit_on_error=False)
    def _resume_queue(self, root: Path) -> None:
        """A panel that starts finds queued runs without a driver (a reboot, a killed driver): start one."""
        from engine.sweep.queue import ensure_driver

        try:
            pid = ensure_driver(root)
        except Exception as err:  # the panel opens anyway; the queue is only reported
            self.call_from_thread(self.notify, f"run queue not resumed: {inert(err, oneline=True)}", severity="warning")
            return
        if pid:
            self.call_from_thread(self.notify, f"run queue resumed (driver pid {pid})")

    # -- the open run -----------------------------------------------------------------------

    def open_run(self, run_dir: Path | None) -> None:
        self.model.reset(run_dir)
        self.post_message(RunOpened(run_dir))
        if run_dir is not None:
            self.sub_title = f"run {run_dir.name}"
            self.poll(run_dir)

    @work(thread=True, exclusive=True, group="poll", exit_on_error=False)
    def poll(self, run_dir: Path) -> None:
        """The only reader of the run database for live data: rows newer than the last seen, every 200 ms.

        Backpressure: no new delta is read while the last one is still waiting for the UI thread. The follower's
        cursors stay put meanwhile, so the next poll brings everything at once (one delta, not a queue of them).
        """
        from textual.worker import get_current_worker

        worker = get_current_worker()
        poller: Follower | None = None
        consumed = self._delta_consumed
        try:
            while not worker.is_cancelled:
                while not consumed.wait(POLL_S) and not worker.is_cancelled:
                    self.poll_waits += 1  # the panel is behind: wait for it rather than pile up messages
                if worker.is_cancelled:
                    break
                try:
                    if poller is None:
                        poller = Follower(run_dir)  # the same reader `aba run` and `aba tail` follow with
                    delta = poller.poll()
                    running = [s for s in delta.stages if s.status == "running"]
                    etas = {s.name: eta_left(poller.store, s) for s in running}
                except (sqlite3.Error, OSError, UserError) as err:
                    # Damaged, unreadable or gone: said instead of the stages; read again from scratch a bit later.
                    self.post_message(RunProblem(run_dir, describe_unreadable(run_dir, err)))
                    if poller is not None:
                        poller.close()
                        poller = None
                    time.sleep(POLL_S * 10)
                    continue
                consumed.clear()
                self.post_message(RunDelta(delta))
                self.post_message(EtaUpdate(run_dir, etas))
                if not delta.more:
                    time.sleep(POLL_S)
        finally:
            if poller is not None:
                poller.close()

    @on(RunProblem)
    def _run_problem(self, message: RunProblem) -> None:
        if message.run_dir != self.model.run_dir:
            return
        if message.reason != self.model.problem:
            self.notify(inert(message.reason, oneline=True), severity="error", timeout=10, markup=False)
        self.model.problem = message.reason
        self.model.version += 1
        try:
            update = getattr(self.screen, "update_from", None)
        except ScreenStackError:
            return
        if update:
            update(self.model)

    @on(RunDelta)
    def _apply_delta(self, message: RunDelta) -> None:
        self._delta_consumed.set()  # the poll thread may read the next one (set first: a failure below must not stall it)
        if message.delta.run_dir != self.model.run_dir:
            return  # from a run no longer open
        changed = self.model.apply(message.delta)
        if message.delta.oldest_metric_time:
            self.latency.append(time.time() - message.delta.oldest_metric_time)
        for stage, old in changed:
            if stage.status == "succeeded":
                self.notify(f"{stage.name} succeeded", title="stage ended")
            elif stage.status in ("failed", "crashed"):
                reason = inert(stage.reason or "", oneline=True)  # it may quote a model's output
                self.notify(f"{stage.name} {stage.status}: {reason}", title="stage ended", severity="error", timeout=10,
                            markup=False)
            elif stage.status == "cancelled":
                self.notify(f"{stage.name} cancelled", severity="warning")
        fresh = [e for e in message.delta.events if e.time > time.time() - 60]  # not the old ones of a reattached run
        for text, severity in first_fire_notices(fresh):
            self.notify(text, title="health", severity=severity, timeout=10)
        try:
            update = getattr(self.screen, "update_from", None)
        except ScreenStackError:  # a poll that lands while the app closes
            return
        if update:
            update(self.model)

    @on(EtaUpdate)
    def _apply_etas(self, message: EtaUpdate) -> None:
        if message.run_dir == self.model.run_dir:
            self.etas = message.etas

    @on(RunOpened)
    def _run_opened(self, message: RunOpened) -> None:
        """The visible screen follows at once; the others catch up when they are shown (on_screen_resume)."""
        try:
            screen = self.screen
        except ScreenStackError:
            return
        if hasattr(screen, "open_store"):
            screen.open_store()
        if hasattr(screen, "update_from"):
            screen.update_from(self.model)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        """Every worker failure lands here, once (Harlequin's habit)."""
        if event.state == WorkerState.ERROR:
            err = event.worker.error
            where = event.worker.name.strip("_").replace("_", " ")
            text = str(err) if isinstance(err, UserError) else f"{where} failed: {type(err).__name__}: {err}"
            self.notify(inert(text, oneline=True), severity="error", timeout=10, markup=False)

    def run_weights(self) -> dict[str, float]:
        """The open run's reward weights (for the weighted score of an edited trace), read once per run."""
        run_dir = self.model.run_dir
        if run_dir is None:
            return equal_weights()
        if self._weights[0] != run_dir:
            self._weights = (run_dir, config_mod.load(run_dir / "config.toml").grpo.reward_weights)
        return self._weights[1]

    # -- actions (engine calls in threads; cancel waits out a grace period) ----------------

    def check_action(self, action: str, parameters: tuple) -> bool | None:
        """While a dialog is open, the run-control keys do nothing: a modal question blocks until it is answered."""
        if action in self.CONTROL and isinstance(self.screen, ModalScreen):
            return False
        return True

    def action_help(self) -> None:
        from app.screens.help import HelpScreen

        self.push_screen(HelpScreen())

    def action_edit_config(self) -> None:
        from app.screens.config import ConfigScreen

        if self.model.run_dir is not None:
            path, note = self.model.run_dir / "config.toml", "(this run's frozen config: used by stages started next)"
        elif self.config_path is not None:
            path, note = self.config_path, "(the config new runs start from)"
        else:
            self.notify("no run and no config to edit", severity="warning")
            return

        def saved(p: Path | None) -> None:
            if p is not None:
                self._weights = (None, {})  # the reward weights may have changed
                self.notify(f"saved {p}", markup=False)

        self.push_screen(ConfigScreen(path, note), saved)


def make_app(run_id: str | None = None, runs_dir: str | Path | None = None, config_path: str | Path | None = None) -> AbaApp:
    """The one factory for the CLI and the tests."""
    root = sup.runs_dir(runs_dir)
    cfg = Path(config_path) if config_path else None
    if cfg is not None:
        config_mod.load(cfg)  # a bad config is reported before the screen opens
    run_dir = sup.resolve_run(run_id, root) if run_id else None
    return AbaApp(root, run_dir, cfg)
