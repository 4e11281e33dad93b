"""Step 4: the 12-test battery on every model, a pairwise tournament on held-out prompts, the success checklist."""

from __future__ import annotations

import gc
from pathlib import Path

from engine.context import StageContext, StageFailed

ROOT = Path(__file__).resolve().parent.parent.parent


def _path(p: str) -> Path:
    return Path(p) if Path(p).is_absolute() else ROOT / p


def kept_from_playground(ctx: StageContext) -> tuple[list, list[list[dict]]]:
    """Questions kept in the playground (issue 21): battery tests that the weighted total of the answer stays at
    least what the best kept answer scored, and held-out prompts for the tournament."""
    from engine.evaluation.battery import Test

    tests = []
    for p in ctx.store.promoted_prompts("battery"):
        best = max((r["weighted"] for r in ctx.store.exchanges(turn=p["turn"]) if r["weighted"] is not None), default=0.5)
        tests.append(Test(f"PG-{p['turn']}", f"playground turn {p['turn']} still as good", p["prompt"], "judge",
                          dimension="weighted", threshold=round(best, 3)))
    heldout = [p["history"] + [{"role": "user", "content": p["prompt"]}] for p in ctx.store.promoted_prompts("heldout")]
    if tests or heldout:
        ctx.log(f"eval: {len(tests)} battery test(s) and {len(heldout)} held-out prompt(s) kept from the playground")
    return tests, heldout


def run(ctx: StageContext) -> None:
    from engine.evaluation import answers as ev
    from engine.evaluation import tournament as tn
    from engine.evaluation.battery import check, load_battery
    from engine.dims import weighted_score
    from engine.text import split_think
    from engine.judging.factory import JitterSeed, make_pairwise, make_scorer

    e = ctx.cfg.eval
    tests = load_battery(_path(e.battery))
    heldout = ev.load_heldout(_path(e.heldout))
    kept_tests, kept_heldout = kept_from_playground(ctx)
    tests, heldout = tests + kept_tests, heldout + kept_heldout
    names = list(e.models)
    if "ties" not in names and (ctx.run_dir / "ties" / "adapter").exists():
        names.append("ties")  # Strategy B joins the tournament against the joint model
    refs = ev.resolve_models(ctx, names)
    if len(refs) < 1:
        raise StageFailed("no model to evaluate (eval.models names none that exists)")
    scorer, judge_name = make_scorer(ctx)
    weights = ctx.cfg.grpo.reward_weights
    total = len(refs) * (len(tests) + len(heldout))
    done = 0
    battery: dict[str, dict] = {}
    outputs: dict[str, list[str]] = {}
    scores: dict[str, list[float]] = {}
    ctx.log(f"eval: {len(tests)} tests and {len(heldout)} held-out prompts on {', '.join(r.name for r in refs)}; judge {judge_name}")
    for ref in refs:
        model, tok = ev.load(ctx, ref)
        passed = 0
        for t in tests:
            ctx.check_cancel()
            turns = [{"role": "user", "content": t.prompt}]
            out = ev.generate(model, tok, turns, e.max_new_tokens)
            js = scorer(turns, *split_think(out)) if t.kind == "judge" else None
            if js is not None and t.dimension == "weighted":  # a kept playground question: the weighted total
                js = dict(js, weighted=weighted_score(js, weights))
            ok, detail = check(t, out, js)
            passed += ok
            row = {"model": ref.name, "test": t.id, "title": t.title, "passed": ok, "detail": detail, "output": out}
            battery[f"{ref.name}/{t.id}"] = row
            ctx.result("battery", f"{ref.name}/{t.id}", row)
            done += 1
            ctx.progress(done, total, f"{ref.name}: battery {t.id}")
        outputs[ref.name], scores[ref.name] = [], []
        for k, turns in enumerate(heldout):
            ctx.check_cancel()
            out = ev.generate(model, tok, turns, e.max_new_tokens)
            s = scorer(turns, *split_think(out))
            w = weighted_score(s, weights)
            outputs[ref.name].append(out)
            scores[ref.name].append(w)  # None when the judge failed: that prompt's pairs are skipped, not scored 0
            ctx.result("heldout", f"{ref.name}/{k}", {"model": ref.name, "prompt": turns[-1]["content"], "output": out, "scores": s, "weighted": w})
            done += 1
            ctx.progress(done, total, f"{ref.name}: held-out {k + 1}/{len(heldout)}")
        judged = [w for w in scores[ref.name] if w is not None]
        mean = sum(judged) / len(judged) if judged else None
        ctx.metric(0, **{f"eval/{ref.name}/battery_passed": passed, f"eval/{ref.name}/heldout_weighted": mean,
                         f"eval/{ref.name}/heldout_judge_failed": len(heldout) - len(judged)})
        ctx.log(f"{ref.name}: {passed}/{len(tests)} battery tests passed; mean held-out weighted score "
                f"{'n/a' if mean is None else f'{mean:.3f}'} ({len(heldout) - len(judged)} judge failures)")
        del model
        gc.collect()
    # Tournament: every pair, both orders.
    decide, concurrency = make_pairwise(ctx, scorer, JitterSeed.EVAL_PAIRWISE)
    matches, skipped = tn.tournament(outputs, heldout, decide, concurrency)
    if skipped:
        ctx.log(f"tournament: {skipped} of {skipped + len(matches)} pairs skipped (the judge gave no verdict)", "warn")
    ctx.metric(0, **{"eval/tournament_pairs": len(matches), "eval/tournament_skipped": skipped})
    model_names = list(outputs)
    table, matrix = tn.ratings_table(matches, model_names, e.bootstrap)
    for name, row in table.items():
        ctx.result("ratings", name, row)
    ctx.result("winrate", "matrix", {"models": model_names, "matrix": matrix})
    final = refs[-1].name if refs[-1].name != "ties" or len(refs) == 1 else refs[-2].name
    baseline = e.baseline if e.baseline in outputs else model_names[0]
    items = tn.checklist(battery, outputs, scores, final, baseline, e.bootstrap)
    paired = items[tn.ChecklistItem.IMPROVES]
    if paired["skipped"]:
        ctx.log(f"paired comparison {final} vs {baseline}: {paired['skipped']} held-out pair(s) skipped, judge failed", "warn")
    for item, row in items.items():
        ctx.result("checklist", item, row)
    ratings = ", ".join(f"{n} {r['rating']:.0f} [{r['lo']:.0f}, {r['hi']:.0f}]" for n, r in table.items())
    ctx.log(f"ratings: {ratings}")
    ctx.log(f"checklist ({final} vs {baseline}): " + "; ".join(f"{k}: {'pass' if v['passed'] else 'FAIL'}" for k, v in items.items()))
