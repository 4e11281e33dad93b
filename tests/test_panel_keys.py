"""The keyboard flow under a researcher's hands: focus that returns, modals that block, one meaning per key."""

from __future__ import annotations


from app.app import make_app
from app.screens.confirm import ConfirmScreen, StagePicker
from app.widgets.trace_table import TraceTable
from engine.runner import supervisor as sup
from engine.registry import STAGES
from engine.store import RunStore
from tests.conftest import write_config
from tests.uifixtures import make_fixture_run
from tests.uifixtures import wait_for as _wait_for



async def test_escape_returns_focus_to_table_and_filters_never_trap(runs_dir):
    run = make_fixture_run(runs_dir)
    app = make_app(run.name, runs_dir)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("f4")
        table = app.screen.query_one(TraceTable)
        await _wait_for(pilot, lambda: len(table.ids) == 12)
        await pilot.press("slash")
        assert type(app.screen).__name__ == "FilterScreen"
        app.screen.query_one("#f-tier").value = "rejected"
        await pilot.press("enter")  # applies and closes
        await _wait_for(pilot, lambda: len(table.ids) == 4)
        assert app.focused is table
        await pilot.press("down")  # moves the table, does not reopen a drop-down
        assert table.cursor == 1 and type(app.screen).__name__ == "TracesScreen"
        await pilot.press("slash", "escape")  # Esc leaves the filters as they were
        assert app.focused is table and len(table.ids) == 4
        await pilot.press("slash", "ctrl+r")
        await _wait_for(pilot, lambda: len(table.ids) == 12)
        app.screen.query_one("#trace-detail").focus()
        await pilot.press("escape")
        assert app.focused is table


async def test_sort_by_a_chosen_column_and_resort_after_edit(runs_dir):
    run = make_fixture_run(runs_dir)
    app = make_app(run.name, runs_dir)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("f4")
        screen = app.screen
        table = screen.query_one(TraceTable)
        await _wait_for(pilot, lambda: len(table.ids) == 12)
        await pilot.press("o")
        assert type(app.screen).__name__ == "SortPicker"
        for _ in range(4):  # id, category, tier, weighted, ENT
            await pilot.press("down")
        by_id = list(table.ids)
        await pilot.press("enter")
        await _wait_for(pilot, lambda: screen.sort == "entropy_reduction" and table.ids != by_id)  # sorted ids in
        assert screen.descending  # scores: best first
        with RunStore(run / "run.db") as store:
            ent = [store.trace(i)["effective"]["entropy_reduction"] for i in table.ids]
        assert ent == sorted(ent, reverse=True)
        last = table.ids[-1]
        table.cursor = len(table.ids) - 1
        await _wait_for(pilot, lambda: screen.view is not None and screen.view.trace["id"] == last)
        await pilot.press("enter")
        await pilot.press(*"1.0", "enter")  # the lowest becomes the highest: the row moves to the top
        await _wait_for(pilot, lambda: table.ids[0] == last)
        assert table.current_id == last  # the cursor stayed with the edited trace
        header = table.render_line(0)
        assert "rev" in header.text and "INS" in header.text
        assert [seg.text for seg in header if seg.style and seg.style.reverse] == ["ENT"]
        assert "sorted by ENT (entropy_reduction) ▼" in str(screen.query_one("#trace-filterbar").render())


async def test_undo_toast_names_both_values(runs_dir):
    run = make_fixture_run(runs_dir)
    app = make_app(run.name, runs_dir)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("f4")
        screen = app.screen
        table = screen.query_one(TraceTable)
        await _wait_for(pilot, lambda: screen.view is not None)
        judge = screen.view.trace["judge"]["entropy_reduction"]
        await pilot.press("plus")
        await _wait_for(pilot, lambda: bool(screen.view.trace["human"]))
        await pilot.press("u")
        await _wait_for(pilot, lambda: any("undid" in n.message for n in app._notifications))
        note = next(n.message for n in app._notifications if "undid" in n.message)
        assert f"-> {judge:.2f} (the judge's)" in note and "ENT" in note, note
        assert table.current_id == screen.view.trace["id"]


async def test_long_trace_opens_with_its_first_part_and_loads_the_rest(runs_dir):
    run = make_fixture_run(runs_dir)
    with RunStore(run / "run.db") as s:
        s._conn.execute("UPDATE traces SET answer = ? WHERE id = 1", ("\n".join(f"line {i}" for i in range(5000)),))
    app = make_app(run.name, runs_dir)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("f4")
        screen = app.screen
        await _wait_for(pilot, lambda: screen.view is not None and screen.view.trace["id"] == 1)
        await _wait_for(pilot, lambda: len(screen.query(".trace-chunk")) >= 1)
        await pilot.pause()
        assert screen.view.lines > 5000 and len(screen.view.chunks) > 20
        assert 1 <= len(screen.query(".trace-chunk")) < 4  # only what the eye can reach is drawn
        await pilot.press("end")  # the whole trace
        await _wait_for(pilot, lambda: len(screen.query(".trace-chunk")) == len(screen.view.chunks))


