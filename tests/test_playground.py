"""The playground (issue 21) on a finished demo run: `aba chat` from a fresh shell, the chat worker's models (base,
SFT, GRPO stacked on SFT, a GGUF through llama.cpp), bad input in one line, exchanges kept across restarts."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from engine.dims import DIMENSIONS
from engine.playground import specs
from engine.playground.client import BlockingChat
from engine.playground.settings import ChatSettings
from engine.runner import supervisor as sup
from engine.store import RunStore
from tests.conftest import aba, demo_variant, run_id_of

QUESTION = "Should I back up my files before upgrading?"


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory, _model_cache):
    """One finished demo run (SFT then GRPO, a few steps each), shared by this module's tests."""
    tmp = tmp_path_factory.mktemp("playground")
    runs = tmp / "runs"
    runs.mkdir()
    env = {"ABA_RUNS_DIR": str(runs), "ABA_CACHE_DIR": str(_model_cache), "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1"}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        cfg = demo_variant(tmp, sft__max_steps=3, grpo__max_steps=2, run__stages=["sft", "grpo"])
        proc = aba("run", str(cfg), "--stages", "sft,grpo", timeout=900)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
        run_dir = sup.resolve_run(run_id_of(proc), runs)
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return run_dir


def _copy(run_dir, runs_dir):
    """The shared run copied into this test's runs folder (tests that write exchanges keep theirs apart)."""
    dest = runs_dir / run_dir.name
    shutil.copytree(run_dir, dest, ignore=shutil.ignore_patterns("playground"))
    return dest


def test_grpo_is_the_sft_adapter_stacked_with_grpos(demo_run):
    spec = specs.resolve(demo_run, "grpo", RunStore(demo_run / "run.db", readonly=True))
    assert [name for name, _ in spec.adapters] == ["sft", "grpo"]
    assert specs.resolve(demo_run, "sft").adapters[0][0] == "sft" and specs.resolve(demo_run, "base").adapters == ()


def test_stacked_adapters_answer_as_grpo_on_the_sft_merged_base(demo_run):
    """base + SFT delta + GRPO delta (one model, PEFT adapters switched) gives GRPO's greedy tokens on the model it
    was trained from (the SFT-merged base); the base with adapters disabled gives the plain base's."""
    import threading

    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from engine import config
    from engine.playground.engines import RunModels
    from engine.models import loading as models

    cfg = config.load(demo_run / "config.toml")
    chat = RunModels(cfg, demo_run, lambda m: None)
    s = ChatSettings(max_new_tokens=16)
    msgs = [{"role": "user", "content": QUESTION}]
    got = {}
    for name in ("grpo", "base", "sft"):  # grpo first: the switch back to base and to sft alone is exercised
        got[name] = chat.generate(specs.resolve(demo_run, name), msgs, s, threading.Event(), lambda p: None).text
    tok = models.load_tokenizer("demo:tiny-qwen3")
    ids = tok.apply_chat_template(msgs, add_generation_prompt=True, return_tensors="pt", return_dict=True)

    def greedy(model):
        with torch.no_grad():
            out = model.generate(**ids, max_new_tokens=16, do_sample=False, pad_token_id=tok.pad_token_id)
        return tok.decode(out[0][ids["input_ids"].shape[1]:], skip_special_tokens=True)

    merged = AutoModelForCausalLM.from_pretrained(str(demo_run / "sft" / "merged"), dtype=torch.float32)
    assert got["grpo"] == greedy(PeftModel.from_pretrained(merged, str(demo_run / "grpo" / "adapter")).eval())
    base = AutoModelForCausalLM.from_pretrained(str(demo_run / "base-model"), dtype=torch.float32).eval()
    assert got["base"] == greedy(base)
    assert got["sft"] == greedy(PeftModel.from_pretrained(base, str(demo_run / "sft" / "adapter")).eval())


