"""The GRPO doctor: health rules as data, evaluated on every logged step into ok / warn / alarm with a reason."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from engine.dims import DIMENSIONS

OK, WARN, ALARM, NO_DATA = "ok", "warn", "alarm", "no data"
STATES = (OK, WARN, ALARM, NO_DATA)


def finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs)


def halves(xs: list[float]) -> tuple[float, float]:
    """Mean of the first and of the second half of a window (the middle value of an odd window goes to neither)."""
    h = len(xs) // 2
    return _mean(xs[:h]), _mean(xs[len(xs) - h :])


class History:
    """Every logged value per metric key, in step order; non-finite values are kept as NaN."""

    def __init__(self) -> None:
        self.steps: list[int] = []
        self.series: dict[str, list[tuple[int, float]]] = {}

    def add(self, step: int, values: dict[str, Any]) -> None:
        self.steps.append(step)
        for key, v in values.items():
            if v is None or finite(v):
                self.series.setdefault(key, []).append((step, float("nan") if v is None else float(v)))
            elif isinstance(v, float):  # nan or inf
                self.series.setdefault(key, []).append((step, v))

    def has(self, key: str) -> bool:
        return key in self.series

    def last(self, key: str, n: int) -> list[float]:
        """The latest n finite values (fewer when fewer were logged)."""
        vals = [v for _, v in self.series.get(key, []) if math.isfinite(v)]
        return vals[-n:] if n > 0 else vals

    def latest(self, key: str) -> float | None:
        rows = self.series.get(key)
        return rows[-1][1] if rows else None


@dataclass
class Facts:
    """What the rules need to know about the run besides its metrics."""

    max_completion_length: int | None = None
    weights: dict[str, float] = field(default_factory=dict)  # reward weight per dimension (0: not part of the reward)

    def reward_dims(self, history: History) -> list[str]:
        dims = [d for d in DIMENSIONS if history.has(f"rewards/{d}/mean")]
        return [d for d in dims if self.weights.get(d, 1.0) > 0]


@dataclass
class Finding:
    """A rule's verdict at one step: fired or not, the figure it judged, and a one-line detail."""

    fired: bool
    value: float | None
    detail: str = ""


Check = Callable[[History, Any, Facts], Finding | None]  # None: not enough data yet


@dataclass(frozen=True)
class Rule:
    name: str
    title: str
    keys: tuple[str, ...]  # metric keys read ('<dim>' stands for each reward dimension)
    window: str  # the [health] key holding the window in logged steps ("" where the latest value is enough)
    thresholds: tuple[str, ...]  # the [health] keys holding its thresholds
    severity: str  # the state when it fires: warn or alarm
    explain: str
    remedy: str
    check: Check

    def describe(self, hcfg: Any) -> str:
        parts = [f"{k} = {getattr(hcfg, k)}" for k in ((self.window,) if self.window else ()) + self.thresholds]
        return ", ".join(parts) or "no threshold: any occurrence"


# -- the checks --------------------------------------------------------------------------------


def _reward_not_rising(h: History, c: Any, f: Facts) -> Finding | None:
    vals = h.last("reward", c.reward_window)
    if len(vals) < c.reward_window:
        return None
    first, last = halves(vals)
    gain = last - first
    if gain <= c.reward_min_gain:
        return Finding(True, gain, f"reward {first:.3f} -> {last:.3f} over the last {len(vals)} steps")
    if last < c.reward_floor:
        return Finding(True, gain, f"reward mean {last:.3f} is below {c.reward_floor}")
    return Finding(False, gain, f"reward {first:.3f} -> {last:.3f}")


def _window_mean_above(key: str, limit_key: str, what: str) -> Check:
    def check(h: History, c: Any, f: Facts) -> Finding | None:
        vals = h.last(key, c.window)
        if len(vals) < c.window:
            return None
        m, limit = _mean(vals), getattr(c, limit_key)
        return Finding(m > limit, m, f"{what} {m:.3g} (limit {limit})")

    return check


