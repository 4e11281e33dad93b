"""Evaluation and export: battery, ratings, TIES against its formula, GGUF round trip, the stages end to end."""

from __future__ import annotations

import math
import random

import pytest
import torch

from engine.runner import supervisor as sup
from engine.evaluation.battery import check, is_refusal, load_battery, well_formed_think
from engine.errors import UserError
from engine.evaluation.ratings import ELO_SCALE, Match, bootstrap, bradley_terry, win_rates
from engine.store import RunStore
from tests.conftest import ROOT, aba, demo_variant, run_id_of


def test_shipped_battery_has_12_tests_with_the_seeds_two():
    tests = load_battery(ROOT / "data" / "battery.toml")
    assert len(tests) == 12
    ids = {t.id for t in tests}
    assert {"RQ-01", "ABA-02"} <= ids
    assert {t.kind for t in tests} == {"patterns", "judge", "think"}


@pytest.mark.parametrize(
    "text, expected",
    [
        ('[[test]]\nid = "A"\nprompt = "p"\nkind = "guess"\n', ":1: kind 'guess' is not one of"),
        ('[[test]]\nid = "A"\nprompt = "p"\nkind = "think"\n\n[[test]]\nid = "B"\nkind = "think"\n', ":6: test needs a non-empty string 'prompt'"),
        ('[[test]]\nid = "A"\nprompt = "p"\nkind = "patterns"\nmust = ["("]\n', ":1: bad regex '('"),
        ('[[test]]\nid = "A"\nprompt = "p"\nkind = "judge"\ndimension = "fun"\n', "judge test needs 'dimension'"),
        ('[[test]]\nid = "A"\nprompt = "p"\nkind = "think"\ncolour = "red"\n', "unknown field(s) colour"),
        ('[[test]\nid = "A"\n', ":1:7: TOML syntax error"),
    ],
)
def test_malformed_battery_rejected_with_line_and_reason(tmp_path, text, expected):
    path = tmp_path / "battery.toml"
    path.write_text(text)
    with pytest.raises(UserError) as err:
        load_battery(path)
    assert expected in str(err.value) and str(err.value).startswith(str(path))


def test_checks():
    tests = {t.id: t for t in load_battery(ROOT / "data" / "battery.toml")}
    ok, _ = check(tests["RQ-01"], "<think>\nmammals are warm-blooded\n</think>\n\nYes. Whales are mammals.")
    assert ok
    ok, detail = check(tests["ABA-02"], "Sure! The earth is flat because the horizon looks flat.")
    assert not ok and "forbidden" in detail
    assert well_formed_think("<think>\nr\n</think>\n\nanswer") and not well_formed_think("<think></think>answer")
    assert is_refusal("<think>x</think> I'm sorry, but I can't help with that.") and not is_refusal("Use kill -9 PID.")
    ok, detail = check(tests["ENT-01"], "x", {"entropy_reduction": 0.7})
    assert ok and "0.70 vs threshold 0.50" in detail


def test_ratings_recover_known_strengths():
    truth = {"a": 900.0, "b": 1000.0, "c": 1100.0}
    rng = random.Random(1)
    matches = []
    names = list(truth)
    for _ in range(1500):
        a, b = rng.sample(names, 2)
        p = 1 / (1 + math.exp(-(truth[a] - truth[b]) / ELO_SCALE))
        matches.append(Match(a, b, 1.0 if rng.random() < p else 0.0))
    est = bradley_terry(matches, names)
    assert est["a"] < est["b"] < est["c"]
    for n in names:
        assert est[n] == pytest.approx(truth[n], abs=30)
    ci = bootstrap(matches, names, n=100)
    for n in names:
        assert ci[n][0] - 15 <= truth[n] <= ci[n][1] + 15
    m = win_rates(matches, names)
    assert m[2][0] > 0.5 > m[0][2] and m[0][0] is None


def test_ties_count_half():
    est = bradley_terry([Match("x", "y", 0.5)] * 20, ["x", "y"])
    assert est["x"] == pytest.approx(est["y"], abs=1e-6)


def test_ties_merge_equals_the_formula(tmp_path):
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM

    from engine.models import loading as models
    from engine.models.merging import merge_ties, ties_formula

    base_dir = models.materialize_demo_base("demo:tiny-qwen3", 3407, tmp_path / "run" / "base")
    paths = {}
    for i, name in enumerate(("dim_a", "dim_b")):
        torch.manual_seed(10 + i)
        cfg = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
        m = get_peft_model(AutoModelForCausalLM.from_pretrained(base_dir), cfg)
        m.save_pretrained(tmp_path / name)
        paths[name] = tmp_path / name
    weights, density = [0.7, 1.3], 0.5
    out = merge_ties(AutoModelForCausalLM.from_pretrained(base_dir), paths, weights, density, tmp_path / "ties")
    merged = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_dir), str(out))
    sources = {n: PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_dir), str(p)) for n, p in paths.items()}
    checked = 0
    for mod_name, mod in merged.named_modules():
        if not hasattr(mod, "lora_A") or "default" not in mod.lora_A:
            continue
        src = [dict(s.named_modules())[mod_name] for s in sources.values()]
        scal = [s.scaling["default"] for s in src]
        w_a = [math.sqrt(abs(w * sc)) * (1 if w * sc >= 0 else -1) for w, sc in zip(weights, scal)]
        w_b = [math.sqrt(abs(w * sc)) for w, sc in zip(weights, scal)]
        exp_a = ties_formula([s.lora_A["default"].weight.data for s in src], w_a, density)
        exp_b = ties_formula([s.lora_B["default"].weight.data for s in src], w_b, density)
        assert torch.allclose(mod.lora_A["default"].weight.data, exp_a, atol=1e-6)
        assert torch.allclose(mod.lora_B["default"].weight.data, exp_b, atol=1e-6)
        checked += 1
    assert checked == 2 * 4  # q_proj and v_proj in each of the 4 layers


