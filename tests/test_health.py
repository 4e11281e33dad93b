"""The GRPO doctor's rules on recorded metric series: each fires exactly when it should, none on a healthy run."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pytest

from engine.config.sections import HealthConfig
from engine.training.health_rules import ALARM, NO_DATA, OK, RULES, WARN, Facts, replay

SERIES = json.loads((Path(__file__).parent / "data" / "grpo_healthy_series.json").read_text())


def recorded() -> list[tuple[int, dict]]:
    return copy.deepcopy([(int(s), v) for s, v in SERIES["steps"]])


def facts(**weights: float) -> Facts:
    w = dict(SERIES["weights"])
    w.update(weights)
    return Facts(SERIES["max_completion_length"], w)


def fired(rows, f: Facts | None = None, cfg: HealthConfig | None = None) -> dict[str, int]:
    """{rule: first step it fired} over the series."""
    monitor, changes = replay(rows, cfg or HealthConfig(), f or facts())
    firsts = {s["rule"]: s["first_step"] for s in monitor.snapshot() if s["first_step"] is not None}
    assert firsts == {c.state.rule: c.step for c in changes if c.first}
    return firsts


def set_from(rows, key: str, value, start: int, end: int = 10**9) -> None:
    for step, values in rows:
        if start <= step <= end:
            values[key] = value


def test_the_recorded_series_is_a_rising_run():
    rewards = [v["reward"] for _, v in recorded()]
    assert sum(rewards[-10:]) / 10 > sum(rewards[:10]) / 10 + 0.05


def test_healthy_series_fires_nothing():
    monitor, changes = replay(recorded(), HealthConfig(), facts())
    assert changes and all(c.previous == NO_DATA and c.state.state == OK for c in changes)  # "watching", no alarm
    states = {s["rule"]: s["state"] for s in monitor.snapshot()}
    assert set(states.values()) <= {OK, NO_DATA}
    # What the run never logged stays "no data", never a false "ok".
    assert states["judge_failures"] == NO_DATA and states["vram_headroom"] == NO_DATA
    assert states["reward_not_rising"] == OK and states["length_hacking"] == OK


def test_reward_not_rising_fires_once_the_window_is_full():
    rows = recorded()
    set_from(rows, "reward", 0.3, 1)
    assert fired(rows) == {"reward_not_rising": 20}


def test_reward_below_the_floor_fires_too():
    rows = recorded()
    for _, v in rows:
        v["reward"] -= 0.3  # still rising, but under Axolotl's 0.15
    assert fired(rows) == {"reward_not_rising": 20}


def test_zero_std_groups():
    rows = recorded()
    set_from(rows, "frac_reward_zero_std", 1.0, 11)
    assert fired(rows) == {"zero_std_groups": 15}  # the 5-step mean first exceeds 0.8 at step 15 (0.8 at 14)


def test_entropy_low_then_collapse():
    rows = recorded()
    set_from(rows, "entropy", 0.03, 11, 20)
    set_from(rows, "entropy", 0.001, 21)
    # 5-step means: 0.03 from step 15; (0.03 + 4 x 0.001) / 5 = 0.0068 < 0.01 at step 24
    assert fired(rows) == {"entropy_low": 15, "entropy_collapse": 24}


def test_kl_divergence():
    rows = recorded()
    set_from(rows, "kl", 0.5, 1)
    set_from(rows, "kl", 5.0, 16)
    assert fired(rows) == {"kl_divergence": 17}  # (3 x 0.5 + 2 x 5) / 5 = 2.3 > 2


def test_clipping():
    rows = recorded()
    set_from(rows, "clip_ratio/region_mean", 0.5, 10)
    assert fired(rows) == {"clipping": 11}


def test_length_hacking_fires_when_length_reaches_the_max_while_clipping_rises():
    rows = recorded()
    set_from(rows, "completions/mean_length", 30.0, 1, 20)
    set_from(rows, "completions/clipped_ratio", 0.1, 1, 20)
    set_from(rows, "completions/mean_length", 48.0, 21)
    set_from(rows, "completions/clipped_ratio", 1.0, 21)
    # later half of the 20-step window: (5 x 30 + 5 x 48) / 10 = 39 = 0.81 of 48 at step 25; 0.775 at step 24
    assert fired(rows) == {"length_hacking": 25}


def test_long_but_not_climbing_is_not_length_hacking():
    rows = recorded()
    set_from(rows, "completions/mean_length", 47.0, 1)
    set_from(rows, "completions/clipped_ratio", 0.9, 1)
    assert fired(rows) == {}


def test_component_divergence():
    rows = recorded()
    set_from(rows, "rewards/entropy_reduction/mean", 0.25, 1, 10)
    set_from(rows, "rewards/entropy_reduction/mean", 0.1, 11)
    assert fired(rows) == {"component_divergence": 20}


def test_divergence_ignores_components_outside_the_reward():
    rows = recorded()
    set_from(rows, "rewards/helpfulness/mean", 0.5, 1, 10)
    set_from(rows, "rewards/helpfulness/mean", 0.0, 11)
    assert fired(rows) == {}  # helpfulness has weight 0 here
    assert fired(rows, facts(helpfulness=0.2)) == {"component_divergence": 20}


def test_component_saturated_only_when_it_is_part_of_the_reward():
    rows = recorded()
    set_from(rows, "rewards/harm_avoidance/mean", 1.0, 1)
    set_from(rows, "rewards/harm_avoidance/std", 0.0, 1)
    assert fired(rows) == {}
    assert fired(rows, facts(harm_avoidance=0.1)) == {"component_saturated": 5}


def test_judge_failures_from_judge_failed_share():
    rows = recorded()
    set_from(rows, "judge/failed_share", 0.0, 1)
    set_from(rows, "judge/failed_share", 0.5, 8)
    assert fired(rows) == {"judge_failures": 9}


def test_nan_loss_fires_at_its_step_and_clears_after():
    rows = recorded()
    set_from(rows, "grad_norm", float("nan"), 12, 12)
    monitor, changes = replay(rows, HealthConfig(), facts())
    moves = [(c.step, c.state.rule, c.state.state) for c in changes if c.previous != NO_DATA]
    assert moves == [(12, "nonfinite", ALARM), (13, "nonfinite", OK)]
    assert monitor.states["nonfinite"].first_step == 12


def test_vram_headroom():
    rows = recorded()
    set_from(rows, "vram/total_mb", 16000.0, 1)
    set_from(rows, "vram/headroom_mb", 1000.0, 1)
    set_from(rows, "vram/headroom_mb", 500.0, 7)
    assert fired(rows) == {"vram_headroom": 7}


def test_thresholds_are_config_keys():
    rows = recorded()
    set_from(rows, "kl", 1.5, 1)
    assert fired(rows) == {}
    assert fired(rows, cfg=HealthConfig(kl_max=1.0)) == {"kl_divergence": 5}


def test_every_rule_is_data_with_its_config_keys():
    keys = set(HealthConfig.__dataclass_fields__)
    names = [r.name for r in RULES]
    assert len(names) == len(set(names)) >= 12
    for rule in RULES:
        assert rule.severity in (WARN, ALARM) and rule.explain and rule.remedy and rule.keys
        assert {rule.window, *rule.thresholds} - {""} <= keys, rule.name
        assert rule.describe(HealthConfig())  # "window = 5, kl_max = 2.0" ...


@pytest.mark.parametrize("value", [None, float("inf")])
def test_nonfinite_values_never_crash_the_level_rules(value):
    rows = recorded()
    set_from(rows, "entropy", value, 3, 8)
    set_from(rows, "kl", value, 3, 8)
    monitor, _ = replay(rows, HealthConfig(), facts())
    assert all(s["value"] is None or math.isfinite(s["value"]) for s in monitor.snapshot())