def _window_mean_below(key: str, limit_key: str, what: str) -> Check:
    def check(h: History, c: Any, f: Facts) -> Finding | None:
        vals = h.last(key, c.window)
        if len(vals) < c.window:
            return None
        m, limit = _mean(vals), getattr(c, limit_key)
        return Finding(m < limit, m, f"{what} {m:.3g} (floor {limit})")

    return check


def _length_hacking(h: History, c: Any, f: Facts) -> Finding | None:
    lengths = h.last("completions/mean_length", c.trend_window)
    clipped = h.last("completions/clipped_ratio", c.trend_window)
    if len(lengths) < c.trend_window or len(clipped) < c.trend_window or not f.max_completion_length:
        return None
    l0, l1 = halves(lengths)
    c0, c1 = halves(clipped)
    top = f.max_completion_length
    share = l1 / top
    climbing = l1 - l0 >= c.length_rise * top
    fired = climbing and share >= c.length_near_max and c1 > c0
    return Finding(fired, share, f"mean length {l0:.0f} -> {l1:.0f} of {top} tokens, clipped {c0:.2f} -> {c1:.2f}")


def _component_divergence(h: History, c: Any, f: Facts) -> Finding | None:
    dims = f.reward_dims(h)
    total = h.last("reward", c.trend_window)
    if len(total) < c.trend_window or len(dims) < 2:
        return None
    deltas = {}
    for d in dims:
        vals = h.last(f"rewards/{d}/mean", c.trend_window)
        if len(vals) == c.trend_window:
            a, b = halves(vals)
            deltas[d] = b - a
    if len(deltas) < 2:
        return None
    t0, t1 = halves(total)
    up = max(deltas, key=deltas.get)
    down = min(deltas, key=deltas.get)
    rise, fall = deltas[up], deltas[down]
    fired = rise > c.divergence_delta and (t1 - t0 < 0 or fall < -c.divergence_delta)
    detail = f"{up} {rise:+.3f} while {down} {fall:+.3f} and the total {t1 - t0:+.3f}"
    return Finding(fired, rise, detail)


def _saturated(h: History, c: Any, f: Facts) -> Finding | None:
    dims = f.reward_dims(h)
    if not dims:
        return None
    stuck = []
    seen = False
    for d in dims:
        means = h.last(f"rewards/{d}/mean", c.window)
        stds = h.last(f"rewards/{d}/std", c.window)
        if len(means) < c.window or len(stds) < c.window:
            continue
        seen = True
        if all(s <= 1e-9 for s in stds) and (all(m >= 1 - 1e-9 for m in means) or all(m <= 1e-9 for m in means)):
            stuck.append(f"{d} at {means[-1]:.0f}")
    if not seen:
        return None
    return Finding(bool(stuck), float(len(stuck)), ", ".join(stuck) or "every weighted component varies")


def _nonfinite(h: History, c: Any, f: Facts) -> Finding | None:
    bad = []
    for key in ("loss", "grad_norm"):
        v = h.latest(key)
        if v is not None and not math.isfinite(v):
            bad.append(f"{key} = {v}")
    if not h.has("loss") and not h.has("grad_norm"):
        return None
    return Finding(bool(bad), None, ", ".join(bad) or "loss and grad norm finite")


def _vram_headroom(h: History, c: Any, f: Facts) -> Finding | None:
    free, total = h.latest("vram/headroom_mb"), h.latest("vram/total_mb")
    if free is None or not total or not math.isfinite(free):
        return None
    share = free / total
    return Finding(share < c.vram_min_headroom, share, f"{free:.0f} MB of {total:.0f} MB free ({share:.1%})")


