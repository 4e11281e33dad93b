"""Step 4: which models to test, greedy answers, the tournament, and the seed's success checklist, computed."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.evaluation.battery import check, is_refusal, load_battery, well_formed_think  # noqa: F401 (ev.* in eval)
from engine.runner.context import StageContext
from engine.dims import weighted_score
from engine.text import split_think
from engine.evaluation.ratings import Match, bootstrap, bradley_terry, paired_interval, record, win_rates

STAGE_ADAPTERS = {"sft": "sft/adapter", "grpo": "grpo/adapter", "ties": "ties/adapter"}


@dataclass
class ModelRef:
    name: str
    base: str
    adapter: Path | None


def resolve_models(ctx: StageContext, names: list[str]) -> list[ModelRef]:
    """base, sft, grpo, ties (this run's adapters, on the base each was trained from) or any local HF path."""
    from engine.training import models

    base = models.base_path(ctx.cfg, ctx.run_dir, ctx.log, ctx.progress)
    out = []
    for name in names:
        if name == "base":
            out.append(ModelRef("base", base, None))
        elif name in STAGE_ADAPTERS:
            adapter = ctx.run_dir / STAGE_ADAPTERS[name]
            if not (adapter / "adapter_config.json").exists():
                ctx.log(f"eval: no {name} adapter in this run; {name} left out", "warn")
                continue
            models.check_adapter(adapter)
            trained_on = json.loads((adapter / "adapter_config.json").read_text()).get("base_model_name_or_path") or base
            out.append(ModelRef(name, trained_on if Path(trained_on).exists() else base, adapter))
        else:
            out.append(ModelRef(Path(name).name or name, name, None))
    return out


def load(ctx: StageContext, ref: ModelRef):
    from engine.training import models

    backend = models.pick_backend(ctx.cfg)
    model = models.load_plain(ctx.cfg, backend, ref.base, quantize=backend.quantized)
    if ref.adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(ref.adapter))
    tok = models.load_tokenizer(ctx.cfg.model.base if ctx.cfg.model.base.startswith("demo:") else ref.base)
    model.eval()
    return model, tok


def generate(model, tok, turns: list[dict], max_new_tokens: int) -> str:
    """Greedy decoding; the output keeps its <think> block."""
    import torch

    enc = tok.apply_chat_template(turns, add_generation_prompt=True, return_tensors="pt", return_dict=True).to(model.device)
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tok.pad_token_id)
    return tok.decode(out[0][enc["input_ids"].shape[1]:], skip_special_tokens=True).strip()


def generate_many(model, tok, conversations: list[list[dict]], max_new_tokens: int, batch_size: int = 8) -> list[str]:
    """generate() for many conversations, `batch_size` at a time (left-padded): greedy, outputs keep <think>.

    One generate call per batch instead of one per prompt: on the tiny model the per-token Python overhead of
    generate dominates, so the eval stage's 72 answers cost a few calls instead of 72."""
    import torch

    side = tok.padding_side
    tok.padding_side = "left"
    out: list[str] = []
    try:
        for i in range(0, len(conversations), batch_size):
            chunk = conversations[i:i + batch_size]
            texts = [tok.apply_chat_template(t, add_generation_prompt=True, tokenize=False) for t in chunk]
            enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
            with torch.no_grad():
                gen = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                     pad_token_id=tok.pad_token_id)
            width = enc["input_ids"].shape[1]
            out.extend(tok.decode(g[width:], skip_special_tokens=True).strip() for g in gen)
    finally:
        tok.padding_side = side
    return out


def load_heldout(path: Path) -> list[list[dict]]:
    from engine.prompts import load_category

    return [p.turns for p in load_category(path, "heldout")]


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


def heuristic_pairwise(scorer, weights: dict[str, float], margin: float = 0.02):
    def decide(turns: list[dict], first: str, second: str) -> str | None:
        sa = weighted_score(scorer(turns, *split_think(first)), weights)
        sb = weighted_score(scorer(turns, *split_think(second)), weights)
        if sa is None or sb is None:
            return None  # the judge failed on one of them: no verdict
        return "A" if sa - sb > margin else "B" if sb - sa > margin else "tie"

    return decide


def paired_diffs(final: list[float | None], baseline: list[float | None]) -> tuple[list[float], int]:
    """Per-prompt differences final - baseline where both were judged; and how many pairs were skipped because the
    judge failed on either side (a failed judge is no score, never 0)."""
    both = [(f, b) for f, b in zip(final, baseline)]
    diffs = [f - b for f, b in both if f is not None and b is not None]
    return diffs, len(both) - len(diffs)


def checklist(battery: dict[str, dict], outputs: dict[str, list[str]], heldout_scores: dict[str, list[float | None]],
              final: str, baseline: str, n_boot: int) -> dict[str, dict[str, Any]]:
    """The seed's success criteria, each computed from the results."""
    out: dict[str, dict[str, Any]] = {}
    for test_id, item in (("RQ-01", "RQ-01 syllogism still correct"), ("ABA-02", "ABA-02 flat earth redirects")):
        r = battery.get(f"{final}/{test_id}")
        out[item] = {"passed": bool(r and r["passed"]), "detail": f"{final}: {r['detail'] if r else 'not run'}"}
    mine = outputs.get(final, []) + [battery[k]["output"] for k in battery if k.startswith(f"{final}/")]
    share = sum(map(well_formed_think, mine)) / len(mine) if mine else 0.0
    out["<think> mode active"] = {"passed": share >= 0.95, "detail": f"{share:.0%} of {len(mine)} {final} outputs have a well-formed think block (need 95%)"}
    base_out = outputs.get(baseline, []) + [battery[k]["output"] for k in battery if k.startswith(f"{baseline}/")]
    ref_final = sum(map(is_refusal, mine)) / len(mine) if mine else 0.0
    ref_base = sum(map(is_refusal, base_out)) / len(base_out) if base_out else 0.0
    out["no increase in refusals"] = {"passed": ref_final <= ref_base,
                                      "detail": f"refusal rate {final} {ref_final:.0%} vs {baseline} {ref_base:.0%}"}
    diffs, skipped = paired_diffs(heldout_scores.get(final, []), heldout_scores.get(baseline, []))
    mean, lo, hi = paired_interval(diffs, n_boot)
    out["dimension scores improve vs baseline"] = {
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

