"""Run control from the panel: every action that stops, replaces or doubles work asks first, naming what will happen.

One meaning per key on every screen: n new run, s start a stage, c cancel, r resume, k skip, e config.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from textual import work
from textual.app import SystemCommand
from textual.message import Message
from textual.screen import Screen

from app.screens.confirm import ConfirmScreen, StagePicker
from engine.registry import STAGES
from engine.errors import UserError
from engine.runner import supervisor as sup

# The app's own actions, for the command palette (screen bindings are added from the screen shown).
APP_COMMANDS = [
    ("New run", "Start a new run from a config (asks first when a run is live)", "new_run"),
    ("Start a stage", "Pick any stage of the pipeline and start it for the open run", "start_stage"),
    ("Cancel", "Cancel the running and pending stages of the open run (asks first)", "cancel"),
    ("Resume", "Rerun what did not succeed, from checkpoints (asks first)", "resume_run"),
    ("Skip a stage", "Mark a stage of the open run skipped (asks first)", "skip"),
    ("Edit config", "View or edit the open run's config", "edit_config"),
    ("Help", "Every key of every screen", "help"),
    ("Go to pipeline", "F2", "switch_mode('pipeline')"), ("Go to training", "F3", "switch_mode('training')"),
    ("Go to traces", "F4", "switch_mode('traces')"), ("Go to runs", "F5", "switch_mode('runs')"),
    ("Go to eval", "F6", "switch_mode('eval')"), ("Go to commitment sweep", "F7", "switch_mode('commitment')"),
]


@dataclass
class EtaUpdate(Message):
    """Seconds left per running stage of the open run (from its worker's own rate), read by the poll thread."""

    run_dir: Path
    etas: dict[str, float | None]

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, EtaUpdate)  # only the newest ETAs matter


def _join(names: list[str]) -> str:
    return ", ".join(names) if names else "none"


