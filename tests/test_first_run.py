"""A newcomer's first step, as they take it: an empty runs folder, `n`, Enter, and the demo runs to the end."""

from __future__ import annotations

from textual.widgets import DataTable, Input, Select

from app.app import make_app
from engine.runner import supervisor as sup
from engine.store import RunStore
from tests.conftest import DEMO, write_config
from tests.uifixtures import make_fixture_run, text_of, wait_for

DEMO_STAGES = ["datagen", "judge", "sft", "grpo", "eval", "export"]
A = "20260211-101500-snap"


def _cells(table: DataTable) -> dict[str, str]:
    """stage -> status, as the pipeline table shows them."""
    return {str(table.get_row_at(i)[0]): table.get_row_at(i)[1].plain for i in range(table.row_count)}


async def test_n_then_enter_on_an_empty_runs_folder_runs_the_demo_to_the_end(runs_dir, monkeypatch):
    # As on the user's machine: no shared fork server (the test session's), the run's driver starts its own.
    monkeypatch.delenv("ABA_FORK_SERVER", raising=False)
    assert not any(runs_dir.iterdir())
    app = make_app(None, runs_dir, DEMO)
    async with app.run_test(size=(120, 40)) as pilot:
        assert "No run open. Press n" in text_of(app.screen.query_one("#run-title"))
        await pilot.press("n")
        await wait_for(pilot, lambda: type(app.screen).__name__ == "NewRunScreen")
        dialog = app.screen
        assert dialog.query_one("#newrun-data", Select).is_blank()  # every field at its default
        assert dialog.query_one("#newrun-path", Input).value == str(DEMO)
        await pilot.press("enter")
        await wait_for(pilot, lambda: app.model.run_dir is not None, timeout=60)
        assert type(app.screen).__name__ == "PipelineScreen"
        table = app.screen.query_one("#stages", DataTable)

        def settled() -> bool:
            cells = _cells(table)
            return list(cells) == DEMO_STAGES and all(v in ("succeeded", "failed", "crashed", "cancelled")
                                                      for v in cells.values())

        # The demo trains the tiny model for real: 25 min at load 20-28 on 2 cores, so an hour of slack.
        await wait_for(pilot, settled, timeout=3600)
        assert _cells(table) == dict.fromkeys(DEMO_STAGES, "succeeded"), [
            (s.name, s.status, s.reason) for s in app.model.stages]
        assert "succeeded" in text_of(app.screen.query_one("#run-title"))  # the same word as `aba status`
    (run_dir,) = sup.list_run_dirs(runs_dir)
    with RunStore(run_dir / "run.db", readonly=True) as s:
        assert s.run_info()["name"] == "demo" and not (s.lineage() or {}).get("source_id")
        assert s.trace_count() > 0  # it generated its own data (the dialog's default)


async def test_new_run_dialog_picks_a_data_source_and_a_name_with_the_keys(tmp_path, runs_dir, busy_env, monkeypatch):
    monkeypatch.setenv("BUSY_STEPS", "3")
    make_fixture_run(runs_dir, A)  # a run with traces: the dialog offers it as a data source
    cfg = write_config(tmp_path, '[run]\nstages = ["smoke"]\n')
    app = make_app(None, runs_dir, cfg)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("n")
        await wait_for(pilot, lambda: type(app.screen).__name__ == "NewRunScreen")
        dialog = app.screen
        data = dialog.query_one("#newrun-data", Select)
        await wait_for(pilot, lambda: len(data._options) > 1)  # the runs with traces, read in a thread
        data.focus()
        await pilot.press("enter", "down", "enter")  # open the list, the first run below "generate", pick it
        await wait_for(pilot, lambda: data.value == A)
        dialog.query_one("#newrun-name", Input).focus()
        await pilot.press(*"weights v2")
        await pilot.press("enter")
        await wait_for(pilot, lambda: app.model.run_dir is not None, timeout=60)
    (new,) = [d for d in sup.list_run_dirs(runs_dir) if d.name != A]
    assert app.model.run_dir == new
    sup.wait(new, timeout_s=60)
    with RunStore(new / "run.db", readonly=True) as s:
        assert s.run_info()["name"] == "weights v2" and s.lineage()["source_id"] == A and s.trace_count() == 12


async def test_new_run_dialog_with_no_source_picked_generates(tmp_path, runs_dir, busy_env, monkeypatch):
    """Enter with the data Select left blank (Select.NULL in Textual 8): the run generates, no bogus source id."""
    monkeypatch.setenv("BUSY_STEPS", "3")
    make_fixture_run(runs_dir, A)
    cfg = write_config(tmp_path, '[run]\nstages = ["smoke"]\n')
    app = make_app(None, runs_dir, cfg)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("n")
        await wait_for(pilot, lambda: type(app.screen).__name__ == "NewRunScreen")
        await wait_for(pilot, lambda: len(app.screen.query_one("#newrun-data", Select)._options) > 1)
        await pilot.press("enter")
        await wait_for(pilot, lambda: app.model.run_dir is not None, timeout=60)
    (new,) = [d for d in sup.list_run_dirs(runs_dir) if d.name != A]
    sup.wait(new, timeout_s=60)
    with RunStore(new / "run.db", readonly=True) as s:
        assert not (s.lineage() or {}).get("source_id")
        assert s.stage("smoke").status == "succeeded"