RULES: tuple[Rule, ...] = (
    Rule("reward_not_rising", "reward", ("reward",), "reward_window", ("reward_min_gain", "reward_floor"), WARN,
         "The mean reward of the later half of the window is not above the earlier half (or stays under the floor).",
         "Raise the learning rate, check the reward is learnable by this model, or read the completions.",
         _reward_not_rising),
    Rule("zero_std_groups", "zero-std", ("frac_reward_zero_std",), "window", ("zero_std_max",), ALARM,
         "Most groups give every completion the same reward: no advantage, no gradient.",
         "Raise temperature or num_generations, or use a judge with finer scores.",
         _window_mean_above("frac_reward_zero_std", "zero_std_max", "share of zero-std groups")),
    Rule("entropy_low", "entropy", ("entropy",), "window", ("entropy_low",), WARN,
         "Token entropy is falling toward collapse: the policy is becoming deterministic.",
         "Lower the learning rate, raise beta or temperature.",
         _window_mean_below("entropy", "entropy_low", "entropy")),
    Rule("entropy_collapse", "collapse", ("entropy",), "window", ("entropy_collapse",), ALARM,
         "Token entropy has collapsed: the policy repeats itself and exploration is over.",
         "Restart from an earlier checkpoint with a lower learning rate or a higher beta.",
         _window_mean_below("entropy", "entropy_collapse", "entropy")),
    Rule("kl_divergence", "KL", ("kl",), "window", ("kl_max",), ALARM,
         "KL to the reference model is above the limit: the policy has drifted away from the SFT model.",
         "Raise beta, lower the learning rate, or resume from an earlier checkpoint.",
         _window_mean_above("kl", "kl_max", "KL")),
    Rule("clipping", "clip", ("clip_ratio/region_mean",), "window", ("clip_max",), WARN,
         "Many tokens hit the PPO clip region: updates are too large for the trust region.",
         "Lower the learning rate or the number of iterations per generation batch.",
         _window_mean_above("clip_ratio/region_mean", "clip_max", "clipped token share")),
    Rule("length_hacking", "length", ("completions/mean_length", "completions/clipped_ratio"), "trend_window",
         ("length_rise", "length_near_max"), ALARM,
         "Completion length climbs to max_completion_length while more completions are cut off: the judge may reward length.",
         "Read the longest completions; audit the judge (aba audit-judge); penalise length or cap the length-driven dimensions.",
         _length_hacking),
    Rule("component_divergence", "diverge", ("reward", "rewards/<dim>/mean"), "trend_window", ("divergence_delta",), WARN,
         "One reward component rises while the weighted total or another component falls: the policy maxes a cheap dimension.",
         "Look at which dimension rises; lower its weight or fix what the judge rewards there.",
         _component_divergence),
    Rule("component_saturated", "saturated", ("rewards/<dim>/mean", "rewards/<dim>/std"), "window", (), WARN,
         "A weighted component gives every completion the same 1.0 or 0.0: it adds no signal to the advantage.",
         "Give it weight 0, or make the judge's scale finer on that dimension.",
         _saturated),
    Rule("judge_failures", "judge", ("judge/failed_share",), "window", ("judge_failed_max",), ALARM,
         "The judge fails on too many completions: those get no reward and no gradient.",
         "Check the judge server, its rate limits and its replies (aba tail); lower concurrency.",
         _window_mean_above("judge/failed_share", "judge_failed_max", "judge failed share")),
    Rule("nonfinite", "NaN", ("loss", "grad_norm"), "", (), ALARM,
         "Loss or gradient norm is NaN or infinite: training has diverged.",
         "Resume from the last checkpoint with a lower learning rate; check the data and the precision (bf16).",
         _nonfinite),
    Rule("vram_headroom", "VRAM", ("vram/headroom_mb", "vram/total_mb"), "", ("vram_min_headroom",), ALARM,
         "Less than the minimum share of GPU memory is free: an out-of-memory stop is close.",
         "Fewer generations, shorter completions, or gradient checkpointing.",
         _vram_headroom),
)
RULE_BY_NAME = {r.name: r for r in RULES}
# Keys the rules read that TRL does not log: the judge watch writes them per step (engine.training.judge_watch).
JUDGE_RULE_KEYS = ("judge/failed_share",)


@dataclass
class RuleState:
    rule: str
    state: str = NO_DATA
    value: float | None = None
    detail: str = ""
    first_step: int | None = None  # the first step it fired
    last_step: int | None = None  # the latest step it was checked at

    def as_dict(self) -> dict[str, Any]:
        r = RULE_BY_NAME[self.rule]
        return {"rule": self.rule, "title": r.title, "state": self.state, "severity": r.severity,
                "value": self.value if self.value is None or math.isfinite(self.value) else None,
                "detail": self.detail, "first_step": self.first_step, "last_step": self.last_step,
                "explain": r.explain, "remedy": r.remedy}


