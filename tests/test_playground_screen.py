"""The Playground screen's layout (issue 21): a kept turn of three judged answers, at 120x40 and 80x24 (stacked)."""

from __future__ import annotations

import pytest

from engine.dims import DIMENSIONS
from engine.store import RunStore
from tests.uifixtures import MARKUP, T0, make_fixture_run


def _kept_turn(run_dir) -> None:
    with RunStore(run_dir / "run.db") as s:
        for i, model in enumerate(("base", "sft", "grpo")):
            scores = {d: round(((i * 3 + j * 3) % 10) / 10, 2) for j, d in enumerate(DIMENSIONS)}
            s.add_exchange(dict(
                turn=1, time=T0 + i, model=model, model_source="run base" + " + adapter" * i,
                prompt="Should I back up first? " + MARKUP, history=[],
                settings={"temperature": 0.0, "top_p": 1.0, "max_new_tokens": 64, "thinking": True, "context": 0},
                answer=f"Answer of {model}: yes, back up. \x1b[31m" + MARKUP, reasoning=f"{model} weighs the risk",
                status="done", judge="heuristic (offline)", scores=None if model == "sft" else scores,
                weighted=None if model == "sft" else 0.3 + 0.1 * i,
                judge_error="judge failed after 3 attempt(s): no JSON" if model == "sft" else None,
                prompt_tokens=20, new_tokens=40 + i, ttft_s=0.05, tokens_per_s=100.0 + i, total_s=0.5))


@pytest.mark.parametrize("size", [(120, 40), (80, 24)])
def test_playground_snapshot(snap_compare, runs_dir, size):
    from app.app import make_app

    run_dir = make_fixture_run(runs_dir)
    _kept_turn(run_dir)
    app = make_app(run_dir.name, runs_dir)

    async def before(pilot):
        await pilot.press("f8")
        screen = app.screen
        for _ in range(300):
            if screen.state == "ready" and screen.query_one("#pg-history").row_count == 1:
                break
            await pilot.pause(0.1)
        await pilot.press("ctrl+l", "enter")
        for _ in range(100):  # every pane drawn (the repaint runs at 30 Hz)
            titles = [c.title for c in screen.query(".pg-think")]
            if len(titles) == 3 and all("chars" in t for t in titles):
                break
            await pilot.pause(0.1)
        await pilot.pause(0.3)

    assert snap_compare(app, terminal_size=size, run_before=before)


async def test_panes_rebuilt_for_each_question_even_for_a_model_named_by_path(runs_dir):
    """A second question (here: a kept turn shown twice) replaces the panes; a GGUF path is a model name too."""
    from app.app import make_app
    from app.screens.playground import AnswerPane
    from tests.uifixtures import text_of, wait_for

    run_dir = make_fixture_run(runs_dir)
    _kept_turn(run_dir)
    with RunStore(run_dir / "run.db") as s:
        s._conn.execute("UPDATE exchanges SET model = '/models/dolphin-3.0.Q8_0.gguf' WHERE model = 'grpo'")
    app = make_app(run_dir.name, runs_dir)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("f8")
        screen = app.screen
        await wait_for(pilot, lambda: screen.query_one("#pg-history").row_count == 1)
        for _ in range(2):
            await pilot.press("ctrl+l", "enter")
            await pilot.pause(0.2)
        await wait_for(pilot, lambda: len(screen.query(AnswerPane)) == 3
                       and all("chars" in c.title for c in screen.query(".pg-think")))
        panes = {p.model: p for p in screen.query(AnswerPane)}
        assert "weighted 0.500 ★ best" in text_of(panes["/models/dolphin-3.0.Q8_0.gguf"].query_one(".pg-scores"))
