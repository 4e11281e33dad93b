"""The traces screen's parts off the UI thread: a trace made inert and cut in chunks, the workers' messages."""

from __future__ import annotations

from dataclasses import dataclass

from rich.console import Console
from rich.table import Table
from rich.text import Text
from textual.containers import VerticalScroll
from textual.message import Message

from engine.dims import DIMENSIONS, SHORT
from engine.text import inert

CHUNK_LINES = 40  # the first chunk is drawn at once; later ones as the reader scrolls towards them
CHUNK_CHARS = 6_000  # and no chunk holds more characters than this (one 100k-character line is cut too)


@dataclass
class TraceView:
    trace: dict  # the store's trace dict
    chunks: list[Text]  # the body: turns, reasoning, answer, judge's raw reply; all inert
    lines: int
    scores: Text | None = None  # the scores table drawn for (dim_index, width), off the UI thread
    scores_for: tuple[int, int] | None = None


# -- messages from the traces screen's workers, and the pane that asks for more -------------------------


@dataclass
class IdsLoaded(Message):
    generation: int
    ids: list[int]
    total: int
    categories: list[str]
    keep: int | None


@dataclass
class TraceLoaded(Message):
    view: TraceView


@dataclass
class EditDone(Message):
    trace_id: int
    dim: str
    note: str | None  # a toast to show (undo), or None
    error: str | None = None
    row: str | None = None  # the trace's table row as committed (read right after the commit, by the writer)


@dataclass
class AgreementLoaded(Message):
    run: object
    rows: dict[str, dict]


class DetailScroll(VerticalScroll):
    """The trace pane: asks for the next chunk of a long trace when the reader scrolls near its end."""

    class NearEnd(Message):
        pass

    def watch_scroll_y(self, old: float, new: float) -> None:
        super().watch_scroll_y(old, new)
        if new >= self.max_scroll_y - self.size.height:
            self.post_message(self.NearEnd())


def _n(v: float | None) -> str:
    return "" if v is None else f"{v:.2f}"


def title(t: dict) -> Text:
    flags = ["reviewed" if t["reviewed"] else "unreviewed"]
    if t["judge_rescaled"]:
        flags.append("judge rescaled")
    w = "n/a" if t["weighted"] is None else f"{t['weighted']:.3f}"
    cat = inert(f"{t['category']}/{t['tier']}", oneline=True)
    return Text(f"trace {t['id']}  {cat}  weighted {w}  ({', '.join(flags)})")


def scores_table(t: dict, dim_index: int) -> Table:
    table = Table("", "dim", "judge", "human", "eff", box=None, padding=(0, 1), title=title(t),
                  caption=f"▶ {SHORT[DIMENSIONS[dim_index]]} = {DIMENSIONS[dim_index]}", caption_justify="left")
    for i, d in enumerate(DIMENSIONS):
        judge = t["judge"][d] if t["judge"] else None
        human = t["human"].get(d)
        eff = human if human is not None else judge
        table.add_row("▶" if i == dim_index else "", SHORT[d], _n(judge), _n(human),
                      Text(_n(eff), style="bold" if human is not None else ""),
                      style="reverse" if i == dim_index else None)
    return table


def body_parts(t: dict) -> list[tuple[str, str]]:
    """Every turn, the reasoning, the answer and a failed judge's reply as (text, style): literal and inert."""
    parts: list[tuple[str, str]] = []
    if t["offline"]:
        parts.append(("OFFLINE trace (shipped example or composed), not a model's output\n\n", "yellow"))
    for turn in t["turns"]:
        parts.append((f"{inert(turn.get('role', '?'), oneline=True)}: ", "bold"))
        parts.append((inert(turn.get("content", "")) + "\n", ""))
    parts += [("\nreasoning\n", "bold underline"), (inert(t["reasoning"] or "(none)") + "\n", "")]
    parts += [("\nanswer\n", "bold underline"), (inert(t["answer"] or "") + "\n", "")]
    if t["judge_failed"]:
        parts += [("\njudge failed; raw reply kept:\n", "bold red"), (inert(t["judge_raw"] or "(no reply)"), "")]
    return parts


def chunked(parts: list[tuple[str, str]]) -> tuple[list[Text], int]:
    """Texts of at most CHUNK_LINES lines and about CHUNK_CHARS characters (a longer line is cut), each cheap to
    wrap and draw. Built from strings, line by line: splitting one big rich Text costs ten times more."""
    chunks: list[Text] = []
    current, lines, chars, total = Text(), 0, 0, 1
    for text, style in parts:
        for i, line in enumerate(text.split("\n")):
            if i:  # a line break
                total += 1
                if lines + 1 >= CHUNK_LINES or chars > CHUNK_CHARS:
                    chunks.append(current)
                    current, lines, chars = Text(), 0, 0
                else:
                    current.append("\n")
                    lines += 1
            while len(line) > CHUNK_CHARS - chars and chars:  # cut: the rest of this line opens the next chunk
                room = max(CHUNK_CHARS - chars, 0)
                current.append(line[:room], style)
                chunks.append(current)
                current, lines, chars, line = Text(), 0, 0, line[room:]
            while len(line) > CHUNK_CHARS:
                chunks.append(Text(line[:CHUNK_CHARS], style))
                line = line[CHUNK_CHARS:]
            if line:
                current.append(line, style)
                chars += len(line)
    if current.plain.strip() or not chunks:
        chunks.append(current)
    return chunks, total


def as_text(renderable, width: int) -> Text:
    """A rich renderable drawn once into a Text of its lines (styles kept). A Static holding a rich Table renders the
    table again on every layout pass to measure its height, and again to paint it; a Text of a dozen short lines
    costs next to nothing in both. Safe in a worker thread (its own Console)."""
    console = Console(width=max(width, 1), color_system="truecolor", force_terminal=True, legacy_windows=False,
                      markup=False, emoji=False, highlight=False)
    out = Text(end="", no_wrap=True, overflow="crop")
    for i, line in enumerate(console.render_lines(renderable, console.options, pad=False)):
        if i:
            out.append("\n")
        for seg in line:
            if not seg.control:
                out.append(seg.text, seg.style)
    return out


def scores_text(t: dict, dim_index: int, width: int) -> Text:
    return as_text(scores_table(t, dim_index), width)


def make_view(t: dict, dim_index: int = 0, width: int = 0) -> TraceView:
    """The trace made inert and cut into parts, and (given the pane's width) its scores table drawn."""
    chunks, lines = chunked(body_parts(t))
    view = TraceView(t, chunks, lines)
    if width > 0:
        view.scores, view.scores_for = scores_text(t, dim_index, width), (dim_index, width)
    return view


def agreement_table(rows: dict[str, dict]) -> Table:
    table = Table("dim", "n", "MAE", "Spearman", "Kendall", "alpha", box=None, title="judge vs human (edited traces)",
                  padding=(0, 1))
    for d in DIMENSIONS:
        r = rows.get(d)
        if r is None:
            table.add_row(SHORT[d], "…", "", "", "", "")
        else:
            table.add_row(SHORT[d], str(r["n"]), _n(r["mae"]), _n(r["spearman"]), _n(r["kendall_tau"]), _n(r.get("alpha")))
    return table