@dataclass
class Change:
    """A rule's state changed at a step: the event the worker writes (first=True the first time it fires)."""

    step: int
    state: RuleState
    previous: str
    first: bool

    @property
    def message(self) -> str:
        r = RULE_BY_NAME[self.state.rule]
        if self.state.state == OK and self.previous == NO_DATA:
            return f"health: watching {r.name} from step {self.step} ({self.state.detail})"
        if self.state.state == OK:
            return f"health: {r.name} cleared at step {self.step} ({self.state.detail})"
        return f"health {self.state.state}: {r.name} at step {self.step}: {self.state.detail}. {r.explain} Try: {r.remedy}"


class HealthMonitor:
    """Feeds each logged step to every rule and reports the state changes."""

    def __init__(self, hcfg: Any, facts: Facts | None = None, rules: Iterable[Rule] = RULES):
        self.hcfg = hcfg
        self.facts = facts or Facts()
        self.rules = tuple(rules)
        self.history = History()
        self.states = {r.name: RuleState(r.name) for r in self.rules}

    def observe(self, step: int, values: dict[str, Any]) -> list[Change]:
        self.history.add(step, values)
        changes = []
        for rule in self.rules:
            st = self.states[rule.name]
            finding = rule.check(self.history, self.hcfg, self.facts)
            if finding is None:
                continue
            new = rule.severity if finding.fired else OK
            previous = st.state
            st.value, st.detail, st.last_step = finding.value, finding.detail, step
            first = finding.fired and st.first_step is None
            if first:
                st.first_step = step
            if new != previous:
                st.state = new
                changes.append(Change(step, replace(st), previous, first))  # no data -> ok too: "watching"
        return changes

    def snapshot(self) -> list[dict[str, Any]]:
        return [self.states[r.name].as_dict() for r in self.rules]


def replay(rows: Iterable[tuple[int, dict[str, Any]]], hcfg: Any, facts: Facts | None = None) -> tuple[HealthMonitor, list[Change]]:
    """Run the rules over recorded (step, values) rows, as the worker would have; returns the monitor and every change."""
    monitor = HealthMonitor(hcfg, facts)
    changes: list[Change] = []
    for step, values in rows:
        changes += monitor.observe(step, values)
    return monitor, changes


class HealthReporter:
    """The worker's side: each logged step through the monitor; changes become `health` events, states `health` results."""

    def __init__(self, ctx: Any, monitor: HealthMonitor, prefix: str = ""):
        self.ctx = ctx
        self.monitor = monitor
        self.prefix = prefix
        self._written: dict[str, tuple] = {}

    def observe(self, step: int, logs: dict[str, Any]) -> list[Change]:
        values = {k: v for k, v in logs.items() if v is None or isinstance(v, (int, float)) and not isinstance(v, bool)}
        store = self.ctx.store
        for key in ("vram/headroom_mb", "vram/total_mb"):  # sampled once a second by the worker, not logged by TRL
            v = store.latest_metric(self.ctx.name, key)
            if v is not None:
                values[key] = v
        for key in JUDGE_RULE_KEYS:  # written by JudgeWatch at each step's end (under the stage's prefix), not by TRL
            if key not in values:
                v = store.latest_metric(self.ctx.name, self.prefix + key)
                if v is not None:
                    values[key] = v
        changes = self.monitor.observe(step, values)
        for ch in changes:
            data = ch.state.as_dict()
            data.update(step=ch.step, previous=ch.previous, first=ch.first, prefix=self.prefix)
            self.ctx.event("health", ch.message, **data)
        for row in self.monitor.snapshot():
            if row["state"] == NO_DATA:
                continue
            key = (row["state"], row["value"], row["first_step"])
            if self._written.get(row["rule"]) != key:
                self._written[row["rule"]] = key
                self.ctx.result("health", self.prefix + row["rule"], row)
        return changes
