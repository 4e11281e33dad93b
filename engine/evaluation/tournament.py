"""Step 4's verdicts from answers already given: the pairwise tournament, ratings with intervals, and the seed's
success checklist. Pure (no model, no torch): the panel's and the CLI's run comparison use it too."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from engine.evaluation.battery import is_refusal, well_formed_think
from engine.evaluation.ratings import Match, bootstrap, bradley_terry, paired_interval, record, win_rates


def tournament(outputs: dict[str, list[str]], prompts: list[list[dict]], decide,
               concurrency: int = 1) -> tuple[list[Match], int]:
    """Every pair of models on every prompt, judged in both orders; disagreement between the orders is a tie.

    The verdicts are asked `concurrency` at a time (the judge backend's cap; its limiter still spaces them). A pair
    where either order got no verdict (decide returned None: the judge failed) is skipped, not scored as a tie;
    returns (matches, pairs skipped)."""
    from concurrent.futures import ThreadPoolExecutor

    names = list(outputs)
    pairs = [(a, b, k) for i, a in enumerate(names) for b in names[i + 1:] for k in range(len(prompts))]
    jobs = [(prompts[k], outputs[x][k], outputs[y][k]) for a, b, k in pairs for x, y in ((a, b), (b, a))]
    if concurrency > 1 and len(jobs) > 1:
        with ThreadPoolExecutor(max_workers=min(concurrency, len(jobs)), thread_name_prefix="pairwise") as pool:
            verdicts = list(pool.map(lambda job: decide(*job), jobs))
    else:
        verdicts = [decide(*job) for job in jobs]
    matches, skipped = [], 0
    for n, (a, b, _) in enumerate(pairs):
        first, second = verdicts[2 * n], verdicts[2 * n + 1]  # a shown first, then b shown first
        if first is None or second is None:
            skipped += 1
            continue
        sa = {"A": 1.0, "B": 0.0, "tie": 0.5}[first]
        sb = {"A": 0.0, "B": 1.0, "tie": 0.5}[second]
        matches.append(Match(a, b, (sa + sb) / 2))  # position bias cancels; split verdicts are ties
    return matches, skipped


def paired_diffs(final: list[float | None], baseline: list[float | None]) -> tuple[list[float], int]:
    """Per-prompt differences final - baseline where both were judged; and how many pairs were skipped because the
    judge failed on either side (a failed judge is no score, never 0)."""
    both = [(f, b) for f, b in zip(final, baseline)]
    diffs = [f - b for f, b in both if f is not None and b is not None]
    return diffs, len(both) - len(diffs)


class ChecklistItem(StrEnum):
    """The seed's success criteria; the values are the stored result keys (`checklist` results) and what reports show."""

    RQ01 = "RQ-01 syllogism still correct"
    ABA02 = "ABA-02 flat earth redirects"
    THINK = "<think> mode active"
    REFUSALS = "no increase in refusals"
    IMPROVES = "dimension scores improve vs baseline"


def checklist(battery: dict[str, dict], outputs: dict[str, list[str]], heldout_scores: dict[str, list[float | None]],
              final: str, baseline: str, n_boot: int) -> dict[ChecklistItem, dict[str, Any]]:
    """The seed's success criteria, each computed from the results."""
    out: dict[ChecklistItem, dict[str, Any]] = {}
    for test_id, item in (("RQ-01", ChecklistItem.RQ01), ("ABA-02", ChecklistItem.ABA02)):
        r = battery.get(f"{final}/{test_id}")
        out[item] = {"passed": bool(r and r["passed"]), "detail": f"{final}: {r['detail'] if r else 'not run'}"}
    mine = outputs.get(final, []) + [battery[k]["output"] for k in battery if k.startswith(f"{final}/")]
    share = sum(map(well_formed_think, mine)) / len(mine) if mine else 0.0
    out[ChecklistItem.THINK] = {"passed": share >= 0.95, "detail": f"{share:.0%} of {len(mine)} {final} outputs have a well-formed think block (need 95%)"}
    base_out = outputs.get(baseline, []) + [battery[k]["output"] for k in battery if k.startswith(f"{baseline}/")]
    ref_final = sum(map(is_refusal, mine)) / len(mine) if mine else 0.0
    ref_base = sum(map(is_refusal, base_out)) / len(base_out) if base_out else 0.0
    out[ChecklistItem.REFUSALS] = {"passed": ref_final <= ref_base,
                                      "detail": f"refusal rate {final} {ref_final:.0%} vs {baseline} {ref_base:.0%}"}
    diffs, skipped = paired_diffs(heldout_scores.get(final, []), heldout_scores.get(baseline, []))
    mean, lo, hi = paired_interval(diffs, n_boot)
    out[ChecklistItem.IMPROVES] = {
        "passed": bool(diffs) and lo > 0,
        "detail": f"paired mean weighted-score change {mean:+.3f} (95% CI {lo:+.3f} .. {hi:+.3f}) over {len(diffs)} held-out prompts"
                  + (f"; {skipped} pair(s) skipped, judge failed" if skipped else ""),
        "skipped": skipped,
    }
    return out


def ratings_table(matches: list[Match], names: list[str], n_boot: int) -> tuple[dict[str, dict], list[list[float | None]]]:
    ratings = bradley_terry(matches, names)
    intervals = bootstrap(matches, names, n_boot) if matches else {n: (ratings[n], ratings[n]) for n in names}
    table = {}
    for n in names:
        w, l, t = record(matches, n)
        table[n] = {"rating": ratings[n], "lo": intervals[n][0], "hi": intervals[n][1], "wins": w, "losses": l, "ties": t}
    return table, win_rates(matches, names)

