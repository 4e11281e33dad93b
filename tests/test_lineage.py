"""Generate once, train many: data copied from another run or a file, lineage, no silent demo data, names."""

from __future__ import annotations

import csv
import json
import shutil

import pytest

from engine.config.overrides import with_overrides
from engine.dims import DIMENSIONS, equal_weights
from engine.errors import UserError
from engine.evaluation.agreement import pooled_judge_agreement
from engine.runner import supervisor as sup
from engine.store import RunStore
from tests.conftest import DEMO, ROOT, aba, demo_variant, run_id_of
from tests.test_reproducibility import ONE_THREAD, prebuild_demo_base
from tests.uifixtures import make_fixture_run

QWEN = ROOT / "data" / "configs" / "qwen3-8b.toml"


def _source(runs_dir, run_id="20260211-101500-src"):
    """A run with judged traces and two human edits (one undone), written through the store's own API."""
    src = make_fixture_run(runs_dir, run_id, traces=12, with_metrics=False)
    with RunStore(src / "run.db") as s:
        s.edit_score(1, "helpfulness", 0.95, equal_weights())
        s.edit_score(2, "harm_avoidance", 0.1, equal_weights())
        s.edit_score(2, "harm_avoidance", 0.2, equal_weights())
        s.undo_edit(2, equal_weights())
        s.set_reviewed(1)
    return src


def _state(run_dir):
    with RunStore(run_dir / "run.db", readonly=True) as s:
        edits = [(e["trace_id"], e["dim"], e["old"], e["new"], e["undone"]) for e in s.score_edits()]
        return s.trace_hashes(), s.data_hash(), edits, [t["effective"] for t in s.traces()]


def test_data_from_run_trains_on_exactly_the_sources_traces_and_edits(tmp_path, runs_dir):
    src = _source(runs_dir)
    before = _state(src)
    cfg = demo_variant(tmp_path, sft__max_steps=2, sft__min_score=0.0)
    prebuild_demo_base(tmp_path)
    proc = aba("run", str(cfg), "--data-from", src.name, "--stages", "sft", "--detach", env=ONE_THREAD)
    assert proc.returncode == 0, proc.stderr
    new = sup.resolve_run(run_id_of(proc), runs_dir)
    shutil.rmtree(src)  # the source goes away while the new run trains: its data is the new run's own copy
    try:
        rows = sup.wait(new, timeout_s=900)
    finally:
        sup.cancel(new, grace_s=2)
    assert {r.name: r.status for r in rows if r.selected} == {"sft": "succeeded"}, [(r.name, r.reason) for r in rows]
    hashes, digest, edits, effective = _state(new)
    assert hashes == before[0] and digest == before[1]  # the very same trace ids with the very same content
    assert edits == before[2] and effective == before[3]  # human edits (undone ones too) came along
    with RunStore(new / "run.db", readonly=True) as s:
        lineage = s.lineage()
        logs = [r.message for r in s.logs_since(0, "sft")]
        assert s.run_info()["name"] == "demo data<-20260211-101500-src"
    assert lineage["source_id"] == "20260211-101500-src" and lineage["content_hash"] == before[1]
    assert lineage["counts"]["traces"] == 12 and lineage["counts"]["score_edits"] == 3
    assert any("judged chosen traces clear" in m for m in logs) and not any("SHIPPED DEMO" in m for m in logs)
    assert 'from_run = "20260211-101500-src"' in (new / "config.toml").read_text()


def test_config_key_data_from_run_and_copy_of_a_copy(runs_dir):
    src = _source(runs_dir)
    cfg = with_overrides(DEMO, [f"data.from_run={src.name}"])
    first = sup.create_run(DEMO, runs_dir, ["sft"], cfg=cfg)
    second = sup.create_run(DEMO, runs_dir, ["sft"], data_from=first.name, name="second try")
    with RunStore(second / "run.db", readonly=True) as s:
        assert s.lineage()["root_id"] == src.name and s.run_info()["name"] == "second try"
    assert _state(second)[:3] == _state(src)[:3]
    with RunStore(first / "run.db") as s, pytest.raises(UserError, match="has prompts already"):
        s.copy_data(RunStore(src / "run.db").data_snapshot(), {"kind": "run"}, equal_weights())


def test_non_demo_run_without_data_fails_with_one_line(runs_dir):
    proc = aba("run", str(QWEN), "--stages", "sft")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("sft: failed: no traces in this run") and "--data-from" in lines[0]