class RunControl:
    """Mixed into AbaApp (needs its `model`, `runs_dir`, `config_path`, `open_run` and App's own methods): the
    confirmations and the engine calls behind them, each call in a thread."""

    # -- the command palette: the app's actions and the shown screen's keys --------------------------

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        for title, help_text, action in APP_COMMANDS:
            yield SystemCommand(title, help_text, self._runner(action))
        seen = {a for _, _, a in APP_COMMANDS}
        for key, active in screen.active_bindings.items():
            binding = active.binding
            if binding.action in seen or not binding.description or active.node is self:
                continue
            seen.add(binding.action)
            yield SystemCommand(binding.description[:1].upper() + binding.description[1:],
                                f"key {binding.key_display or key} on this screen",
                                self._runner(binding.action, active.node))

    def _runner(self, action: str, node=None) -> Callable[[], object]:
        return lambda: self.run_action(action, node)

    # -- the open run ------------------------------------------------------------------------------

    def _rc_rows(self) -> dict:
        return {s.name: s for s in self.model.stages}

    def _rc_running(self) -> list[str]:
        return [s.name for s in self.model.stages if s.status == "running"]

    def _rc_need_run(self) -> Path | None:
        run_dir = self.model.run_dir
        if run_dir is None:
            self.notify("no run open: press n to start one, or F5 to open one", severity="warning")
        return run_dir

    def _rc_selected(self) -> str | None:
        """The stage highlighted on the screen shown (the pipeline's table), if any."""
        return getattr(self.screen, "selected_stage", lambda: None)()

    def _rc_confirm(self, title: str, what: str, then: Callable[[], object]) -> None:
        def answered(yes: bool | None) -> None:
            if yes:
                then()

        self.push_screen(ConfirmScreen(title, what), answered)

    # -- start, cancel, skip, resume, new run -------------------------------------------------------

    def action_start_stage(self, stage: str | None = None) -> None:
        """Pick a stage (any in the pipeline, also ones not in the run's list), confirm a re-run, start it."""
        if self._rc_need_run() is None:
            return
        current = stage or self._rc_selected()

        def picked(name: str | None) -> None:
            if name is None:
                return
            row, running = self._rc_rows().get(name), self._rc_running()
            if running:
                self.notify(f"{_join(running)} running: wait for it or cancel it (c) before starting {name}",
                            severity="warning")
            elif row is not None and row.attempts:
                self._rc_confirm(f"Re-run {name}?",
                                 f"{name} has run {row.attempts} time(s) (last: {row.status}). Starting it again "
                                 "replaces its results and metrics with the new attempt's; a stage with a checkpoint "
                                 "continues from it.", lambda: self.start_stage(name))
            else:
                self.start_stage(name)

        self.push_screen(StagePicker(list(STAGES), self._rc_rows(), self._rc_running(), current), picked)

    def action_cancel(self) -> None:
        """Cancel the run: what is running stops at a checkpoint, what is pending does not start. Named first."""
        if self._rc_need_run() is None:
            return
        live = [r for r in self.model.stages if r.selected and r.status in ("running", "pending")]
        if not live:
            self.notify("nothing to cancel: no stage is running or pending")
            return
        running = [r.name for r in live if r.status == "running"]
        pending = [r.name for r in live if r.status == "pending"]
        what = []
        if running:
            what.append(f"{_join(running)}: saves a checkpoint at its next step, then stops "
                        "(killed after the run's cancel grace period).")
        if pending:
            what.append(f"{_join(pending)}: will not start (marked cancelled; r resumes them later).")
        self._rc_confirm(f"Cancel {_join(running + pending)}?", "\n".join(what), lambda: self.cancel_run(None))

    def action_skip(self, stage: str | None = None) -> None:
        if self._rc_need_run() is None:
            return

        def picked(name: str | None) -> None:
            if name is None:
                return
            row = self._rc_rows().get(name)
            if row is not None and row.status == "running":
                self.notify(f"{name} is running: cancel it (c) first", severity="warning")
                return
            self._rc_confirm(f"Skip {name}?", f"{name} is marked skipped and will not run in this run; stages after "
                             "it run without its output (start it later with s).", lambda: self.skip_stage(name))

        stage = stage or self._rc_selected()
        if stage:
            picked(stage)
        else:
            self.push_screen(StagePicker(list(STAGES), self._rc_rows(), self._rc_running(), None, "Skip"), picked)

    def action_resume_run(self) -> None:
        if self._rc_need_run() is None:
            return
        todo = [r.name for r in self.model.stages if r.selected and r.status not in ("succeeded", "skipped")]
        if not todo:
            self.notify("nothing to resume: every stage of the run succeeded or was skipped")
            return
        self._rc_confirm("Resume the run?", f"Starts {_join(todo)} again, each from its last checkpoint.",
                         self.resume_run)

    def action_new_run(self) -> None:
        running = self._rc_running()
        run_dir = self.model.run_dir
        if running and run_dir is not None:
            self._rc_confirm("Start a second run at the same time?",
                             f"Run {run_dir.name} is live ({_join(running)} running). A new run starts its own "
                             "workers beside it: both share this machine's cores and memory (and its GPU).",
                             self._new_run_dialog)
        else:
            self._new_run_dialog()

    def _new_run_dialog(self) -> None:
        from app.screens.config import NewRunScreen

        def chosen(choice) -> None:
            if choice is not None:
                self._start_new(choice)

        self.push_screen(NewRunScreen(self.config_path, self.runs_dir), chosen)

    # -- the engine calls, in threads ---------------------------------------------------------------

    @work(thread=True, group="actions", exit_on_error=False)
    def _start_new(self, choice) -> None:
        self.starting_run = True  # the runs-folder watch leaves the new folder to us
        try:
            run_dir = sup.start(choice.config, self.runs_dir, name=choice.name, data_from=choice.data_from)
            self.call_from_thread(self.open_run, run_dir)
        finally:
            self.starting_run = False
        data = f", data from {choice.data_from}" if choice.data_from else ""
        self.call_from_thread(self.notify, f"run {run_dir.name} started from {choice.config}{data}")

    @work(thread=True, group="actions", exit_on_error=False)
    def start_stage(self, stage: str) -> None:
        if self.model.run_dir is None:
            raise UserError("no run open: press n to start one")
        sup.start_stage(self.model.run_dir, stage)
        self.call_from_thread(self.notify, f"{stage} started")

    @work(thread=True, group="actions", exit_on_error=False)
    def resume_run(self) -> None:
        sup.resume(self.model.run_dir)
        self.call_from_thread(self.notify, "resuming the stages that did not succeed")

    @work(thread=True, group="actions", exit_on_error=False)
    def cancel_run(self, stage: str | None = None) -> None:
        self.call_from_thread(self.notify, "asking the stage to save a checkpoint and stop...")
        names = sup.cancel(self.model.run_dir, stage)
        self.call_from_thread(self.notify, f"cancelled: {', '.join(names) or 'nothing was running'}")

    @work(thread=True, group="actions", exit_on_error=False)
    def skip_stage(self, stage: str) -> None:
        sup.skip(self.model.run_dir, stage)
        self.call_from_thread(self.notify, f"{stage} skipped")
