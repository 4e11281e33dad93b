"""OOM recovery that frees: the failed trainer is gone before the next one is built."""

from __future__ import annotations

import gc
import weakref

import torch

from engine import config
from engine.context import StageContext
from engine.store import RunStore
from engine.training.trainer import sft_fallbacks, train_with_fallbacks
from tests.conftest import DEMO


def test_failed_trainer_is_collected_before_the_retry_builds(tmp_path):
    from datasets import Dataset
    from transformers import Qwen3Config, Qwen3ForCausalLM, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    from engine.models.loading import load_tokenizer
    from engine.models.trl_compat import ensure_fused_head

    ensure_fused_head()  # TRL's fused LM head without Triton, as every training stage does on CPU
    tok = load_tokenizer("demo:tiny-qwen3")
    shape = Qwen3Config(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=2, head_dim=8)
    rows = [{"prompt": [{"role": "user", "content": f"question {i}"}],
             "completion": [{"role": "assistant", "content": f"answer {i}"}]} for i in range(8)]

    class OomOnce(TrainerCallback):
        fired = False

        def on_step_begin(self, args, state, control, **kwargs):
            if not OomOnce.fired and state.global_step == 1:
                OomOnce.fired = True
                raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (test)")

    built: list[tuple[weakref.ref, weakref.ref]] = []
    alive_at_build: list[bool] = []

    def build(knobs):
        alive_at_build.append(any(t() is not None or m() is not None for t, m in built))
        args = SFTConfig(output_dir=str(tmp_path / "ckpt"), max_steps=3, report_to="none", use_cpu=True,
                         save_strategy="no", per_device_train_batch_size=knobs["per_device_train_batch_size"],
                         gradient_accumulation_steps=knobs["gradient_accumulation_steps"], max_length=64)
        trainer = SFTTrainer(model=Qwen3ForCausalLM(shape), args=args, train_dataset=Dataset.from_list(rows),
                             processing_class=tok, callbacks=[OomOnce()])
        built.append((weakref.ref(trainer), weakref.ref(trainer.model)))
        return trainer

    cfg = config.load(DEMO)
    with RunStore(tmp_path / "run.db", create=True) as store:
        store.init_run("r", "t", str(DEMO), ["sft"], ["sft"])
        ctx = StageContext(name="sft", run_dir=tmp_path, cfg=cfg, store=store)
        gc.disable()  # collection must come from the recovery itself, not from an automatic pass
        try:
            knobs = {"per_device_train_batch_size": 2, "gradient_accumulation_steps": 1, "max_seq_length": 64}
            trainer = train_with_fallbacks(ctx, build, knobs, sft_fallbacks(), tmp_path / "ckpt")
        finally:
            gc.enable()
        falls = store.events("sft", kind="fallback")
    assert alive_at_build == [False, False], "the failed trainer (or its model) was still alive at the retry"
    assert trainer.state.global_step == 3 and len(falls) == 1
    assert "per_device_train_batch_size 2 -> 1" in falls[0].message