def test_demo_config_says_it_uses_the_shipped_demo_traces(runs_dir):
    from engine.config import load
    from engine.training.data import demo_data_reason, sft_rows

    run = sup.create_run(DEMO, runs_dir, ["sft"])
    logs: list[str] = []
    with RunStore(run / "run.db") as s:
        rows = sft_rows(s, equal_weights(), 0.3, logs.append, demo_data_reason(load(DEMO), "sft"))
        assert rows and "SHIPPED DEMO traces (the demo config" in logs[0]
        with pytest.raises(UserError, match="no traces in this run"):
            sft_rows(s, equal_weights(), 0.3, logs.append, demo_data_reason(load(QWEN), "sft"))
    assert demo_data_reason(load(QWEN), "smoke")  # Step 0 checks the machinery on any config


def test_export_then_import_round_trip_jsonl_and_csv(runs_dir):
    src = _source(runs_dir)
    proc = aba("export-data", src.name, "--tier", "all")
    assert proc.returncode == 0, proc.stderr
    with RunStore(src / "run.db", readonly=True) as s:
        want = sorted((t["tier"], t["answer"], tuple(sorted(t["human"].items()))) for t in s.traces())
    for name in ("train.jsonl", "scores.csv"):
        run = sup.create_run(DEMO, runs_dir, ["sft"], data_from=str(src / "export" / name))
        with RunStore(run / "run.db", readonly=True) as s:
            got = sorted((t["tier"], t["answer"], tuple(sorted(t["human"].items()))) for t in s.traces())
            lineage = s.lineage()
            assert s.trace_count() == 12 and all(t["judged"] for t in s.traces())
        assert got == want, name
        assert lineage["kind"] == "file" and lineage["source_name"] == name and lineage["counts"]["traces"] == 12


def _bad_jsonl(path):
    good = {"turns": [{"role": "user", "content": "Which is better?"}], "reasoning": "r", "answer": "a",
            "tier": "chosen", "category": "safety"}
    rows = [good, dict(good, answer="b"), dict(good, tier="best"), dict(good, judge={"helpfulness": 2})]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n{not json\n", encoding="utf-8")
    return path


def test_damaged_import_file_is_rejected_with_file_and_line_and_nothing_imported(tmp_path, runs_dir):
    bad = _bad_jsonl(tmp_path / "hand.jsonl")
    proc = aba("run", str(DEMO), "--data-from", str(bad), "--stages", "sft", "--detach")
    assert proc.returncode == 2
    assert proc.stderr.strip() == (f"aba: {bad}:3: tier must be one of chosen, adequate, rejected, got 'best' "
                                   "(and 2 more bad rows); nothing imported")
    assert not list(runs_dir.iterdir())  # no run folder, no half-imported database
    csv_path = tmp_path / "hand.csv"
    with csv_path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["category", "tier", "turns", "reasoning", "answer", *[f"judge_{d}" for d in DIMENSIONS]])
        w.writerow(["safety", "chosen", "Plain question?", "multi\nline reasoning", "a", *["0.5"] * 9])
        w.writerow(["safety", "chosen", "Other question?", "r", "a", *["0.5"] * 8, "1.5"])
    proc = aba("run", str(DEMO), "--data-from", str(csv_path), "--detach")
    assert proc.returncode == 2 and proc.stderr.strip().startswith(f"aba: {csv_path}:4: judge.instruction_following:")
    assert not list(runs_dir.iterdir())


def test_pooled_agreement_counts_each_shared_trace_once(runs_dir):
    src = _source(runs_dir)
    later = sup.create_run(DEMO, runs_dir, ["sft"], data_from=src.name)
    with RunStore(later / "run.db") as s:
        s.edit_score(1, "helpfulness", 0.5, equal_weights())  # the later run re-edits a copied trace: its edit wins
        s.edit_score(3, "helpfulness", 0.7, equal_weights())
    stores = [RunStore(src / "run.db", readonly=True), RunStore(later / "run.db", readonly=True)]
    pooled = pooled_judge_agreement(stores)
    with RunStore(src / "run.db") as s:
        judge_1 = s.trace(1)["judge"]["helpfulness"]
    assert pooled["helpfulness"]["n"] == 2  # traces 1 and 3, not 1 twice
    assert pooled["helpfulness"]["mae"] == pytest.approx((abs(judge_1 - 0.5) + abs(stores[1].trace(3)["judge"]["helpfulness"] - 0.7)) / 2)
    proc = aba("judge-agreement", src.name, later.name, "--json")
    assert proc.returncode == 0 and json.loads(proc.stdout)["helpfulness"]["n"] == 2
