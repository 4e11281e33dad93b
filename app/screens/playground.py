"""The playground: one question to the run's models side by side, answers streamed, judged and kept.

The models run in the chat worker process (engine.playground.worker), never here: this screen sends commands and
folds the worker's events (the same fold as `aba chat`). Token events only mark a pane dirty; a 30 Hz tick draws
what changed, so a fast stream never floods the event loop. An answer's first token is drawn on the next tick; while
it streams on, its pane is redrawn at most every STREAM_REPAINT_S, and a redraw re-wraps only the answer's last
lines and lays the screen out only every RESERVE_ROWS new rows (GrowingText): keys do not wait behind the stream.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.css.query import NoMatches
from textual.containers import Container, Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.screen import ModalScreen
from textual.widgets import Checkbox, Collapsible, DataTable, Footer, Header, Input, Label, OptionList, Static

from app.screens.base import ReadingScreen
from app.widgets.quiet import StatusLine, fixed_rows, quiet_key, update_if_changed
from engine.dims import DIMENSIONS, SHORT
from engine.errors import UserError
from engine.playground.answers import Answer, Turn
from engine.playground.settings import ChatSettings
from engine.text import inert

ROOT = Path(__file__).resolve().parents[2]
REPAINT_S = 1 / 30
YIELD_CPU = True  # the chat worker below normal priority: keys first (engine.playground.client.lower_priority)
STREAM_REPAINT_S = 0.1  # a streaming answer's pane: 10 redraws a second (its first token and its end at once)
NARROW = 110  # columns below which the panes stack


def inert_text(text: object, style: str = "") -> Text:
    """Model output as a literal rich Text (no markup parsing), made inert by the one sanitiser."""
    return Text(inert(text), style=style)


CHUNK_CHARS = 800  # a growing text is cut at the first line end after this many characters
RESERVE_ROWS = 8  # rows a growing text is given ahead


class GrowingText(Vertical):
    """A text that grows at its end (a streamed answer), drawn as runs of whole lines, each its own Static.

    A redraw wraps and renders only the runs whose text changed, in practice the last one: as one Static, each
    redraw of a 400-token answer re-wrapped all of it and the layout pass measured all of it again. Runs are cut at
    the first line end after CHUNK_CHARS, so their bounds stay put as the text grows; the lines look as in one Static.
    """

    DEFAULT_CSS = "GrowingText { height: auto; } GrowingText > Static { height: auto; }"

    def __init__(self, *, classes: str = "") -> None:
        super().__init__(classes=classes)
        self._runs: list[Static] = []

    @staticmethod
    def cut(text: Text) -> list[Text]:
        plain, runs, start = text.plain, [], 0
        while True:
            end = plain.find("\n", start + CHUNK_CHARS)
            if end < 0:
                runs.append(text[start:])
                return runs
            runs.append(text[start:end])
            start = end + 1

    def show(self, text: Text, growing: bool = False) -> None:
        """growing: more text is coming. The last run is then given its rows RESERVE_ROWS at a time, so that most
        redraws repaint it without a layout pass of the screen (a layout for every new row cost 10-75 ms while two
        answers streamed); once the text is whole, every run is as high as its lines."""
        runs = self.cut(text)
        for i, run in enumerate(runs):
            last = i == len(runs) - 1
            if i < len(self._runs):
                static = self._runs[i]
                if last and growing:
                    self._grow(static, run)
                else:
                    if fixed_rows(static) is not None:
                        static.styles.height = "auto"  # whole now: its own height
                    update_if_changed(static, run)
            else:
                static = Static(run)
                static._quiet_key = quiet_key(run)  # as update_if_changed keeps it
                self._runs.append(static)
                self.mount(static)
        for static in self._runs[len(runs):]:
            static.remove()
        del self._runs[len(runs):]

    def _grow(self, static: Static, run: Text) -> None:
        width = static.content_size.width
        if not width:  # not laid out yet
            update_if_changed(static, run)
            return
        if not update_if_changed(static, run, layout=False):
            return
        rows = static.get_content_height(self.app.size, self.app.size, width)  # Textual's own measure (its wrap)
        have = fixed_rows(static)
        if have is None or rows > have:
            static.styles.height = rows + RESERVE_ROWS  # a layout pass now, then none for RESERVE_ROWS rows


class AnswerPane(VerticalScroll):
    """One model's answer: its think block (foldable), the answer, the stats line, the nine scores."""

    def __init__(self, model: str) -> None:
        super().__init__(classes="pg-pane")  # no id: a model's name may be a path, and old panes leave later
        self.model = model
        self.border_title = model

    def compose(self) -> ComposeResult:
        with Collapsible(title="thinking", collapsed=False, classes="pg-think"):
            yield GrowingText(classes="pg-reasoning")
        yield GrowingText(classes="pg-answer")
        yield Static(classes="pg-stats")
        yield Static(classes="pg-scores")

    def show(self, a: Answer, turn: Turn) -> None:
        """Draw what changed since the last call (the reasoning stops changing once the answer starts, the scores
        come at the end): an unchanged part costs nothing, a changed one-line part no layout pass."""
        reasoning, answer, open_ = a.parts
        think = self.query_one(Collapsible)
        # While it streams, the title stays put (a changing title is a layout pass of the screen at every redraw).
        title = "thinking …" if open_ else f"thinking ({len(reasoning)} chars)" if reasoning else "thinking (none)"
        if think.title != title:
            think.title = title
        self.query_one(".pg-reasoning", GrowingText).show(inert_text(reasoning, "italic"), growing=open_)
        body = inert_text(answer)
        if a.error:
            body = inert_text(a.error, "bold red")
        elif a.status == "waiting":
            body = Text("waiting…", style="dim")
        self.query_one(".pg-answer", GrowingText).show(body, growing=a.status == "streaming" and not a.error)
        update_if_changed(self.query_one(".pg-stats", Static), stats_line(a), layout="lines")
        update_if_changed(self.query_one(".pg-scores", Static), scores_text(a, turn))
        subtitle = a.source and inert(a.source, oneline=True)
        if self.border_subtitle != subtitle:
            self.border_subtitle = subtitle


