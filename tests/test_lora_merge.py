"""The LoRA merge that fits a 16 GB card: on the CPU, tensor by tensor from the safetensors files, equal to PEFT."""

from __future__ import annotations

import json

import pytest
import torch

from engine.errors import UserError
from engine.models.lora_merge import Unsupported, merge_streaming, read_header

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def _tiny(tmp_path, dtype, **lora):
    """A random Qwen3 with real shapes (GQA, head_dim) saved in `dtype`, and a random (non-zero) LoRA on it."""
    from peft import LoraConfig, get_peft_model
    from transformers import Qwen3Config, Qwen3ForCausalLM

    cfg = Qwen3Config(vocab_size=300, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, head_dim=16, tie_word_embeddings=False)
    torch.manual_seed(0)
    model = Qwen3ForCausalLM(cfg).to(dtype)
    base = tmp_path / "base"
    model.save_pretrained(base, max_shard_size="100KB")  # several shards, like an 8B checkpoint
    peft = get_peft_model(model, LoraConfig(**{"r": 8, "lora_alpha": 16, "target_modules": TARGETS,
                                               "init_lora_weights": False, **lora}))
    peft.save_pretrained(tmp_path / "adapter")
    return base, tmp_path / "adapter"


def _peft_reference(base, adapter, dtype):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    return PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base, dtype=dtype), str(adapter)).merge_and_unload().state_dict()


def _read_all(folder):
    from safetensors.torch import load_file

    out = {}
    for path in sorted(folder.glob("*.safetensors")):
        out.update(load_file(str(path)))
    return out


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("lora", [{}, {"use_rslora": True, "alpha_pattern": {"q_proj": 4}}])
def test_streaming_merge_equals_peft_merge_and_unload(tmp_path, dtype, lora):
    base, adapter = _tiny(tmp_path, dtype, **lora)
    assert len(list(base.glob("*.safetensors"))) > 1
    info = merge_streaming(base, adapter, tmp_path / "merged")
    assert info["merged_tensors"] == 2 * len(TARGETS)
    got, ref = _read_all(tmp_path / "merged"), _peft_reference(base, adapter, dtype)
    assert set(got) == set(ref)
    for key, value in ref.items():
        assert got[key].dtype == value.dtype
        torch.testing.assert_close(got[key], value, rtol=0, atol=0)  # the same arithmetic as PEFT: bit for bit
    before = _read_all(base)
    assert not torch.equal(got["model.layers.0.self_attn.q_proj.weight"], before["model.layers.0.self_attn.q_proj.weight"])
    # Headers (and so every offset) are the base's own; the index and config come along.
    for path in base.glob("*.safetensors"):
        assert read_header(path) == read_header(tmp_path / "merged" / path.name)
    assert json.loads((tmp_path / "merged" / "config.json").read_text()) == json.loads((base / "config.json").read_text())


def test_adapters_streaming_cannot_merge_are_refused_before_writing(tmp_path):
    base, adapter = _tiny(tmp_path, torch.float32, use_dora=True)
    with pytest.raises(Unsupported, match="use_dora"):
        merge_streaming(base, adapter, tmp_path / "merged")
    assert not (tmp_path / "merged").exists()


def test_a_lora_from_another_base_is_a_clear_error(tmp_path):
    base, adapter = _tiny(tmp_path, torch.float32)
    from safetensors.torch import load_file, save_file

    weights = load_file(str(adapter / "adapter_model.safetensors"))
    key = next(k for k in weights if k.endswith("q_proj.lora_B.weight"))
    weights[key] = torch.zeros(weights[key].shape[0] * 2, weights[key].shape[1])
    save_file(weights, str(adapter / "adapter_model.safetensors"))
    with pytest.raises(UserError, match="another base"):
        merge_streaming(base, adapter, tmp_path / "merged")


def test_merge_adapter_dora_goes_through_peft_on_cpu(tmp_path):
    from engine import config
    from engine.models.merging import merge_adapter
    from tests.conftest import DEMO

    base, adapter = _tiny(tmp_path, torch.float32, use_dora=True)
    from engine.models.loading import load_tokenizer

    load_tokenizer("demo:tiny-qwen3").save_pretrained(base)
    logs = []
    out = merge_adapter(config.load(DEMO), str(base), adapter, tmp_path / "merged", logs.append)
    assert "PEFT merge_and_unload on the CPU" in logs[0]
    got, ref = _read_all(out), _peft_reference(base, adapter, torch.float32)
    for key, value in ref.items():
        torch.testing.assert_close(got[key], value)
    assert (out / "tokenizer.json").exists()