async def test_help_f1_and_palette_hold_every_action(runs_dir):
    run = make_fixture_run(runs_dir)
    app = make_app(run.name, runs_dir)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("f1")
        assert type(app.screen).__name__ == "HelpScreen"
        await pilot.press("escape")
        await pilot.press("f4")
        titles = {c.title for c in app.get_system_commands(app.screen)}
        for title in ("New run", "Start a stage", "Cancel", "Resume", "Skip a stage", "Edit config", "Help",
                      "Go to traces", "Sort", "Filter", "Undo"):
            assert title in titles, (title, sorted(titles))


SAME = {"pick_sort": "sort", "reverse_sort": "reverse"}  # one meaning, two screens' names for it


def test_one_meaning_per_key_across_screens():
    from app.app import AbaApp
    from app.screens.commitment import CommitmentScreen
    from app.screens.evals import EvalScreen
    from app.screens.pipeline import PipelineScreen
    from app.screens.runs import RunsScreen
    from app.screens.traces import TracesScreen
    from app.screens.training import TrainingScreen

    app_keys = {k for b in AbaApp.BINDINGS for k in b.key.split(",")}
    meaning: dict[str, set[str]] = {}
    for screen in (PipelineScreen, TrainingScreen, TracesScreen, RunsScreen, EvalScreen, CommitmentScreen):
        for b in screen.BINDINGS:
            for key in b.key.split(","):
                assert key not in app_keys or b.action.startswith("app."), (screen.__name__, key, b.action)
                action = b.action.split("(")[0].removeprefix("app.")
                meaning.setdefault(key, set()).add(SAME.get(action, action))
    clashes = {k: v for k, v in meaning.items() if len(v) > 1 and k not in ("enter", "escape")}
    assert not clashes, clashes


async def _live_run(tmp_path, runs_dir, monkeypatch, stages='["smoke", "eval"]'):
    monkeypatch.setenv("BUSY_STEPS", "100000")
    monkeypatch.setenv("BUSY_DELAY", "0.05")
    run_dir = sup.create_run(write_config(tmp_path, f"[run]\nstages = {stages}\n"), runs_dir)
    sup.launch(run_dir)
    return run_dir


async def test_cancel_asks_first_and_the_modal_blocks_until_answered(tmp_path, runs_dir, busy_env, monkeypatch):
    run_dir = await _live_run(tmp_path, runs_dir, monkeypatch)
    app = make_app(run_dir.name, runs_dir, None)
    try:
        async with app.run_test(size=(120, 40)) as pilot:
            await _wait_for(pilot, lambda: (app.model.stage("smoke") or None) and app.model.stage("smoke").status == "running")
            from textual.widgets import DataTable

            table = app.screen.query_one("#stages", DataTable)  # n/N and the time left, from the stage's own rate
            await _wait_for(pilot, lambda: "/100000  ETA " in str(table.get_row_at(0)[4]))
            await pilot.press("c")
            assert isinstance(app.screen, ConfirmScreen)
            what = str(app.screen.what)
            assert "smoke" in what and "checkpoint" in what and "eval" in what and "will not start" in what
            await pilot.press("enter", "c", "s", "k")  # no other key answers it, nor reaches the screens below
            seen = app.model.version  # two more polls of the run: a cancel that got through would show by now
            await _wait_for(pilot, lambda: app.model.version >= seen + 2)
            assert isinstance(app.screen, ConfirmScreen) and len(app.screen_stack) == 2
            with RunStore(run_dir / "run.db") as store:
                assert store.stage("smoke").status == "running" and not store.cancel_requested("smoke")
            await pilot.press("n")
            assert not isinstance(app.screen, ConfirmScreen)
            seen = app.model.version
            await _wait_for(pilot, lambda: app.model.version >= seen + 2)
            with RunStore(run_dir / "run.db") as store:
                assert not store.cancel_requested("smoke")
            await pilot.press("c", "y")
            await _wait_for(pilot, lambda: app.model.stage("smoke").status == "cancelled", timeout=60)
            await _wait_for(pilot, lambda: app.model.stage("eval").status == "cancelled")
    finally:
        sup.cancel(run_dir, grace_s=2)


