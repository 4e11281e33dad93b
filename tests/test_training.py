"""Training stages on the tiny model: chat format, SFT, GRPO reward components, OOM fallback, cancel and resume."""

from __future__ import annotations

import json
import time

import pytest

from engine import config
from engine.models import loading as models
from engine.runner import supervisor as sup
from engine.dims import DIMENSIONS
from engine.store import RunStore
from tests.conftest import DEMO, aba, demo_variant, run_id_of


def _metrics(run_id: str, stage: str) -> list[dict]:
    proc = aba("metrics", run_id, "--stage", stage, "--json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_chat_format_think_survives_and_loss_on_assistant_only(tmp_path):
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from engine.tracefile import assistant_content

    base = models.materialize_demo_base("demo:tiny-qwen3", 3407, tmp_path / "run" / "base")
    tok = models.load_tokenizer("demo:tiny-qwen3")
    turns = [
        {"role": "user", "content": "first question"},
        {"role": "assistant", "content": "first answer"},
        {"role": "user", "content": "second question"},
    ]
    row = {"prompt": turns, "completion": [{"role": "assistant", "content": assistant_content("my reasoning", "final answer")}]}
    from transformers import AutoModelForCausalLM

    args = SFTConfig(output_dir=str(tmp_path / "o"), completion_only_loss=True, report_to="none", use_cpu=True, max_length=512)
    trainer = SFTTrainer(model=AutoModelForCausalLM.from_pretrained(base), args=args,
                         train_dataset=Dataset.from_list([row]), processing_class=tok)
    ex = trainer.train_dataset[0]
    ids, labels = ex["input_ids"], ex["labels"]
    full = tok.decode(ids)
    target = tok.decode([t for t in labels if t != -100])
    # Every turn of the prompt is rendered in Qwen3's format.
    for text in ("first question", "first answer", "second question"):
        assert text in full
    assert full.startswith("<|im_start|>user\n")
    # The reasoning survives, in its think block, in the training target of the final assistant turn.
    assert target.startswith("<think>\nmy reasoning\n</think>\n\nfinal answer<|im_end|>")
    # Loss is on that assistant turn only: no prompt text in the target.
    assert "question" not in target and "first answer" not in target
    batch = trainer.data_collator([ex])
    kept = tok.decode([t for t in batch["labels"][0].tolist() if t != -100])
    assert kept == target


def test_template_is_qwen3_not_llama():
    tok = models.load_tokenizer("demo:tiny-qwen3")
    text = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    assert text == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    assert "[INST]" not in text and "<|begin_of_text|>" not in text


def test_torch_fused_head_matches_log_softmax():
    import torch

    from engine.models.trl_compat import TorchChunkedLogProb

    torch.manual_seed(0)
    h, w, b = torch.randn(7, 16, requires_grad=True), torch.randn(50, 16), torch.randn(50)
    t = torch.randint(0, 50, (7,))
    lp, ent, _, _, top1 = TorchChunkedLogProb.apply(h, w, b, t, 0.7, 8, None, 1.0, ("entropy", "is_top1"))
    ref = torch.log_softmax((h @ w.T + b) / 0.7, -1)
    assert torch.allclose(lp, ref.gather(-1, t[:, None]).squeeze(-1), atol=1e-5)
    assert torch.allclose(ent, -(ref.exp() * ref).sum(-1), atol=1e-5)
    lp.sum().backward()
    assert h.grad is not None and torch.isfinite(h.grad).all()


def test_backend_choice_on_cpu():
    cfg = config.load(DEMO)
    b = models.pick_backend(cfg)
    assert b.name == "standard" and "no CUDA device" in b.reason and not b.quantized
    cfg.model.backend = "unsloth"  # not picked here: that imports unsloth (tests/test_stack_cpu.py runs it in workers)
    assert models.pick_backend(cfg, force_standard=True).name == "standard"


def test_vram_estimate_for_the_seeds_qwen3_8b():
    from transformers import Qwen3Config

    from engine.training.vram import Batch, estimate_vram

    q8b = Qwen3Config(vocab_size=151936, hidden_size=4096, intermediate_size=12288, num_hidden_layers=36,
                      num_attention_heads=32, num_key_value_heads=8, head_dim=128, tie_word_embeddings=False)
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    grpo = estimate_vram(q8b, bits=4, lora_r=16, target_modules=targets, gradient_checkpointing=True,
                         batch=Batch(rows=1, prompt_len=512, completion_len=1024, loss_len=1024, generations=8))
    # The seed estimates 8-13 GB for this GRPO setup on a 16 GB card (tests/test_vram.py has the full table).
    assert 8.0 <= grpo.total_gb <= 13.0, grpo.as_dict()


def test_demo_sft_then_grpo_reward_components(tmp_path):
    cfg = demo_variant(tmp_path, grpo__max_steps=8, grpo__sample_every=2)
    proc = aba("run", str(cfg), "--stages", "sft,grpo")
    assert proc.returncode == 0, proc.stderr[-2000:]
    run_id = run_id_of(proc)
    rows = _metrics(run_id, "grpo")
    keys = {r["key"] for r in rows}
    for key in ("loss", "reward", "kl", "learning_rate", "grad_norm", "completions/mean_length", "completions/clipped_ratio"):
        assert key in keys, key
    for dim in DIMENSIONS:
        assert f"rewards/{dim}/mean" in keys and f"rewards/{dim}/std" in keys
    # TRL issue 5352: the logged total must equal the weighted sum of the logged components.
    w = config.load(cfg).grpo.reward_weights
    by_step: dict[int, dict[str, float]] = {}
    for r in rows:
        by_step.setdefault(r["step"], {})[r["key"]] = r["value"]
    checked = 0
    for step, vals in by_step.items():
        if "reward" in vals and vals["reward"] is not None:
            total = sum(w[d] * vals[f"rewards/{d}/mean"] for d in DIMENSIONS)
            assert vals["reward"] == pytest.approx(total, abs=1e-5)
            checked += 1
    assert checked == 8
    sft_keys = {r["key"] for r in _metrics(run_id, "sft")}
    assert {"loss", "learning_rate", "grad_norm", "tokens_per_s", "epoch"} <= sft_keys
    run_dir = sup.resolve_run(run_id, sup.runs_dir())
    with RunStore(run_dir / "run.db") as store:
        samples = store.samples("grpo")
        assert samples and set(samples[0]["scores"]) == set(DIMENSIONS)
        assert any(e.kind == "estimate" for e in store.events("grpo"))
        assert any("merged into the base" in log.message for log in store.logs_since(0, "grpo"))
    assert (run_dir / "grpo" / "adapter" / "adapter_config.json").exists()


def test_oom_fallback_is_visible_and_recovers(tmp_path):
    cfg = demo_variant(tmp_path, grpo__max_steps=5, run__checkpoint_steps=2)
    proc = aba("run", str(cfg), "--stages", "grpo", env={"ABA_FAULT": "oom@grpo:3"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    run_id = run_id_of(proc)
    status = json.loads(aba("status", run_id, "--json").stdout)
    falls = status["fallbacks"]
    assert len(falls) == 1 and "num_generations 4 -> 2" in falls[0]["message"]
    human = aba("status", run_id).stdout
    assert "fallback in grpo" in human
    run_dir = sup.resolve_run(run_id, sup.runs_dir())
    with RunStore(run_dir / "run.db") as store:
        logs = [log.message for log in store.logs_since(0, "grpo")]
    assert any("resuming from checkpoint-2" in m for m in logs)


def test_oom_fallbacks_exhausted_fail_with_reason(tmp_path):
    # Demo completions are 48 tokens, so after 4 -> 2 generations no fallback is left.
    cfg = demo_variant(tmp_path, grpo__max_steps=6, run__checkpoint_steps=2)
    proc = aba("run", str(cfg), "--stages", "grpo", env={"ABA_FAULT": "oom@grpo:2,oom@grpo:4"})
    assert proc.returncode == 1
    assert "out of GPU memory after 1 fallback(s)" in proc.stderr


def test_cancel_mid_grpo_then_resume_same_global_step(tmp_path, runs_dir):
    cfg = demo_variant(tmp_path, grpo__max_steps=30, run__checkpoint_steps=100)
    run_dir = sup.start(cfg, runs_dir, ["grpo"])
    with RunStore(run_dir / "run.db") as store:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            steps = [r.step for r in store.metrics_since(0, "grpo") if r.key == "loss"]
            if steps and max(steps) >= 4:
                break
            time.sleep(0.2)
    sup.cancel(run_dir, grace_s=60)
    with RunStore(run_dir / "run.db") as store:
        row = store.stage("grpo")
        assert row.status == "cancelled", row.reason
        stopped_at = max(r.step for r in store.metrics_since(0, "grpo") if r.key == "loss")
    ckpts = sorted((run_dir / "grpo" / "checkpoints").glob("checkpoint-*"))
    assert ckpts, "cancel must leave a checkpoint"
    ckpt_step = int(ckpts[-1].name.split("-")[1])
    assert 4 <= ckpt_step <= stopped_at + 1
    sup.wait(run_dir, timeout_s=30)
    sup.resume(run_dir)
    rows = sup.wait(run_dir, timeout_s=900)
    grpo = next(r for r in rows if r.name == "grpo")
    assert grpo.status == "succeeded" and grpo.attempts == 2
    with RunStore(run_dir / "run.db") as store:
        logs = [log.message for log in store.logs_since(0, "grpo")]
        steps = [r.step for r in store.metrics_since(0, "grpo") if r.key == "loss"]
    assert any(f"resuming from checkpoint-{ckpt_step}" in m for m in logs)
    # Resume continues at the global step after the checkpoint.
    second = steps[steps.index(stopped_at) + 1 :] if stopped_at in steps else steps
    assert second[0] == ckpt_step + 1 and steps[-1] == 30


def test_two_cpu_processes_through_accelerate(tmp_path, runs_dir):
    """train.num_processes = 2: the worker relaunches the stage through `accelerate launch`; ranks talk over gloo."""
    cfg = demo_variant(tmp_path, train__num_processes=2, sft__max_steps=2, grpo__max_steps=2)
    proc = aba("run", str(cfg), "--stages", "sft,grpo", env={"OMP_NUM_THREADS": "1"})
    run_id = run_id_of(proc)
    run_dir = sup.resolve_run(run_id, runs_dir)
    logs = {s: (run_dir / s / "worker.log").read_text() if (run_dir / s / "worker.log").exists() else "" for s in ("sft", "grpo")}
    assert proc.returncode == 0, proc.stderr[-2000:] + "\n--- sft log ---\n" + logs["sft"][-3000:] + "\n--- grpo log ---\n" + logs["grpo"][-3000:]
    log = logs["grpo"]
    assert "[grpo] rank 1 of 2 started" in log, log[-3000:]  # a second rank really ran
    with RunStore(run_dir / "run.db") as store:
        events = [e.message for e in store.events("grpo")]
        steps = [r.step for r in store.metrics_since(0, "grpo") if r.key == "loss"]
    assert any("launching 2 processes through accelerate launch (gloo on CPU)" in m for m in events)
    assert steps == [1, 2]  # rank 0 alone reports: each step once
    assert (run_dir / "grpo" / "adapter" / "adapter_config.json").exists()