def stats_line(a: Answer) -> Text:
    s = a.stats
    t = Text(style="dim")
    if a.status == "streaming":
        t.append(f"streaming… {len(a.raw)} chars")
    elif s:
        t.append(f"{a.status} · {s.get('new_tokens')} tokens")
        if s.get("tokens_per_s") is not None:
            t.append(f" · {s['tokens_per_s']:.1f} tok/s")
        if s.get("ttft_s") is not None:
            t.append(f" · first token {s['ttft_s'] * 1000:.0f} ms")
        if a.note:
            t.append(f"\n{inert(a.note, oneline=True)}", style="yellow")
    return t


def scores_text(a: Answer, turn: Turn) -> Text:
    t = Text()
    if a.error or a.status in ("waiting", "streaming"):
        return t
    if not a.judged:
        return Text("judging…", style="dim")
    if a.judge_error or not a.scores:
        return Text(f"judge failed: {inert(a.judge_error, oneline=True)}", style="bold yellow")
    leaders = turn.dim_leaders()
    for i, d in enumerate(DIMENSIONS):
        best = a.model in leaders.get(d, set())
        t.append(f"{SHORT[d]} {a.scores[d]:.2f}{'▲' if best else ' '}", style="bold green" if best else "")
        t.append("\n" if i % 3 == 2 else "  ")
    top = a.model in turn.leaders()
    t.append(f"weighted {a.weighted:.3f}" if a.weighted is not None else "weighted n/a",
             style="bold green" if top else "bold")
    if top:
        t.append(" ★ best")
    return t


