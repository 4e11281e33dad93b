"""Untrusted text made inert: every class of terminal sequence planted in every place the panel or the CLI draws it."""

from __future__ import annotations


import pytest

from app.app import make_app
from app.widgets.trace_table import TraceTable
from engine.dims import DIMENSIONS
from engine.store import RunStore
from engine.text import inert
from tests.uifixtures import make_fixture_run
from tests.uifixtures import wait_for as _wait_for

# One of each: CSI (colour, clear screen), OSC (window title, BEL- and ST-terminated), DCS, bare ESC, BEL,
# backspace, CR, a C1 CSI, DEL, and markup that must stay literal.
HOSTILE = ("A\x1b[31mred\x1b[2J\x1b[0m \x1b]0;pwned-title\x07 \x1b]8;;http://x\x1b\\link\x1b]8;;\x1b\\ "
           "\x1bP1$qm\x1b\\ \x1bc\x1b7 bell\x07 back\x08space cr\rX tab\tY c1\x9b31m del\x7f [red]markup[/red]")


def _bad(text: str) -> list[str]:
    """Characters a terminal would act on (newlines are not in rendered segments at all)."""
    return sorted({hex(ord(c)) for c in text if ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0})


def test_inert_shows_every_control_as_a_placeholder():
    out = inert(HOSTILE)
    assert not _bad(out.replace("\n", ""))
    assert "␛[31m" in out and "␛]0;pwned-title␇" in out and "␛P1$qm␛\\" in out and "␛c␛7" in out
    assert "back␈space" in out and "cr␍X" in out and "c1␛[31m" in out and "del␡" in out
    assert "tab Y" in out.replace("   ", " ") and "\t" not in out
    assert "[red]markup[/red]" in out
    assert inert("a\r\nb") == "a\nb"  # CRLF is an ordinary line end
    assert inert("a\nb", oneline=True) == "a⏎b"


def _plant(run) -> int:
    with RunStore(run / "run.db") as s:
        pid = s.add_prompt("p-hostile", "safety", [{"role": "user\x1b[2J", "content": "ask " + HOSTILE}], "test")
        tid = s.add_trace({"call_key": "hostile", "prompt_id": pid, "category": "cat\x1b[31m", "tier": "chosen",
                           "idx": 99, "reasoning": "think " + HOSTILE, "answer": "answer " + HOSTILE,
                           "backend": "offline", "offline": True})
        s.mark_judge_failed(tid, "llm", "judge said " + HOSTILE, "unparseable")
        s.add_sample("grpo", 40, "prompt " + HOSTILE, "completion " + HOSTILE, {DIMENSIONS[0]: 0.5}, 0.5)
        s.log("grpo", "log line " + HOSTILE, "info")
        s.log("sft", "error line " + HOSTILE, "error")
        s.put_result("eval", "battery", "final/t1", {"model": "final", "test": "t1", "passed": False,
                                                       "detail": "detail " + HOSTILE, "output": "output " + HOSTILE})
    return tid


def _screen_text(app) -> str:
    strips = app.screen._compositor.render_strips()
    return "".join(seg.text for strip in strips for seg in strip)



async def test_every_screen_draws_planted_sequences_inert(runs_dir):
    run = make_fixture_run(runs_dir)
    tid = _plant(run)
    app = make_app(run.name, runs_dir)
    async with app.run_test(size=(160, 60)) as pilot:
        await _wait_for(pilot, lambda: any("log line" in r.message for r in app.model.logs))
        await _wait_for(pilot, lambda: "log line" in _screen_text(app))  # drawn on the pipeline screen
        seen = {}
        seen["pipeline"] = _screen_text(app)
        await pilot.press("f3")
        await _wait_for(pilot, lambda: "completion" in _screen_text(app) and "log line" in _screen_text(app))
        seen["training"] = _screen_text(app)
        await pilot.press("f4")
        table = app.screen.query_one(TraceTable)
        await _wait_for(pilot, lambda: tid in table.ids)
        table.cursor = table.ids.index(tid)
        await _wait_for(pilot, lambda: "judge said" in _screen_text(app))
        seen["traces"] = _screen_text(app)
        await pilot.press("f6")
        await _wait_for(pilot, lambda: app.screen.query_one("#eval-grid").row_count == 1)
        await pilot.press("right")
        await _wait_for(pilot, lambda: "output A" in _screen_text(app))
        seen["eval"] = _screen_text(app)
    for room, text in seen.items():
        assert not _bad(text), (room, _bad(text))
        assert "␛[31m" in text, room  # shown, not hidden
    assert "[red]markup[/red]" in seen["traces"] and "pwned-title␇" in seen["traces"]
    assert "judge said" in seen["traces"] and "think A" in seen["traces"] and "ask A" in seen["traces"]


@pytest.mark.parametrize("command", [["traces"], ["tail", "--no-follow"], ["status"]])
def test_cli_prints_planted_sequences_inert(runs_dir, capsys, command):
    from engine.cli import main

    run = make_fixture_run(runs_dir)
    _plant(run)
    with RunStore(run / "run.db") as s:
        s._conn.execute("UPDATE stages SET reason = ? WHERE name = 'sft'", ("reason " + HOSTILE,))
    assert main([command[0], run.name, *command[1:]]) == 0
    out = capsys.readouterr().out
    assert not _bad(out.replace("\n", "")), _bad(out)
    shown = {"traces": "cat␛[31m", "tail": "log line A␛[31m", "status": "reason A␛[31m"}[command[0]]
    assert shown in out, out