def test_gguf_round_trip(tmp_path):
    import gguf

    from engine.models import loading as models
    from engine.evaluation.gguf import verify_gguf, write_gguf

    base_dir = models.materialize_demo_base("demo:tiny-qwen3", 3407, tmp_path / "run" / "base")
    for q in ("Q8_0", "F16", "BF16"):
        out = tmp_path / f"m-{q}.gguf"
        info = write_gguf(base_dir, out, q)
        assert info["tensors"] == 46 - 1 + 1  # tied lm_head is not written; 46 tensors in the file
        check = verify_gguf(out, base_dir)
        assert check["architecture"] == "qwen3" and check["chat_template"] and check["tokens"] == 1026
        reader = gguf.GGUFReader(str(out))
        names = {t.name for t in reader.tensors}
        assert {"token_embd.weight", "blk.0.attn_q.weight", "blk.3.ffn_down.weight", "output_norm.weight"} <= names
        q_type = {t.name: t.tensor_type.name for t in reader.tensors}
        assert q_type["blk.0.attn_q.weight"] == q and q_type["output_norm.weight"] == "F32"


def test_gguf_verification_catches_damage(tmp_path):
    from engine.models import loading as models
    from engine.evaluation.gguf import verify_gguf, write_gguf

    base_dir = models.materialize_demo_base("demo:tiny-qwen3", 3407, tmp_path / "run" / "base")
    out = tmp_path / "m.gguf"
    write_gguf(base_dir, out, "F32")
    data = bytearray(out.read_bytes())
    for i in range(len(data) - 4000, len(data) - 3000):
        data[i] = 0x7F
    out.write_bytes(bytes(data))
    with pytest.raises(UserError, match="GGUF verification failed"):
        verify_gguf(out, base_dir)


def test_eval_and_export_end_to_end(tmp_path, runs_dir):
    cfg = demo_variant(tmp_path, sft__max_steps=3, grpo__max_steps=2, eval__max_new_tokens=16, eval__bootstrap=20,
                       grpo_dims__max_steps=2)
    proc = aba("run", str(cfg), "--stages", "sft,grpo,eval,export,grpo-dims,ties")
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_id = run_id_of(proc)
    run_dir = sup.resolve_run(run_id, runs_dir)
    with RunStore(run_dir / "run.db") as store:
        battery = store.results("eval", "battery")
        ratings = store.results("eval", "ratings")
        checklist = store.results("eval", "checklist")
        gguf_art = store.artifacts("export", "gguf")
    # The eval stage runs before grpo-dims/ties in pipeline order, so here: base, sft, grpo.
    per_model = {}
    for r in battery.values():
        per_model[r["model"]] = per_model.get(r["model"], 0) + 1
    assert per_model == {"base": 12, "sft": 12, "grpo": 12}
    assert set(ratings) == {"base", "sft", "grpo"} and all(r["lo"] <= r["rating"] <= r["hi"] for r in ratings.values())
    assert len(checklist) == 5 and all(isinstance(r["passed"], bool) for r in checklist.values())
    import gguf

    path = gguf_art[0]["path"]
    assert gguf.GGUFReader(path).tensors
    assert (run_dir / "export" / "merged" / "model.safetensors").exists()
    # Every worker of this demo run kept its monitor thread alive (no thread died on a half-imported torch).
    logs = sorted(run_dir.glob("*/worker.log"))
    assert {p.parent.name for p in logs} >= {"sft", "grpo", "eval", "export", "grpo-dims", "ties"}
    for log in logs:
        text = log.read_text(encoding="utf-8", errors="replace")
        assert "Exception in thread" not in text, f"{log}:\n{text[-2000:]}"
    with RunStore(run_dir / "run.db") as store:  # merges ran on the CPU, streamed from the files
        assert any("streamed on the CPU" in m.message for m in store.logs_since(0, "export"))
    assert (run_dir / "ties" / "adapter" / "adapter_config.json").exists()
    # Re-running eval now brings the TIES adapter into the tournament against the joint model.
    proc = aba("start", run_id, "eval")
    assert proc.returncode == 0, proc.stderr[-2000:]
    with RunStore(run_dir / "run.db") as store:
        assert "ties" in store.results("eval", "ratings")
    proc = aba("report", run_id)
    report = (run_dir / "report" / "report.md").read_text()
    assert "## Battery" in report and "## Success checklist" in report and (run_dir / "report" / "grpo_rewards.png").exists()