async def test_second_concurrent_run_asks_first(tmp_path, runs_dir, busy_env, monkeypatch):
    run_dir = await _live_run(tmp_path, runs_dir, monkeypatch, '["smoke"]')
    app = make_app(run_dir.name, runs_dir, tmp_path / "c.toml")
    try:
        async with app.run_test(size=(120, 40)) as pilot:
            await _wait_for(pilot, lambda: (app.model.stage("smoke") or None) and app.model.stage("smoke").status == "running")
            await pilot.press("n")
            assert isinstance(app.screen, ConfirmScreen) and "second run" in app.screen.title_
            assert run_dir.name in app.screen.what and "smoke" in app.screen.what
            await pilot.press("escape")
            assert type(app.screen).__name__ == "PipelineScreen"
            await pilot.press("n", "y")
            assert type(app.screen).__name__ == "NewRunScreen"
    finally:
        sup.cancel(run_dir, grace_s=2)


async def test_start_any_stage_even_one_not_in_the_run_and_rerun_asks(tmp_path, runs_dir, busy_env, monkeypatch):
    monkeypatch.setenv("BUSY_STEPS", "5")
    run_dir = sup.create_run(write_config(tmp_path, '[run]\nstages = ["datagen"]\n'), runs_dir)
    app = make_app(run_dir.name, runs_dir)
    async with app.run_test(size=(120, 40)) as pilot:
        await _wait_for(pilot, lambda: bool(app.model.stages))
        await pilot.press("s")
        picker = app.screen
        assert isinstance(picker, StagePicker) and picker.stages == list(STAGES)
        from textual.widgets import OptionList

        options = picker.query_one(OptionList)
        options.highlighted = list(STAGES).index("smoke")
        await pilot.press("enter")  # smoke was not in the run: it is added and started, no question
        await _wait_for(pilot, lambda: (app.model.stage("smoke") or None) and app.model.stage("smoke").status == "succeeded",
                        timeout=60)
        await pilot.press("s")
        app.screen.query_one(OptionList).highlighted = list(STAGES).index("smoke")
        await pilot.press("enter")
        assert isinstance(app.screen, ConfirmScreen) and "Re-run smoke" in app.screen.title_
        await pilot.press("n")
        seen = app.model.version  # two more polls of the run: a second attempt would show by now
        await _wait_for(pilot, lambda: app.model.version >= seen + 2)
        assert app.model.stage("smoke").attempts == 1


async def test_reads_run_in_workers_and_agreement_is_debounced_on_the_edited_dimension(runs_dir, monkeypatch):
    import threading

    from app.screens import trace_agreement
    from engine.dims import DIMENSIONS

    calls, reads = [], []
    real_agreement = trace_agreement.judge_agreement
    real_rows = RunStore.trace_summaries

    def spy_agreement(store, dims):
        calls.append((threading.current_thread() is threading.main_thread(), list(dims)))
        return real_agreement(store, dims)

    def spy_rows(self, ids):
        reads.append(threading.current_thread() is threading.main_thread())
        return real_rows(self, ids)

    monkeypatch.setattr(trace_agreement, "judge_agreement", spy_agreement)
    monkeypatch.setattr(RunStore, "trace_summaries", spy_rows)
    run = make_fixture_run(runs_dir)
    app = make_app(run.name, runs_dir)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("f4")
        screen = app.screen
        await _wait_for(pilot, lambda: screen.view is not None and bool(calls))
        assert calls == [(False, sorted(DIMENSIONS))] and reads and not any(reads)  # all off the UI thread
        calls.clear()
        await pilot.press("a", "right_square_bracket", "plus", "plus", "plus")  # three quick edits of CAL
        await _wait_for(pilot, lambda: bool(calls))
        # The debounce timer fired and its result is in, nothing pending: a second computation cannot follow.
        await _wait_for(pilot, lambda: screen._agreement.get(DIMENSIONS[1], {}).get("n") == 1 and not screen._agreement_dims)
        await pilot.pause()
        assert calls == [(False, [DIMENSIONS[1]])]  # once, for the edited dimension only
        assert screen._agreement[DIMENSIONS[1]]["n"] == 1 and screen.query_one("#agreement").display


async def test_clicking_a_column_title_sorts_by_it(runs_dir):
    run = make_fixture_run(runs_dir)
    app = make_app(run.name, runs_dir)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("f4")
        screen = app.screen
        table = screen.query_one(TraceTable)
        await _wait_for(pilot, lambda: len(table.ids) == 12)
        x = table.render_line(0).text.index("HLP")
        await pilot.click(TraceTable, offset=(x + 1, 0))
        await _wait_for(pilot, lambda: screen.sort == "helpfulness" and screen.descending)
        await pilot.click(TraceTable, offset=(x + 1, 0))
        await _wait_for(pilot, lambda: screen.sort == "helpfulness" and not screen.descending)