def test_aba_chat_json_prints_both_answers_with_nine_scores_and_keeps_them(demo_run, runs_dir):
    run_dir = _copy(demo_run, runs_dir)
    proc = aba("chat", run_dir.name, "--models", "base,grpo", "--prompt", QUESTION, "--json", "--max-new-tokens", "24",
               timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout)
    assert [a["model"] for a in out["answers"]] == ["base", "grpo"]
    for a in out["answers"]:
        assert a["status"] in ("done", "length") and a["error"] is None
        assert set(a["scores"]) == set(DIMENSIONS) and all(0 <= v <= 1 for v in a["scores"].values())
        assert a["weighted"] is not None and a["judge_error"] is None
        assert 0 < a["new_tokens"] <= 24 and a["ttft_s"] > 0 and a["answer"] + a["reasoning"]
    assert out["settings"]["temperature"] == 0 and out["judge"] == "heuristic (offline)"
    # Kept: a fresh process reads them back (a restart loses nothing), with settings, timings and scores.
    proc = aba("chat", run_dir.name, "--history", "--json")
    rows = json.loads(proc.stdout)
    assert [r["model"] for r in rows] == ["base", "grpo"] and {r["turn"] for r in rows} == {out["turn"]}
    for r, a in zip(rows, out["answers"]):
        assert r["answer"] == a["answer"] and r["scores"] == a["scores"] and r["weighted"] == a["weighted"]
        assert r["settings"]["max_new_tokens"] == 24 and r["prompt"] == QUESTION and r["judge"] == "heuristic (offline)"
    proc = aba("report", run_dir.name)
    assert proc.returncode == 0, proc.stderr
    report = (run_dir / "report" / "report.md").read_text()
    assert "## Playground exchanges" in report and QUESTION in report


def test_follow_ups_keep_each_models_conversation_and_cancel_stops_at_once(demo_run, runs_dir):
    run_dir = _copy(demo_run, runs_dir)
    chat = BlockingChat(run_dir)
    try:
        s = ChatSettings(max_new_tokens=12)
        list(chat.ask(QUESTION, ["base", "sft"], s))
        list(chat.ask("And after that?", ["base", "sft"], s, follow_up=True))
        # Cancel as soon as the first token arrives: the answer stops there, kept as cancelled, not judged.
        long = ChatSettings(max_new_tokens=2000, temperature=1.0, top_p=0.95)
        events = chat.ask("Tell me a long story.", ["base", "sft"], long, follow_up=True)
        seen = []
        for ev in events:
            seen.append(ev)
            if ev["ev"] == "text":
                chat.client.cancel()
        answers = {e["model"]: e for e in seen if e["ev"] == "answer"}
        assert answers["base"]["status"] == "cancelled" and answers["base"]["new_tokens"] < 200
        assert "sft" not in answers  # the cancel stopped the whole question
    finally:
        chat.close()
    assert not chat.client.alive
    with RunStore(run_dir / "run.db", readonly=True) as store:
        rows = store.exchanges()[-5:]  # this test's: two questions to two models, then the cancelled one
    first, second = rows[0:2], rows[2:4]
    for a, b in zip(first, second):
        assert a["model"] == b["model"] and b["parent"] == a["id"]
        assert [m["role"] for m in b["history"]] == ["user", "assistant"] and b["history"][0]["content"] == QUESTION
    cancelled = rows[4]
    assert cancelled["status"] == "cancelled" and cancelled["scores"] is None and "cancelled" in cancelled["judge_error"]


def test_bad_input_gets_one_line(demo_run, runs_dir, tmp_path):
    run_dir = _copy(demo_run, runs_dir)
    # A model name that is nothing: one line before any model loads.
    proc = aba("chat", run_dir.name, "--models", "base,nope", "--prompt", "hi")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "model 'nope'" in proc.stderr
    # A damaged adapter: the other models still answer, this one says why in one line.
    (run_dir / "grpo" / "adapter" / "adapter_model.safetensors").write_bytes(b"not a tensor file")
    bad_gguf = tmp_path / "broken.gguf"
    bad_gguf.write_bytes(b"GGUF" + b"\0" * 64)
    proc = aba("chat", run_dir.name, "--models", f"base,grpo,{bad_gguf}", "--prompt", "hi " * 60, "--json",
               "--max-new-tokens", "8", "--context", "40")
    out = json.loads(proc.stdout)
    by = {a["model"]: a for a in out["answers"]}
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert by["base"]["status"] in ("done", "length") and by["base"]["weighted"] is not None
    assert "cut from the left: kept the last 32 of" in by["base"]["note"] and by["base"]["prompt_tokens"] == 32
    assert "damaged adapter" in by["grpo"]["error"] and "\n" not in by["grpo"]["error"]
    from engine.evaluation.llama_check import available

    why = "llama.cpp cannot open it" if available() else "llama-cpp-python is not installed"
    assert why in by[str(bad_gguf)]["error"] and "\n" not in by[str(bad_gguf)]["error"]
    shutil.rmtree(run_dir / "grpo" / "adapter")
    proc = aba("chat", run_dir.name, "--models", "grpo", "--prompt", "hi", "--json")
    err = json.loads(proc.stdout)["answers"][0]["error"]
    assert "no adapter here" in err and "\n" not in err