class PlaygroundSettingsScreen(ModalScreen[tuple[ChatSettings, list[str]] | None]):
    """Models and generation settings; Enter applies, Escape keeps the old ones."""

    BINDINGS = [Binding("escape", "dismiss(None)", "close")]

    def __init__(self, settings: ChatSettings, models: list[str], available: list[str]) -> None:
        super().__init__()
        self.settings, self.models, self.available = settings, models, available

    def compose(self) -> ComposeResult:
        s = self.settings
        with Vertical(id="pg-settings-dialog"):
            yield Label(f"models (comma-separated; this run has: {', '.join(self.available)}; or a .gguf / model folder)")
            yield Input(",".join(self.models), id="pg-set-models")
            yield Label("temperature (0 = greedy)")
            yield Input(f"{s.temperature:g}", id="pg-set-temperature")
            yield Label("top-p")
            yield Input(f"{s.top_p:g}", id="pg-set-top-p")
            yield Label("max new tokens")
            yield Input(str(s.max_new_tokens), id="pg-set-max")
            yield Label("context in tokens (0 = the model's)")
            yield Input(str(s.context), id="pg-set-context")
            yield Checkbox("thinking (Qwen3 enable_thinking)", s.thinking, id="pg-set-thinking")
            yield Static(id="pg-set-error")

    @on(Input.Submitted)
    def _apply(self) -> None:
        try:
            s = ChatSettings(
                temperature=float(self.query_one("#pg-set-temperature", Input).value),
                top_p=float(self.query_one("#pg-set-top-p", Input).value),
                max_new_tokens=int(self.query_one("#pg-set-max", Input).value),
                context=int(self.query_one("#pg-set-context", Input).value or 0),
                thinking=self.query_one("#pg-set-thinking", Checkbox).value,
            )
            s.check()
        except (ValueError, UserError) as err:
            self.query_one("#pg-set-error", Static).update(Text(inert(err, oneline=True), style="bold red"))
            return
        models = [m.strip() for m in self.query_one("#pg-set-models", Input).value.split(",") if m.strip()]
        if not models:
            self.query_one("#pg-set-error", Static).update(Text("name at least one model", style="bold red"))
            return
        self.dismiss((s, models))


