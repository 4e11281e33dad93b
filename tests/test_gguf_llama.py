"""The GGUF as llama.cpp reads it: llama.cpp's general.* keys, Qwen2 pre-tokenization, a crash kept out of the
stage, and (where llama-cpp-python is installed) the same greedy tokens as transformers."""

from __future__ import annotations

import json
import os

import pytest

from engine.evaluation import llama_check
from engine.models import loading as models

SAMPLES = [
    "In 2024, 17 of 365 days were cold: -3.5°C!",
    "I'm sure they'll say it's fine... isn't it?\n\n  Next   line\r\nend",
    "Café naïve coöperate — ÅNGSTRÖM 12345678",
    "<think>\nweigh it\n</think>\n\nanswer: 42",
]


def test_demo_tokenizer_pretokenizes_exactly_as_qwen2():
    from transformers.models.qwen2.tokenization_qwen2 import Qwen2Tokenizer

    ours = models.load_tokenizer("demo:tiny-qwen3").backend_tokenizer
    qwen = Qwen2Tokenizer().backend_tokenizer  # transformers' Qwen2/Qwen3 pipeline: NFC, Qwen2's regex, byte-level
    for text in SAMPLES:
        normal = ours.normalizer.normalize_str(text)
        assert normal == qwen.normalizer.normalize_str(text)
        assert ours.pre_tokenizer.pre_tokenize_str(normal) == qwen.pre_tokenizer.pre_tokenize_str(normal), text
    # Digits one by one, as Qwen and llama.cpp's `qwen2` pre-tokenizer split them (GPT-2 kept " 2024" whole).
    assert [p for p, _ in ours.pre_tokenizer.pre_tokenize_str("year 2024")] == ["year", "Ġ", "2", "0", "2", "4"]


@pytest.fixture(scope="module")
def demo_base(tmp_path_factory, _model_cache):
    # Module-scoped, so it runs before the per-test fixture that points ABA_CACHE_DIR at the session's model cache.
    old = os.environ.get("ABA_CACHE_DIR")
    os.environ["ABA_CACHE_DIR"] = str(_model_cache)
    try:
        return models.materialize_demo_base("demo:tiny-qwen3", 3407, tmp_path_factory.mktemp("gguf") / "run" / "base")
    finally:
        if old is None:
            os.environ.pop("ABA_CACHE_DIR", None)
        else:
            os.environ["ABA_CACHE_DIR"] = old


def test_gguf_general_keys_match_llama_cpp_converter(demo_base, tmp_path):
    import gguf
    from safetensors import safe_open

    from engine.evaluation.gguf import write_gguf

    out = tmp_path / "m.gguf"
    write_gguf(demo_base, out, "Q8_0")
    fields = gguf.GGUFReader(str(out)).fields

    def value(key):
        f = fields[key]
        part = f.parts[f.data[0]]
        return bytes(part).decode() if f.types[0] == gguf.GGUFValueType.STRING else int(part[0])

    cfg = json.loads((demo_base / "config.json").read_text())
    params = 0
    for path in demo_base.glob("*.safetensors"):
        with safe_open(str(path), framework="np") as f:
            for name in f.keys():
                if not (name == "lm_head.weight" and cfg.get("tie_word_embeddings")):
                    shape = f.get_slice(name).get_shape()
                    n = 1
                    for d in shape:
                        n *= d
                    params += n
    assert value("general.type") == "model"
    assert value("general.quantization_version") == gguf.GGML_QUANT_VERSION == 2
    assert value("general.size_label") == gguf.size_label(params, params, 0, 0)
    assert value("general.file_type") == gguf.LlamaFileType.MOSTLY_Q8_0
    assert value("tokenizer.ggml.pre") == "qwen2"


def test_a_llama_cpp_crash_fails_the_check_not_the_caller():
    got = llama_check.run("generate", {"path": "x.gguf", "ids": [1], "n_tokens": 1}, module="tests.stages.llama_crash")
    assert "crashed" in got["error"] and "signal" in got["error"]


@pytest.mark.skipif(not llama_check.available(),
                    reason="llama-cpp-python is not installed (pip install '.[llama]'; it compiles llama.cpp, ~7 min)")
@pytest.mark.parametrize("qtype", ["F16", "Q8_0"])
def test_llama_cpp_greedy_tokens_match_transformers(demo_base, tmp_path, qtype):
    from engine.evaluation.gguf import compare_with_llama_cpp, write_gguf

    out = tmp_path / f"m-{qtype}.gguf"
    write_gguf(demo_base, out, qtype)
    same = compare_with_llama_cpp(out, demo_base, "Is it wise to trust a confident answer?", n_tokens=20)
    assert "error" not in same, same
    assert same["compared"] == 20 and same["matching_prefix"] == 20, same
    tok = models.load_tokenizer("demo:tiny-qwen3")
    for text in SAMPLES:  # llama.cpp's own tokenizer (qwen2 pre-tokenizer) agrees with transformers
        got = llama_check.run("tokenize", {"path": str(out), "text": text})
        assert got["ids"] == tok(text, add_special_tokens=False)["input_ids"], text


@pytest.mark.skipif(not llama_check.available(), reason="llama-cpp-python is not installed")
def test_a_llama_architecture_model_exports_and_llama_cpp_agrees(tmp_path):
    """The export writes the `llama` architecture too (seed 003's Llama-2-7B-Chat, Dolphin 3.0's Llama 3.1): a tiny
    random Llama with the demo tokenizer, its Q/K rows permuted as llama.cpp's converter does; llama.cpp's greedy
    tokens on the GGUF equal transformers' on the folder."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from engine.evaluation.gguf import compare_with_llama_cpp, verify_gguf, write_gguf

    tok = models.load_tokenizer("demo:tiny-qwen3")
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512, rms_norm_eps=1e-6,
                      bos_token_id=None, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                      tie_word_embeddings=False)
    torch.manual_seed(0)
    folder = tmp_path / "tiny-llama"
    LlamaForCausalLM(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)
    out = tmp_path / "llama.gguf"
    write_gguf(folder, out, "F32")
    assert verify_gguf(out, folder)["architecture"] == "llama"
    same = compare_with_llama_cpp(out, folder, "Is it wise to trust a confident answer?", n_tokens=12)
    assert "error" not in same, same
    assert same["matching_prefix"] == same["compared"] > 0, same