def test_gguf_through_real_llama_cpp(demo_run, runs_dir, tmp_path):
    pytest.importorskip("llama_cpp")
    from engine.evaluation.gguf import write_gguf

    run_dir = _copy(demo_run, runs_dir)
    gguf = tmp_path / "base.gguf"
    write_gguf(demo_run / "base-model", gguf, "F32")
    proc = aba("chat", run_dir.name, "--models", f"base,{gguf}", "--prompt", QUESTION, "--json", "--max-new-tokens",
               "12", "--no-think")
    assert proc.returncode == 0, proc.stderr[-2000:]
    by = {a["model"]: a for a in json.loads(proc.stdout)["answers"]}
    g = by[str(gguf)]
    assert g["source"] == f"gguf: {gguf}" and g["status"] in ("done", "length") and g["new_tokens"] > 0
    assert set(g["scores"]) == set(DIMENSIONS)
    # The same weights in F32, greedy, the same chat template (carried in the GGUF): llama.cpp says what transformers says.
    assert g["answer"] + g["reasoning"] == by["base"]["answer"] + by["base"]["reasoning"]


async def test_playground_screen_asks_three_models_and_keeps_the_turn(demo_run, runs_dir):
    """Through Pilot: F8, settings, type a question, three answers stream in side by side, each judged; the worker
    ends with the panel; a fresh panel shows the kept turn from the history."""
    from app.app import make_app
    from app.screens.playground import AnswerPane
    from tests.uifixtures import text_of, wait_for

    run_dir = _copy(demo_run, runs_dir)
    app = make_app(run_dir.name, runs_dir)
    async with app.run_test(size=(160, 45)) as pilot:
        await pilot.press("f8")
        screen = app.screen
        await wait_for(pilot, lambda: screen.state == "ready", 120)
        assert screen.models == ["base", "sft", "grpo"]
        await pilot.press("ctrl+o")
        app.screen.query_one("#pg-set-max").value = "20"
        app.screen.query_one("#pg-set-max").focus()
        await pilot.press("enter")
        await wait_for(pilot, lambda: app.screen is screen, 10)
        assert screen.settings.max_new_tokens == 20
        await pilot.press(*[{" ": "space"}.get(c, c) for c in "should i back up first"])
        await pilot.press("enter")
        await wait_for(pilot, lambda: screen.turn is not None and screen.turn.finished, 300)
        await pilot.pause(0.3)
        panes = list(screen.query(AnswerPane))
        assert [p.model for p in panes] == ["base", "sft", "grpo"]
        for pane in panes:
            scores = text_of(pane.query_one(".pg-scores"))
            assert "weighted" in scores and all(s in scores for s in ("ENT", "CAL", "INS")), scores
            assert "tokens" in text_of(pane.query_one(".pg-stats"))
        proc = screen.client.proc
    assert proc.poll() is not None  # quitting the panel ended the worker
    with RunStore(run_dir / "run.db", readonly=True) as store:
        rows = store.exchanges()
    assert [r["model"] for r in rows] == ["base", "sft", "grpo"]
    assert rows[0]["prompt"] == "should i back up first"
    assert all(r["settings"]["max_new_tokens"] == 20 and r["weighted"] is not None for r in rows)
    app = make_app(run_dir.name, runs_dir)
    async with app.run_test(size=(160, 45)) as pilot:
        await pilot.press("f8")
        screen = app.screen
        table = screen.query_one("#pg-history")
        await wait_for(pilot, lambda: table.row_count == 1, 30)
        await pilot.press("ctrl+l", "enter")
        await wait_for(pilot, lambda: len(screen.query(AnswerPane)) == 3, 10)
        await pilot.pause(0.3)
        shown = {p.model: text_of(p.query_one(".pg-scores")) for p in screen.query(AnswerPane)}
        for r in rows:
            assert f"weighted {r['weighted']:.3f}" in shown[r["model"]]
        await pilot.press("ctrl+h")  # the shown turn becomes a held-out prompt
        await wait_for(pilot, lambda: RunStore(run_dir / "run.db", readonly=True).promoted_prompts("heldout"), 10)
