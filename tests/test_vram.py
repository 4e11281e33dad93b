"""VRAM on the 16 GB path: the worker's monitor outlives torch's import, the estimate models TRL's real batch."""

from __future__ import annotations

import sys
import types

import pytest

from engine.runner import supervisor as sup
from engine.store import RunStore
from engine.training.estimate import Batch, batch_from_args, estimate_vram
from tests.conftest import aba, demo_variant, run_id_of

QWEN3_8B = dict(vocab_size=151936, hidden_size=4096, intermediate_size=12288, num_hidden_layers=36,
                num_attention_heads=32, num_key_value_heads=8, head_dim=128, tie_word_embeddings=False)
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def _q8b():
    from transformers import Qwen3Config

    return Qwen3Config(**QWEN3_8B)


def test_monitor_keeps_beating_through_a_real_training_stage(tmp_path, runs_dir, monkeypatch):
    # Sampling every 10 ms makes the monitor read sys.modules while the stage imports torch: the race that killed it.
    # A fresh worker, as on Windows or a GPU machine (a forked one starts with torch imported: no race to meet).
    monkeypatch.setenv("ABA_ZYGOTE", "0")
    cfg = demo_variant(tmp_path, sft__max_steps=40, gpu__sample_interval_s=0.01)  # ~5 s of steps after the import
    proc = aba("run", str(cfg), "--stages", "sft")
    assert proc.returncode == 0, proc.stderr[-2000:]
    run_dir = sup.resolve_run(run_id_of(proc), runs_dir)
    log = (run_dir / "sft" / "worker.log").read_text()
    assert "Exception in thread" not in log and "partially initialized" not in log, log[-3000:]
    with RunStore(run_dir / "run.db") as store:
        attempt = store.attempts("sft")[-1]
        beat = store._q("SELECT time FROM heartbeats WHERE stage = 'sft'")[0][0]
    # Heartbeats every 2 s until the end: the last one is at most a beat (plus scheduling slack) before the finish.
    assert attempt["ended"] - attempt["started"] > 8, attempt
    assert attempt["ended"] - beat < 4.0, (attempt, beat)


def test_sampler_waits_for_torch_to_finish_importing(monkeypatch):
    from engine.training import vram

    half = types.ModuleType("torch")
    half.__spec__ = types.SimpleNamespace(_initializing=True)  # what importlib sets while torch/__init__ runs
    monkeypatch.setitem(sys.modules, "torch", half)
    assert vram.imported_torch() is None
    assert "vram/torch_peak_mb" not in vram.VramSampler().sample()  # and no AttributeError on torch.cuda
    monkeypatch.delitem(sys.modules, "torch")
    assert vram.imported_torch() is None


@pytest.mark.parametrize(
    ("case", "batch", "lora_r", "low", "high"),
    [
        # The seed's GRPO on a 16 GB RTX 5070 Ti: batch 1 x accumulation 8 (8 completions generated per step),
        # prompt 512 + completion 1024; the seed estimates ~8-13 GB peak.
        ("seed GRPO", Batch(rows=1, prompt_len=512, completion_len=1024, loss_len=1024, generations=8), 16, 8.0, 13.0),
        # Unsloth's Qwen3-8B GRPO QLoRA notebook runs on a free Colab T4 (14.74 GiB usable): max_seq_length 1024,
        # LoRA r=32, num_generations 4 with Unsloth raising per_device_train_batch_size 1 -> 4, accumulation 1.
        ("Unsloth notebook", Batch(rows=4, prompt_len=200, completion_len=824, loss_len=824, generations=4), 32, 8.0,
         14.74),
        # The seed's SFT: batch 2 x 2048 tokens on the same 16 GB card.
        ("seed SFT", Batch(rows=2, prompt_len=2048), 16, 6.0, 15.5),
    ],
)
def test_estimate_against_published_figures(case, batch, lora_r, low, high):
    est = estimate_vram(_q8b(), bits=4, lora_r=lora_r, target_modules=TARGETS, batch=batch, gradient_checkpointing=True)
    assert low <= est.total_gb <= high, (case, est.as_dict())


def test_estimate_terms_follow_the_real_batch():
    q = _q8b()
    base = Batch(rows=1, prompt_len=512, completion_len=1024, loss_len=1024, generations=8)
    est = estimate_vram(q, bits=4, lora_r=16, target_modules=TARGETS, batch=base, gradient_checkpointing=True)
    # KV cache: every completion generated at once, prompt + completion tokens, K and V, bf16.
    assert est.kv_cache_gb == pytest.approx(8 * 1536 * 2 * 36 * 8 * 128 * 2 / 1024**3)
    # Logits: rows x completion x vocab, fp32, logits and gradient.
    assert est.logits_gb == pytest.approx(1024 * 151936 * 4 * 2 / 1024**3)
    fewer = estimate_vram(q, bits=4, lora_r=16, target_modules=TARGETS, gradient_checkpointing=True,
                          batch=Batch(rows=1, prompt_len=512, completion_len=1024, loss_len=1024, generations=4))
    assert fewer.kv_cache_gb == pytest.approx(est.kv_cache_gb / 2) and fewer.total_gb < est.total_gb
    # Colocated vLLM: its own share of the card instead of transformers' KV cache.
    trl = estimate_vram(q, bits=4, lora_r=16, target_modules=TARGETS, batch=base, gradient_checkpointing=True,
                        vllm="trl", vllm_share=0.3, card_gb=16.0)
    assert trl.kv_cache_gb == 0 and trl.vllm_gb == pytest.approx(4.8)
    # Unsloth's fast_inference shares the training weights: only the share beyond them is added.
    uns = estimate_vram(q, bits=4, lora_r=16, target_modules=TARGETS, batch=base, gradient_checkpointing=True,
                        vllm="unsloth", vllm_share=0.6, card_gb=16.0)
    assert uns.vllm_gb == pytest.approx(0.6 * 16 - est.weights_gb)


def test_batch_is_read_from_the_built_grpo_args(tmp_path):
    from trl import GRPOConfig

    # Unsloth's patched GRPOConfig may raise per_device_train_batch_size to num_generations: whatever the args say
    # after construction is what the estimate uses.
    args = GRPOConfig(output_dir=str(tmp_path), per_device_train_batch_size=4, gradient_accumulation_steps=2,
                      num_generations=4, max_completion_length=1024, use_cpu=True, report_to="none")
    b = batch_from_args(args, prompt_len=512)
    assert (b.rows, b.seq_len, b.loss_len, b.generations) == (4, 1536, 1024, 8)
