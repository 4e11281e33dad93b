"""Prompt expansion sends its requests concurrently under the backend's limits; a fatal backend error stops datagen."""

from __future__ import annotations

from pathlib import Path

from engine.llm.limits import LimitedBackend, RetryPolicy
from engine.llm.openai_compat import OpenAIBackend
from tests.conftest import DEMO, aba, demo_variant
from tests.fake_openai import FakeOpenAI


def _ctx(tmp_path: Path, targets: dict[str, int]):
    from engine import config
    from engine.config import STAGES
    from engine.context import StageContext
    from engine.store import RunStore

    cfg = config.load(DEMO)
    cfg.datagen.expand, cfg.datagen.max_prompts, cfg.datagen.category_targets = True, 0, targets
    cfg.datagen.llm.backend = "openai"
    store = RunStore(tmp_path / "run.db", create=True)
    store.init_run("r", "r", "demo", STAGES, ["datagen"])
    store.start_attempt("datagen", 0)
    return StageContext(name="datagen", run_dir=tmp_path, cfg=cfg, store=store)


def test_expansion_requests_run_concurrently_and_stay_unique(tmp_path):
    from engine.stages.datagen import register_prompts

    ctx = _ctx(tmp_path, {"safety": 70, "calibration": 30, "conflict": 45})
    with FakeOpenAI(latency_s=0.2) as srv:
        limited = LimitedBackend(OpenAIBackend("fake", srv.url, timeout_s=5), 6, 100_000, 10**9, RetryPolicy(0))
        prompts = register_prompts(ctx, limited)
        peak, asked = srv.peak_in_flight, srv.expansions
    by_cat: dict[str, list] = {}
    for _, p in prompts:
        by_cat.setdefault(p.category, []).append(p)
    # Missing 48 + 9 + 24: round one asks 3 + 1 + 2 requests at once (20 prompts each at most).
    assert peak == 6
    generated = {c: [p for p in ps if p.source.startswith("generated")] for c, ps in by_cat.items()}
    # The fake writes 3 new prompts a request; each category has max(3, target // 10) requests.
    assert {c: len(g) for c, g in generated.items()} == {"safety": 21, "calibration": 9, "conflict": 12}
    assert asked == 7 + 3 + 4
    texts = [p.turns[-1]["content"] for _, p in prompts]
    assert len(set(texts)) == len(texts)


def test_a_rejected_key_stops_datagen_at_once_with_one_line(tmp_path):
    with FakeOpenAI(fault_rate=1.0, faults=("401",)) as srv:
        cfg = demo_variant(tmp_path, datagen__llm__backend="openai", datagen__llm__base_url=srv.url,
                           datagen__llm__model="fake", datagen__llm__rpm=100_000, datagen__max_prompts=6)
        proc = aba("run", str(cfg), "--stages", "datagen")
        asked = len(srv.requests)
    assert proc.returncode != 0
    assert "HTTP 401" in proc.stdout + proc.stderr and "model fake" in proc.stdout + proc.stderr
    assert asked < 6 * 4  # stopped before trying every call