class BatteryPicker(ModalScreen[str | None]):
    """The battery's prompts, one key away: pick one to ask it."""

    BINDINGS = [Binding("escape", "dismiss(None)", "close")]

    def __init__(self, tests: list[Any]) -> None:
        super().__init__()
        self.tests = tests

    def compose(self) -> ComposeResult:
        with Vertical(id="pg-battery-dialog"):
            yield Label("battery prompts (Enter asks it, Escape closes)")
            yield OptionList(*[inert(f"{t.id}: {t.prompt}", oneline=True)[:160] for t in self.tests], id="pg-battery")

    @on(OptionList.OptionSelected)
    def _pick(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(self.tests[event.option_index].prompt)


class PlaygroundScreen(ReadingScreen):
    CSS_PATH = ROOT / "styles" / "playground.tcss"
    BINDINGS = [
        Binding("escape", "cancel_answer", "cancel answer"),
        Binding("ctrl+n", "new_conversation", "new conversation"),
        Binding("ctrl+t", "toggle_thinking", "thinking on/off"),
        Binding("ctrl+o", "settings", "settings"),
        Binding("ctrl+b", "battery", "battery prompts"),
        Binding("ctrl+y", "fold", "fold thinking"),
        Binding("ctrl+h", "promote('heldout')", "→ held-out", show=False),
        Binding("ctrl+g", "promote('battery')", "→ battery test", show=False),
        Binding("ctrl+l", "focus_history", "history", show=False),
    ]

    @dataclass
    class WorkerEvent(Message):
        """One event from the chat worker (posted from its reader thread)."""

        run_dir: Path
        event: dict

    @dataclass
    class HistoryLoaded(Message):
        run_dir: Path | None
        rows: list[dict]

    def __init__(self) -> None:
        super().__init__()
        self.client = None
        self.client_run: Path | None = None
        self.settings = ChatSettings()
        self.models: list[str] = []
        self.available: list[str] = []
        self.judge = ""
        self.state = "no run"
        self.turn: Turn | None = None
        self.follow_up = False
        self.busy = False
        self.dirty: set[str] = set()
        self.first_paint: list[float] = []  # worker's first-token time to its repaint, for the benchmark
        self._first_seen: dict[str, float] = {}  # per model: when the worker produced its first token
        self._painted: set[str] = set()
        self._painted_at: dict[str, float] = {}  # per model: when its pane was last drawn (monotonic)
        self._history_rows: dict[int, list[dict]] = {}
        self._panes: dict[str, AnswerPane] = {}
        self.history_turns: list[int] = []

    def compose(self) -> ComposeResult:
        yield Header()
        yield Input(placeholder="ask the run's models… (Enter sends; follow-ups continue; ctrl+n new conversation)",
                    id="pg-prompt")
        yield StatusLine(id="pg-status")
        yield Static(id="pg-question")
        yield Horizontal(id="pg-panes")
        yield DataTable(id="pg-history", cursor_type="row")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one("#pg-history", DataTable)
        table.add_columns("turn", "time", "models", "best", "prompt")
        self.set_interval(REPAINT_S, self._repaint)

    def on_screen_resume(self) -> None:
        self.open_store()

    def open_store(self) -> None:
        """Show the open run: start its chat worker (it loads models on the first question) and its history."""
        run_dir = self.app.model.run_dir  # type: ignore[attr-defined]
        if run_dir != self.client_run:
            self._stop_worker()
            self.turn = None
            self._build_panes([])
            if run_dir is not None:
                self._start_worker(run_dir)
        self._load_history(run_dir)
        self._status()
        self.query_one("#pg-prompt", Input).focus()

    def on_resize(self) -> None:
        self.query_one("#pg-panes").set_class(self.size.width < NARROW, "-narrow")
        self.query_one("#pg-history").set_class(self.size.height < 30, "-short")

    # -- the worker --------------------------------------------------------------------------

    def _start_worker(self, run_dir: Path) -> None:
        from engine.playground.client import ChatClient

        self.state = "starting the chat worker…"
        self.client_run = run_dir
        self.client = ChatClient(run_dir, lambda ev: self.post_message(self.WorkerEvent(run_dir, ev)),
                                 yield_cpu=YIELD_CPU)

    def _stop_worker(self) -> None:
        client, self.client, self.client_run = self.client, None, None
        self.busy = False
        if client is not None:
            client.close()

    def on_unmount(self) -> None:
        self._stop_worker()  # quitting the panel ends the worker

    @on(WorkerEvent)
    def _worker_event(self, message: WorkerEvent) -> None:
        if message.run_dir != self.client_run:
            return  # from a worker of a run no longer open
        ev = message.event
        kind = ev["ev"]
        if kind == "ready":
            self.available, self.judge = ev.get("models", []), ev.get("judge", "")
            if not self.models:
                self.models = [m for m in self.available if m in ("base", "sft", "grpo")]
            self.state = "ready"
        elif kind == "turn":
            self.turn = Turn.from_event(ev)
            self._first_seen, self._painted = {}, set()
            self._build_panes(self.turn.models)
        elif kind in ("exit", "fatal"):
            self.state = f"worker ended: {ev.get('message') or ev.get('code')}"
            self.busy = False
            if ev.get("message"):
                self.notify(inert(ev["message"], oneline=True), severity="error", timeout=10, markup=False)
            if kind == "exit":
                self.client, self.client_run = None, None
        elif kind == "log":
            self.state = inert(ev.get("message", ""), oneline=True)[:120]
        elif kind == "error" and "turn" not in ev:
            self.busy = False
            self.notify(inert(ev.get("message", ""), oneline=True), severity="error", timeout=10, markup=False)
        elif self.turn is not None:
            a = self.turn.apply(ev)
            if kind == "text" and a is not None and a.model not in self._first_seen:
                self._first_seen[a.model] = ev.get("t", time.time())  # when the worker produced it
            if a is not None:
                self.dirty.add(a.model)
                if kind == "scores":
                    self.dirty.update(self.turn.models)  # the marks of the higher of each pair move
            if kind == "error" and a is not None:
                self.notify(inert(f"{a.model}: {a.error}", oneline=True), severity="error", timeout=10, markup=False)
            if self.turn.finished:
                self.busy = False
                self.state = "ready"
                self._load_history(self.client_run)
        if kind != "text":  # a token changes only its pane, which the repaint timer draws
            self._status()

    def _repaint(self) -> None:
        if not self.dirty or self.turn is None:
            return
        dirty, self.dirty = self.dirty, set()
        now = time.time()
        tick = time.monotonic()
        for model in dirty:
            a = self.turn.answers.get(model)
            pane = self._panes.get(model)
            if pane is None:
                continue
            if (a is not None and a.status == "streaming" and model in self._painted
                    and tick - self._painted_at.get(model, 0.0) < STREAM_REPAINT_S):
                self.dirty.add(model)  # streaming on: drawn on a later tick
                continue
            self._painted_at[model] = tick
            if a is not None:
                try:
                    pane.show(a, self.turn)
                except NoMatches:  # mounted, not yet composed: the next tick draws it
                    self.dirty.add(model)
                    continue
                if model in self._first_seen and model not in self._painted:
                    self._painted.add(model)
                    self.first_paint.append(now - self._first_seen[model])

    def _build_panes(self, models: list[str]) -> None:
        question = Text()
        if self.turn is not None:
            try:
                how = ChatSettings.from_dict(self.turn.settings).short()
            except UserError:
                how = "settings unknown"
            question.append(f"turn {self.turn.turn} ({how}): ", style="dim")
            question.append(inert(self.turn.prompt, oneline=True), style="bold")
        self.query_one("#pg-question", Static).update(question)
        panes = self.query_one("#pg-panes")
        panes.remove_children()  # removed and mounted in order, after this handler
        self._panes = {m: AnswerPane(m) for m in models}
        panes.mount_all(list(self._panes.values()))
        if self.turn is not None:
            self.dirty.update(models)

    def _status(self) -> None:
        t = Text()
        t.append("models ", style="dim")
        t.append(", ".join(self.models) or "—", style="bold")
        t.append(f" · {self.settings.short()} · ", style="dim")
        t.append("follow-up" if self.follow_up else "new conversation", style="cyan")
        if self.judge:
            t.append(f" · judge {self.judge}", style="dim")
        t.append(" · ")
        t.append("answering… (Esc cancels)" if self.busy else self.state, style="yellow" if self.busy else "")
        self.query_one("#pg-status", StatusLine).show(t)  # a key repaints it, without a layout pass

    # -- actions -----------------------------------------------------------------------------

    @on(Input.Submitted, "#pg-prompt")
    def _ask(self, event: Input.Submitted) -> None:
        prompt = event.value
        if not prompt.strip():
            return
        self.ask(prompt)
        event.input.value = ""

    def ask(self, prompt: str) -> None:
        if self.client is None or not self.client.alive:
            self.notify("no chat worker: open a run first", severity="warning")
            return
        if self.busy:
            self.notify("still answering: Esc cancels", severity="warning")
            return
        if not self.models:
            self.notify("no models chosen (ctrl+o)", severity="warning")
            return
        self.busy = True
        self.client.ask(prompt, self.models, self.settings, follow_up=self.follow_up)
        self.follow_up = True
        self._status()

    def action_cancel_answer(self) -> None:
        if self.busy and self.client is not None:
            self.client.cancel()
            self.state = "cancelling…"
            self._status()

    def action_new_conversation(self) -> None:
        self.follow_up = False
        self._status()

    def action_toggle_thinking(self) -> None:
        self.settings.thinking = not self.settings.thinking
        self._status()

    def action_fold(self) -> None:
        for c in self.query(".pg-think").results(Collapsible):
            c.collapsed = not c.collapsed

    def action_settings(self) -> None:
        def done(result: tuple[ChatSettings, list[str]] | None) -> None:
            if result is not None:
                self.settings, self.models = result
                self._status()

        self.app.push_screen(PlaygroundSettingsScreen(self.settings, self.models or ["base"], self.available), done)

    def action_battery(self) -> None:
        from engine.evaluation.battery import load_battery

        try:
            tests = load_battery(ROOT / "data" / "battery.toml")
        except UserError as err:
            self.notify(inert(err, oneline=True), severity="error", markup=False)
            return

        def picked(prompt: str | None) -> None:
            if prompt:
                self.follow_up = False
                self.ask(prompt)

        self.app.push_screen(BatteryPicker(tests), picked)

    def action_focus_history(self) -> None:
        self.query_one("#pg-history", DataTable).focus()

    def action_promote(self, kind: str) -> None:
        """The chosen history turn (else the one on screen) becomes a held-out prompt or a battery test."""
        table = self.query_one("#pg-history", DataTable)
        turn = None
        if table.has_focus and self.history_turns and 0 <= table.cursor_row < len(self.history_turns):
            turn = self.history_turns[table.cursor_row]
        elif self.turn is not None and self.turn.finished:
            turn = self.turn.turn
        if turn is None or self.client_run is None:
            self.notify("no finished question to keep", severity="warning")
            return
        self._promote(self.client_run, turn, kind)

    @work(thread=True, group="pg-promote", exit_on_error=False)
    def _promote(self, run_dir: Path, turn: int, kind: str) -> None:
        from engine.store import RunStore

        with RunStore(run_dir / "run.db") as store:
            n = store.promote_turn(turn, kind)
        what = "held-out prompt" if kind == "heldout" else "battery test"
        self.app.call_from_thread(self.notify, f"turn {turn} kept as a {what} ({n} answers)" if n else
                                  f"turn {turn}: nothing kept to promote")
        self._load_history(run_dir)

    # -- history -----------------------------------------------------------------------------

    @work(thread=True, exclusive=True, group="pg-history", exit_on_error=False)
    def _load_history(self, run_dir: Path | None) -> None:
        if run_dir is None:
            self.post_message(self.HistoryLoaded(None, []))
            return
        from engine.store import RunStore

        with RunStore(run_dir / "run.db", readonly=True) as store:
            self.post_message(self.HistoryLoaded(run_dir, store.exchanges(limit=300)))

    @on(HistoryLoaded)
    def _history_loaded(self, message: HistoryLoaded) -> None:
        table = self.query_one("#pg-history", DataTable)
        table.clear()
        turns: dict[int, list[dict]] = {}
        for row in message.rows:
            turns.setdefault(row["turn"], []).append(row)
        self.history_turns = sorted(turns, reverse=True)
        for n in self.history_turns:
            rows = turns[n]
            judged = [r for r in rows if r["weighted"] is not None]
            best = max(judged, key=lambda r: r["weighted"]) if judged else None
            mark = {"heldout": " [held-out]", "battery": " [battery]"}.get(rows[0]["promoted"] or "", "")
            table.add_row(
                str(n), time.strftime("%H:%M", time.localtime(rows[0]["time"])),
                inert(",".join(r["model"] for r in rows), oneline=True),
                inert(f"{best['model']} {best['weighted']:.3f}", oneline=True) if best else "—",
                Text(inert(rows[0]["prompt"], oneline=True)[:120] + mark),
            )
        self._history_rows = turns

    @on(DataTable.RowSelected, "#pg-history")
    def _show_turn(self, event: DataTable.RowSelected) -> None:
        """A kept turn back in the panes, as it was answered and judged."""
        n = self.history_turns[event.cursor_row]
        rows = self._history_rows[n]
        turn = Turn(n, rows[0]["prompt"], [r["model"] for r in rows], rows[0]["settings"] or {}, finished=True)
        for r in rows:
            raw = (f"<think>\n{r['reasoning']}\n</think>\n\n" if r["reasoning"] else "") + (r["answer"] or "")
            turn.answers[r["model"]] = Answer(
                r["model"], r["model_source"] or "", raw, r["status"], note=r["note"] or "",
                stats={k: r[k] for k in ("prompt_tokens", "new_tokens", "ttft_s", "tokens_per_s", "total_s")},
                scores=r["scores"], weighted=r["weighted"], judge_error=r["judge_error"] or "", judged=True,
                exchange_id=r["id"])
        self.turn = turn
        self._build_panes(turn.models)
