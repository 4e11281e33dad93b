"""The demo end to end: its GRPO reward climbs measurably; the gameable demo sets off the doctor's alarms."""

from __future__ import annotations

from engine.reporting.health_table import gain_line, reward_gain
from engine.runner import supervisor as sup
from engine.store import RunStore
from tests.conftest import DEMO, ROOT, aba, run_id_of

HACK = ROOT / "data" / "configs" / "demo-hack.toml"


def _finished(config, runs_dir, stages: str = "datagen,judge,sft,grpo") -> tuple:
    proc = aba("run", str(config), "--stages", stages, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc, sup.resolve_run(run_id_of(proc), runs_dir)


def test_demo_grpo_reward_climbs_with_an_interval_above_zero(runs_dir):
    proc, run_dir = _finished(DEMO, runs_dir)
    with RunStore(run_dir / "run.db") as store:
        rewards = store.metric_series("grpo", "reward")[2]
        stored = store.results("grpo", "reward_gain")["grpo"]
        grpo = store.stage("grpo")
        health = store.results("grpo", "health")
        completions = store.results("grpo", "completions")
    gain = reward_gain(rewards, seed=3407)
    print(f"\ndemo grpo: {len(rewards)} steps in {grpo.ended - grpo.started:.0f} s; {gain_line(gain)}")
    assert len(rewards) == 30 and gain == stored
    assert gain["gain"] > 0 and gain["lo"] > 0, gain_line(gain)
    assert gain_line(gain) in proc.stdout  # reported with the run
    # Every completion of each sampled step (the first, then every 5), from TRL's own table: advantages are TRL's.
    assert sorted(e["step"] for e in completions.values()) == [1, 5, 10, 15, 20, 25, 30]
    for entry in completions.values():
        rows = entry["rows"]
        assert len(rows) == 8 and {r["group"] for r in rows} == {0, 1} and entry["max_completion_length"] == 48
        for g in (0, 1):
            group = [r for r in rows if r["group"] == g]
            assert [r["index"] for r in group] == [0, 1, 2, 3]
            assert abs(sum(r["advantage"] for r in group)) < 1e-3  # centred within its group
            best = max(group, key=lambda r: r["reward"])
            assert best["advantage"] == max(r["advantage"] for r in group)
        for r in rows:
            assert 0 < r["length"] <= 48 and r["clipped"] == (r["length"] == 48)
            assert set(r["scores"]) == {"entropy_reduction", "calibrated_uncertainty", "conflict_resolution",
                                        "context_faithfulness", "process_transparency", "honest_engagement",
                                        "helpfulness", "harm_avoidance", "instruction_following"}
    # The doctor agrees the reward rises. (Length may reach the 48-token cap: the think-block reward counts
    # reasoning words, so length_hacking can fire here too, and says so truthfully.)
    fired = {r["rule"]: r["first_step"] for r in health.values() if r["first_step"] is not None}
    print(f"demo grpo: rules that fired (first step): {fired}")
    assert "reward_not_rising" not in fired and health["reward_not_rising"]["state"] == "ok"


def test_demo_hack_fires_length_hacking_and_divergence(runs_dir):
    proc, run_dir = _finished(HACK, runs_dir)
    with RunStore(run_dir / "run.db") as store:
        health = store.results("grpo", "health")
        events = [e.data for e in store.events(kind="health") if e.data.get("first")]
        lengths = store.metric_series("grpo", "completions/mean_length")[2]
    fired = {e["rule"]: e["step"] for e in events}
    print(f"\ndemo-hack: rules fired (first step): {fired}; mean length {lengths[0]:.0f} -> {lengths[-1]:.0f} of 64")
    assert health["length_hacking"]["first_step"] is not None, health["length_hacking"]
    assert "length_hacking" in fired and "component_divergence" in fired
    assert "health alarm: length_hacking" in proc.stdout
