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


def _tiny_llama(folder, tok, seed: int = 0, **config):
    """A tiny random Llama saved with `tok`; weights large enough (initializer_range 0.2) that attention is sharp and
    positions, so RoPE, move the logits."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(**{"vocab_size": len(tok), "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
                         "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 512,
                         "rms_norm_eps": 1e-6, "tie_word_embeddings": False, "initializer_range": 0.2, **config})
    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg).eval()
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return model


# Llama 3.1's own settings with a short original context, so that at a 40-token prompt most of a 16-wide head's
# wavelengths are scaled (> 64) or smoothed (16..64), and a large factor.
LLAMA3_ROPE = {"rope_type": "llama3", "factor": 16.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 64}


def test_llama31_rope_factors_are_transformers_scaling():
    """Llama-3.1-8B's own config.json (the Hub's layout: `rope_scaling` beside `rope_theta`): the `rope_freqs` divisors
    are exactly how much transformers' llama3 RoPE lowers each frequency."""
    import numpy as np
    import torch
    from transformers import LlamaConfig
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    from engine.evaluation.gguf import _llama3_rope_factors, _rope_parameters

    hub = {"hidden_size": 4096, "num_attention_heads": 32, "max_position_embeddings": 131072, "rope_theta": 500000.0,
           "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                            "original_max_position_embeddings": 8192, "rope_type": "llama3"}}
    scaled, _ = ROPE_INIT_FUNCTIONS["llama3"](LlamaConfig(**hub), "cpu")
    plain = 1.0 / 500000.0 ** (torch.arange(0, 128, 2, dtype=torch.float) / 128)
    ours = _llama3_rope_factors(_rope_parameters(hub), hub, 128)
    assert np.allclose(ours, (plain / scaled).numpy(), rtol=1e-5)
    assert ours[0] == 1.0 and ours[-1] == 8.0 and 1.0 < ours[32] < 8.0  # kept, scaled and smoothed bands


@pytest.mark.skipif(not llama_check.available(), reason="llama-cpp-python is not installed")
@pytest.mark.parametrize("rope", [LLAMA3_ROPE, {"rope_type": "linear", "factor": 4.0},
                                  {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 128}],
                         ids=lambda r: r["rope_type"])
def test_llama_rope_scaling_reaches_llama_cpp(tmp_path, rope):
    """Dolphin 3.0 / Llama 3.1's `llama3` RoPE scaling goes into the GGUF as llama.cpp's `rope_freqs` tensor (linear
    and YaRN as metadata): llama.cpp's logits at every position equal transformers', and are far from what the same
    weights give without the scaling, which is what llama.cpp would compute if the scaling were dropped."""
    import gguf
    import numpy as np
    import torch
    from transformers import LlamaForCausalLM

    from engine.evaluation.gguf import write_gguf

    tok = models.load_tokenizer("demo:tiny-qwen3")
    folder = tmp_path / "llama"
    model = _tiny_llama(folder, tok, rope_scaling=rope, bos_token_id=None, eos_token_id=tok.eos_token_id,
                        pad_token_id=tok.pad_token_id)
    unscaled = LlamaForCausalLM(type(model.config)(**{**model.config.to_dict(), "rope_parameters": None})).eval()
    unscaled.load_state_dict(model.state_dict())
    ids = tok("Is it wise to trust a confident answer? Weigh the evidence, then the source, then your own bias.",
              add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        want = model(torch.tensor([ids])).logits[0].numpy()
        plain = unscaled(torch.tensor([ids])).logits[0].numpy()
    out = tmp_path / "llama.gguf"
    write_gguf(folder, out, "F32")
    names = {t.name for t in gguf.GGUFReader(str(out)).tensors}
    assert ("rope_freqs.weight" in names) == (rope["rope_type"] == "llama3")
    got = llama_check.run("logits", {"path": str(out), "ids": ids})
    assert "error" not in got, got
    got = np.array(got["logits"])
    scale = float(np.abs(want).max())
    assert np.abs(got - want).max() / scale < 1e-2
    assert np.abs(plain - want).max() / scale > 0.3  # the scaling matters at these positions...
    assert np.abs(got - plain).max() / scale > 0.3  # ...and llama.cpp did not run without it
    assert (got.argmax(-1) == want.argmax(-1)).all()


@pytest.mark.parametrize("rope", [{"rope_type": "dynamic", "factor": 4.0},
                                  {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 128,
                                   "attention_factor": 0.8}], ids=lambda r: r["rope_type"])
def test_rope_scaling_llama_cpp_cannot_run_is_one_line(tmp_path, rope):
    from engine.errors import UserError
    from engine.evaluation.gguf import write_gguf

    tok = models.load_tokenizer("demo:tiny-qwen3")
    _tiny_llama(tmp_path / "llama", tok, rope_scaling=rope, bos_token_id=None)
    with pytest.raises(UserError) as err:
        write_gguf(tmp_path / "llama", tmp_path / "llama.gguf", "F32")
    assert "\n" not in str(err.value) and rope["rope_type"].lower() in str(err.value).lower()
    assert not (tmp_path / "llama.gguf").exists()


def _llama2_style_tokenizer(folder):
    """A tiny Llama 2-style SentencePiece model trained offline on the prompts in data/: BPE with `<0xNN>` byte
    fallback, split digits, a dummy prefix and whitespace kept as Llama 2's own, in a folder with tokenizer.model only
    (as on the Hub before tokenizer.json)."""
    import io
    import json as _json
    from pathlib import Path

    import sentencepiece as spm

    root = Path(__file__).resolve().parent.parent / "data"
    lines: list[str] = []

    def strings(o):
        if isinstance(o, str):
            lines.append(o)
        for v in (o.values() if isinstance(o, dict) else o if isinstance(o, list) else ()):
            strings(v)

    for path in sorted((root / "prompts").glob("*.jsonl")) + [root / "demo" / "traces.jsonl"]:
        for line in path.read_text(encoding="utf-8").splitlines():
            strings(_json.loads(line))
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(lines), model_writer=model, model_type="bpe", vocab_size=600,
                                   byte_fallback=True, split_digits=True, add_dummy_prefix=True,
                                   remove_extra_whitespaces=False, normalization_rule_name="identity",
                                   allow_whitespace_only_pieces=True, unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
                                   character_coverage=1.0, minloglevel=2, num_threads=1)
    folder.mkdir(parents=True)
    (folder / "tokenizer.model").write_bytes(model.getvalue())
    (folder / "tokenizer_config.json").write_text(_json.dumps(
        {"tokenizer_class": "LlamaTokenizer", "add_bos_token": True, "bos_token": "<s>", "eos_token": "</s>",
         "unk_token": "<unk>"}))
    return lines


@pytest.mark.skipif(not llama_check.available(), reason="llama-cpp-python is not installed")
def test_a_llama2_sentencepiece_tokenizer_exports_and_llama_cpp_tokenizes_alike(tmp_path):
    """Seed 003's Llama-2-7B-Chat: a SentencePiece-style vocabulary goes in as llama.cpp's `llama` tokenizer (scores,
    byte tokens, add-BOS), from the tokenizer.json transformers saves into the merged model and from a Hub-style
    folder with tokenizer.model only. llama.cpp splits text (digits, non-ASCII through byte fallback, whitespace runs,
    held-out prompts) into transformers' ids, and its greedy tokens are transformers'."""
    import shutil

    import gguf
    from transformers import AutoTokenizer

    from engine.evaluation.gguf import compare_with_llama_cpp, verify_gguf, write_gguf

    spm = pytest.importorskip("sentencepiece", reason="sentencepiece trains the tiny Llama 2-style tokenizer")
    lines = _llama2_style_tokenizer(tmp_path / "spm")
    sp = spm.SentencePieceProcessor(model_file=str(tmp_path / "spm" / "tokenizer.model"))
    tok = AutoTokenizer.from_pretrained(str(tmp_path / "spm"))
    tok.chat_template = ("{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %}[INST] {{ m['content'] }} "
                         "[/INST]{% else %} {{ m['content'] }} {{ eos_token }}{% endif %}{% endfor %}")
    merged = tmp_path / "merged"  # as the export stage's merge saves it: tokenizer.json, no tokenizer.model
    _tiny_llama(merged, tok, bos_token_id=1, eos_token_id=2)
    assert (merged / "tokenizer.json").exists() and not (merged / "tokenizer.model").exists()
    hub = tmp_path / "hub"
    shutil.copytree(merged, hub)
    (hub / "tokenizer.json").unlink()
    for name in ("tokenizer.model", "tokenizer_config.json"):  # the Hub's own, add_bos_token included
        shutil.copy(tmp_path / "spm" / name, hub)
    # Held-out prompts too: with gguf's LlamaHfVocab placeholder scores (all -1000) llama.cpp merges leftmost-first
    # and splits most of these differently (4 of 12 equal when measured).
    texts = SAMPLES[:3] + ["Café naïve 漢字 ÅNGSTRÖM 12345678", "trailing  \t", "a\n\n\n  b"] + lines[-12:]
    want = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
    assert any(tok.convert_ids_to_tokens(i).startswith("<0x") for ids in want for i in ids)  # byte fallback used
    for folder in (merged, hub):
        out = tmp_path / f"{folder.name}.gguf"
        write_gguf(folder, out, "F32")
        assert verify_gguf(out, folder)["chat_template"]
        fields = gguf.GGUFReader(str(out)).fields
        assert bytes(fields["tokenizer.ggml.model"].parts[-1]).decode() == "llama"
        assert bool(fields["tokenizer.ggml.add_bos_token"].parts[-1][0])
        kinds = fields["tokenizer.ggml.token_type"]
        kinds = [int(kinds.parts[i][0]) for i in kinds.data]
        assert kinds.count(gguf.TokenType.BYTE) == 256
        got = llama_check.run("tokenize", {"path": str(out), "texts": texts + [" leading space"]})
        assert "error" not in got, got
        assert got["ids"][:-1] == want, folder.name
        # A leading space: llama.cpp adds the dummy prefix as SentencePiece does; transformers 5 (legacy=False) not.
        assert got["ids"][-1] == sp.encode(" leading space")
    same = compare_with_llama_cpp(tmp_path / "merged.gguf", merged, "Is it wise to trust a confident answer?", n_tokens=12)
    assert "error" not in same, same
    assert same["matching_prefix"] == same["compared"] > 0, same
