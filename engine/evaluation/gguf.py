"""GGUF from a merged HF Qwen3 or Llama model with the `gguf` package: its tensor-name table, tokenizer and chat template.

Tensors are streamed: the header is written from safetensors metadata, then one tensor at a time is read,
converted and written, so peak memory stays near one tensor beside the process itself.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from engine.errors import UserError

TYPES = ("F32", "F16", "BF16", "Q8_0")
ARCHITECTURES = ("qwen3", "llama")  # HF model_type, which is also llama.cpp's architecture name


def _architecture(model_dir: Path, cfg: dict) -> str:
    kind = cfg.get("model_type")
    if kind not in ARCHITECTURES:
        raise UserError(f"{model_dir}: GGUF export supports {' and '.join(ARCHITECTURES)} models, this is {kind!r}")
    return kind


def _permute(data: np.ndarray, n_head: int) -> np.ndarray:
    """Llama's Q and K rows reordered as llama.cpp's converter does (LlamaModel.permute in convert_hf_to_gguf.py):
    HF rotates the two halves of each head, llama.cpp's `llama` rope rotates adjacent pairs."""
    return data.reshape(n_head, 2, data.shape[0] // n_head // 2, *data.shape[1:]).swapaxes(1, 2).reshape(data.shape)


def _arranged(arch: str, cfg: dict, hf_name: str, data: np.ndarray) -> np.ndarray:
    """A tensor as llama.cpp wants it for `arch` (Qwen3: as is)."""
    if arch == "llama":
        if hf_name.endswith(("q_proj.weight", "q_proj.bias")):
            return _permute(data, cfg["num_attention_heads"])
        if hf_name.endswith(("k_proj.weight", "k_proj.bias")):
            return _permute(data, cfg.get("num_key_value_heads", cfg["num_attention_heads"]))
    return data


def _arch_tables(arch_name: str, n_layers: int):
    import gguf

    arch = next(a for a, name in gguf.MODEL_ARCH_NAMES.items() if name == arch_name)
    return arch, gguf.get_tensor_name_map(arch, n_layers)


def _hf_tensors(model_dir: Path, cfg: dict, name_map) -> list[tuple[Path, str, str]]:
    """(file, HF name, GGUF name) of every tensor to write; a tied lm_head is the embedding and is skipped."""
    from safetensors import safe_open

    out = []
    for path in _safetensor_files(model_dir):
        with safe_open(str(path), framework="np") as f:
            for hf_name in f.keys():
                if hf_name == "lm_head.weight" and cfg.get("tie_word_embeddings"):
                    continue
                gg_name = name_map.get_name(hf_name, try_suffixes=(".weight", ".bias"))
                if gg_name is None:
                    raise UserError(f"{path.name}: no GGUF name for tensor {hf_name!r}")
                out.append((path, hf_name, gg_name))
    return out


def _target_type(name: str, shape: tuple[int, ...], wanted: str):
    """1-D tensors (norms) stay F32 as llama.cpp expects; Q8_0 needs rows divisible by its block of 32."""
    import gguf

    if len(shape) < 2 or wanted == "F32":
        return gguf.GGMLQuantizationType.F32
    if wanted == "Q8_0" and shape[-1] % 32:
        return gguf.GGMLQuantizationType.F16
    return getattr(gguf.GGMLQuantizationType, wanted)


def _convert(data: np.ndarray, qtype) -> np.ndarray:
    import gguf

    if qtype == gguf.GGMLQuantizationType.F32:
        return data.astype(np.float32)
    if qtype == gguf.GGMLQuantizationType.F16:
        return data.astype(np.float16)
    return gguf.quants.quantize(data.astype(np.float32), qtype)


def _safetensor_files(model_dir: Path) -> list[Path]:
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise UserError(f"{model_dir}: no .safetensors files to export")
    return files


def _rope_parameters(cfg: dict) -> dict:
    """HF's RoPE settings in either layout: transformers 5's `rope_parameters`, or `rope_scaling` beside a top-level
    `rope_theta` (the Hub's Llama 3.1 config.json)."""
    params = {**(cfg.get("rope_scaling") or {}), **(cfg.get("rope_parameters") or {})}
    params["rope_type"] = str(params.get("rope_type") or params.get("type") or "default").lower()
    params.setdefault("rope_theta", cfg.get("rope_theta"))
    return params


def _llama3_rope_factors(params: dict, cfg: dict, head_dim: int) -> np.ndarray:
    """Llama 3.1's wavelength-dependent scaling as llama.cpp's `rope_freqs` tensor, one divisor per rotated pair: 1 for
    short wavelengths, `factor` for long ones, smoothed between (LlamaModel.generate_extra_tensors in llama.cpp's
    convert_hf_to_gguf.py; transformers' _compute_llama3_parameters divides inv_freq the same way). The original
    context comes from the RoPE settings first, where transformers reads it."""
    freqs = 1.0 / float(params["rope_theta"]) ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    factor = float(params.get("factor", 8.0))
    low, high = float(params.get("low_freq_factor", 1.0)), float(params.get("high_freq_factor", 4.0))
    old = float(params.get("original_max_position_embeddings") or cfg.get("original_max_position_embeddings") or 8192)
    wavelen = 2 * np.pi / freqs
    with np.errstate(divide="ignore", invalid="ignore"):  # low == high leaves no band to smooth
        smooth = (old / wavelen - low) / (high - low)
        middle = 1 / ((1 - smooth) / factor + smooth)
    return np.where(wavelen < old / high, 1.0, np.where(wavelen > old / low, factor, middle)).astype(np.float32)


def _add_rope(writer, model_dir: Path, cfg: dict, arch_name: str, head_dim: int) -> np.ndarray | None:
    """RoPE's base and scaling as llama.cpp's converter writes them (TextModel.set_gguf_parameters: linear and YaRN as
    metadata); Llama 3.1's `llama3` scaling comes back as the `rope_freqs` tensor to write with the weights. Any other
    kind is refused: llama.cpp would run it unscaled."""
    import gguf

    params = _rope_parameters(cfg)
    if params["rope_theta"] is None:  # transformers' defaults
        params["rope_theta"] = 1e6 if arch_name == "qwen3" else 1e4
    writer.add_rope_freq_base(float(params["rope_theta"]))
    kind = params["rope_type"]
    if kind == "default":
        return None
    if kind == "linear":
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(float(params["factor"]))
        return None
    if kind == "yarn":
        # As the converter: type, factor, original context. llama.cpp then rounds the correction range (transformers'
        # truncate=true) and scales attention by 0.1 ln(factor) + 1, transformers' default; this build reads no
        # beta_fast/beta_slow/attention factor from the GGUF for Llama (measured: the logits do not move), so a config
        # that sets its own is refused rather than exported wrong.
        odd = [k for k in ("attention_factor", "mscale", "mscale_all_dim") if params.get(k) is not None]
        odd += [f"{k}={params[k]}" for k, usual in (("beta_fast", 32), ("beta_slow", 1))
                if params.get(k) not in (None, usual)]
        odd += ["truncate=false"] if params.get("truncate") is False else []
        if odd:
            raise UserError(f"{model_dir}: YaRN with {', '.join(odd)} is not written to GGUF (llama.cpp would scale it "
                            "differently)")
        orig = int(params["original_max_position_embeddings"])
        writer.add_rope_scaling_type(gguf.RopeScalingType.YARN)
        writer.add_rope_scaling_factor(float(params.get("factor") or cfg["max_position_embeddings"] / orig))
        writer.add_rope_scaling_orig_ctx_len(orig)
        return None
    if kind == "llama3" and arch_name == "llama":
        return _llama3_rope_factors(params, cfg, head_dim)
    raise UserError(f"{model_dir}: RoPE scaling {kind!r} is not written to GGUF for {arch_name} (llama.cpp would run "
                    "it unscaled); the export writes default, linear, yarn and, for Llama, llama3 RoPE")


def write_gguf(model_dir: Path, out: Path, qtype_name: str = "Q8_0", progress: Callable[[int, int, str], None] | None = None) -> dict[str, Any]:
    """Write `out` from the HF model in `model_dir`. Returns what was written (tensor count, bytes, types)."""
    import gguf
    from safetensors import safe_open

    if qtype_name not in TYPES:
        raise UserError(f"export.gguf_type: {qtype_name!r} is not one of {', '.join(TYPES)}")
    cfg = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    arch_name = _architecture(model_dir, cfg)
    n_layers = cfg["num_hidden_layers"]
    arch, name_map = _arch_tables(arch_name, n_layers)
    writer = gguf.GGUFWriter(str(out), gguf.MODEL_ARCH_NAMES[arch])
    writer.add_name(model_dir.name)
    writer.add_context_length(cfg.get("max_position_embeddings", 4096))
    writer.add_embedding_length(cfg["hidden_size"])
    writer.add_block_count(n_layers)
    writer.add_feed_forward_length(cfg["intermediate_size"])
    writer.add_head_count(cfg["num_attention_heads"])
    writer.add_head_count_kv(cfg.get("num_key_value_heads", cfg["num_attention_heads"]))
    head_dim = cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    rope_factors = _add_rope(writer, model_dir, cfg, arch_name, head_dim)
    writer.add_layer_norm_rms_eps(float(cfg.get("rms_norm_eps", 1e-6)))
    if arch_name == "llama":  # as the converter's LlamaModel.set_gguf_parameters
        writer.add_vocab_size(cfg["vocab_size"])
        writer.add_rope_dimension_count(head_dim)
    file_type = {"F32": gguf.LlamaFileType.ALL_F32, "F16": gguf.LlamaFileType.MOSTLY_F16,
                 "BF16": gguf.LlamaFileType.MOSTLY_BF16, "Q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}[qtype_name]
    writer.add_file_type(file_type)
    # As llama.cpp's convert_hf_to_gguf.py: a model file, quantized with ggml's current quantization version.
    writer.add_type(gguf.GGUFType.MODEL)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    _add_tokenizer(writer, model_dir, cfg)

    # Pass 1: names, shapes and types from the safetensors headers only.
    plan: list[tuple[Path | None, str, str, Any]] = []
    params = 0
    if rope_factors is not None:  # first, as the converter yields its extra tensors before the model's
        name = gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.ROPE_FREQS] + ".weight"
        writer.add_tensor_info(name, rope_factors.shape, np.dtype(np.float32), rope_factors.nbytes)
        plan.append((None, "", name, gguf.GGMLQuantizationType.F32))
        params += rope_factors.size
    for path, hf_name, gg_name in _hf_tensors(model_dir, cfg, name_map):
        with safe_open(str(path), framework="np") as f:
            shape = tuple(f.get_slice(hf_name).get_shape())
        qtype = _target_type(gg_name, shape, qtype_name)
        if qtype in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16):
            dtype = np.dtype(np.float32 if qtype == gguf.GGMLQuantizationType.F32 else np.float16)
            writer.add_tensor_info(gg_name, shape, dtype, int(np.prod(shape)) * dtype.itemsize)
        else:
            byte_shape = gguf.quant_shape_to_byte_shape(shape, qtype)
            writer.add_tensor_info(gg_name, byte_shape, np.dtype(np.uint8), int(np.prod(byte_shape)), raw_dtype=qtype)
        plan.append((path, hf_name, gg_name, qtype))
        params += int(np.prod(shape))
    # The converter's size label ("8.2B", "210K") from the parameters written (a tied head counted once). Counted
    # here from the logical shapes: gguf's own counter sees a quantized tensor's byte shape.
    writer.add_size_label(gguf.size_label(params, params, 0, 0))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    # Pass 2: one tensor at a time.
    types: dict[str, int] = {}
    for i, (path, hf_name, gg_name, qtype) in enumerate(plan):
        if path is None:
            data = rope_factors
        else:
            with safe_open(str(path), framework="pt") as f:
                data = _arranged(arch_name, cfg, hf_name, f.get_tensor(hf_name).float().numpy())
        writer.write_tensor_data(_convert(data, qtype))
        types[qtype.name] = types.get(qtype.name, 0) + 1
        del data
        if progress:
            progress(i + 1, len(plan), gg_name)
    writer.close()
    return {"tensors": len(plan), "bytes": out.stat().st_size, "types": types}


def _pre_tokenizer(model_dir: Path) -> str:
    """llama.cpp's name for the BPE pre-tokenizer: Llama 3's regex takes digits three at a time (`llama-bpe`), Qwen2's
    one at a time (`qwen2`, also the demo tokenizer's)."""
    try:
        pre = json.dumps(json.loads((model_dir / "tokenizer.json").read_text(encoding="utf-8")).get("pre_tokenizer"))
    except (OSError, json.JSONDecodeError):
        return "qwen2"
    return "llama-bpe" if "p{N}{1,3}" in pre else "qwen2"


def _spm_style(model_dir: Path) -> bool:
    """A SentencePiece-style vocabulary (Llama 2): BPE over `▁`-marked pieces with `<0xNN>` byte fallback, which
    llama.cpp reads as its `llama` tokenizer model, rather than byte-level BPE (`gpt2`: Qwen, Llama 3)."""
    path = model_dir / "tokenizer.json"
    if not path.exists():
        return (model_dir / "tokenizer.model").exists()
    try:
        model = json.loads(path.read_text(encoding="utf-8")).get("model") or {}
    except (OSError, json.JSONDecodeError):
        return False
    return model.get("type") == "BPE" and bool(model.get("byte_fallback"))


def _spm_vocab(model_dir: Path, size: int) -> tuple[list[bytes], list[float], list[int]]:
    """Tokens, scores and types for llama.cpp's `llama` tokenizer, with gguf's own vocab classes: LlamaHfVocab on the
    tokenizer.json transformers saves (the one it trained with, added tokens included), else SentencePieceVocab on
    tokenizer.model. LlamaHfVocab scores every token -1000 (a placeholder); llama.cpp merges the adjacent pair whose
    joined token scores highest, so each token scores minus the rank of the first merge that makes it, which
    replays the BPE merges in their order (SentencePiece's own scores order them the same way)."""
    import gguf

    json_path = model_dir / "tokenizer.json"
    if json_path.exists():
        try:
            vocab = gguf.LlamaHfVocab(model_dir)
        except (FileNotFoundError, TypeError) as e:  # its own checks: byte fallback and a Sequence decoder
            raise UserError(f"{json_path}: not a SentencePiece-style Llama tokenizer gguf can read ({e})") from e
        rank: dict[str, int] = {}
        for r, pair in enumerate(json.loads(json_path.read_text(encoding="utf-8"))["model"].get("merges") or []):
            a, b = pair if isinstance(pair, list) else pair.split(" ", 1)
            rank.setdefault(a + b, r)
        last = len(rank)  # single characters, which no merge makes, score below every merge
        entries = [(text, -float(rank.get(text.decode("utf-8"), last)) if kind == gguf.TokenType.NORMAL else score,
                    kind) for text, score, kind in vocab.all_tokens()]
    else:
        if gguf.vocab.SentencePieceProcessor is None:
            raise UserError(f"{model_dir}: reading tokenizer.model needs the sentencepiece package; or save the "
                            "tokenizer with transformers (tokenizer.json)")
        entries = list(gguf.SentencePieceVocab(model_dir).all_tokens())
    tokens = [text for text, _, _ in entries]
    scores = [float(score) for _, score, _ in entries]
    types = [int(kind) for _, _, kind in entries]
    for i in range(len(tokens), size):  # embedding rows beyond the tokenizer, as the converter pads them
        tokens.append(f"[PAD{i}]".encode())
        scores.append(-1000.0)
        types.append(int(gguf.TokenType.UNUSED))
    return tokens, scores, types


def _add_tokenizer(writer, model_dir: Path, cfg: dict) -> None:
    """The vocabulary (byte-level BPE as `gpt2`, or SentencePiece-style as `llama`), special ids, add-BOS and the chat
    template, read with gguf's own vocab classes and SpecialVocab as llama.cpp's converter does."""
    import gguf
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    vocab = tok.get_vocab()
    size = max(cfg["vocab_size"], len(vocab))
    if _spm_style(model_dir):  # the converter's LlamaModel.set_vocab: _set_vocab_sentencepiece / _set_vocab_llama_hf
        tokens, scores, types = _spm_vocab(model_dir, size)
        writer.add_tokenizer_model("llama")
        writer.add_tokenizer_pre("default")
        writer.add_token_list(tokens)
        writer.add_token_scores(scores)
        writer.add_token_types(types)
        if getattr(tok, "add_prefix_space", None) is False:  # llama.cpp prepends a space unless told not to
            writer.add_add_space_prefix(False)
        special = gguf.SpecialVocab(model_dir, n_vocab=len(tokens))
    else:
        by_id = {i: t for t, i in vocab.items()}
        added = {t.content: t for t in tok.added_tokens_decoder.values()}
        tokens, kinds = [], []
        for i in range(size):
            text = by_id.get(i, f"[PAD{i}]")
            tokens.append(text)
            if i not in by_id:
                kinds.append(gguf.TokenType.UNUSED)
            elif text in added:
                kinds.append(gguf.TokenType.CONTROL if added[text].special else gguf.TokenType.USER_DEFINED)
            else:
                kinds.append(gguf.TokenType.NORMAL)
        writer.add_tokenizer_model("gpt2")
        writer.add_tokenizer_pre(_pre_tokenizer(model_dir))
        writer.add_token_list(tokens)
        writer.add_token_types(kinds)
        special = gguf.SpecialVocab(model_dir, load_merges=True, n_vocab=size)
    special.add_to_gguf(writer)
    if tok.chat_template and not special.chat_template:
        writer.add_chat_template(tok.chat_template)


def verify_gguf(path: Path, model_dir: Path, atol: dict[str, float] | None = None) -> dict[str, Any]:
    """Read the file back with gguf's reader: every tensor's name, shape and type, values close to the source."""
    import gguf
    from safetensors import safe_open

    atol = atol or {"F32": 1e-6, "F16": 2e-3, "BF16": 2e-2, "Q8_0": 2e-2}
    cfg = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    arch_name = _architecture(model_dir, cfg)
    _, name_map = _arch_tables(arch_name, cfg["num_hidden_layers"])
    reader = gguf.GGUFReader(str(path))
    by_name = {t.name: t for t in reader.tensors}
    checked, worst = 0, 0.0
    problems: list[str] = []
    for path, hf_name, gg_name in _hf_tensors(model_dir, cfg, name_map):
        t = by_name.get(gg_name)
        if t is None:
            problems.append(f"{gg_name}: missing")
            continue
        with safe_open(str(path), framework="pt") as f:
            src = _arranged(arch_name, cfg, hf_name, f.get_tensor(hf_name).float().numpy())
        got = gguf.quants.dequantize(t.data, t.tensor_type).reshape(src.shape)
        if tuple(int(x) for x in reversed(t.shape)) != src.shape:
            problems.append(f"{gg_name}: shape {tuple(t.shape)} vs {src.shape}")
        scale = float(np.abs(src).max()) or 1.0
        err = float(np.abs(got - src).max()) / scale
        worst = max(worst, err)
        if err > atol.get(t.tensor_type.name, 2e-2):
            problems.append(f"{gg_name}: max relative error {err:.2e} for {t.tensor_type.name}")
        checked += 1
    arch = reader.fields["general.architecture"]
    arch_name = bytes(arch.parts[arch.data[0]]).decode()
    has_template = "tokenizer.chat_template" in reader.fields
    if problems:
        raise UserError(f"{path}: GGUF verification failed: {'; '.join(problems[:5])}")
    return {"tensors_checked": checked, "max_rel_error": worst, "architecture": arch_name, "chat_template": has_template,
            "tokens": len(reader.fields["tokenizer.ggml.tokens"].data)}


def llama_quantize(src: Path, dest: Path, qtype: str) -> dict[str, Any] | None:
    """llama.cpp's quantizer (llama-cpp-python, optional extra) in its own process: {"path"} or {"error"}, None when
    llama-cpp-python is not installed."""
    from engine.evaluation import llama_check

    if not llama_check.available():
        return None
    return llama_check.run("quantize", {"src": str(src), "dest": str(dest), "qtype": qtype})


def transformers_greedy(model_dir: Path, prompt: str, n_tokens: int) -> tuple[list[int], list[int]]:
    """(prompt ids, greedy completion ids) from transformers on the merged model, the reference for llama.cpp."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(model_dir)).eval()
    # transformers 5 returns a BatchEncoding here unless told otherwise; the ids are what both sides must share.
    ids = list(tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                       tokenize=True, return_dict=False))
    with torch.no_grad():
        ref = model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                             max_new_tokens=n_tokens, do_sample=False, pad_token_id=tok.pad_token_id)
    want = ref[0][len(ids):].tolist()
    stop = {tok.eos_token_id, tok.pad_token_id}
    while want and want[-1] in stop:  # llama.cpp stops before the end-of-turn token; so does this side
        want.pop()
    return ids, want


def compare_with_llama_cpp(path: Path, model_dir: Path, prompt: str, n_tokens: int = 20) -> dict[str, Any] | None:
    """Greedy tokens from llama.cpp on the GGUF (in a child process) against transformers on the merged model; None
    without llama-cpp-python. Q8_0 may flip a near-tie, so the matching leading tokens are counted; a llama.cpp crash
    comes back as {"error": ...}, a failed check rather than a failed stage."""
    from engine.evaluation import llama_check

    if not llama_check.available():
        return None
    ids, want = transformers_greedy(model_dir, prompt, n_tokens)
    got = llama_check.run("generate", {"path": str(path), "ids": ids, "n_tokens": len(want)})
    if "error" in got:
        return {"transformers": want, "error": got["error"], "matching_prefix": 0, "compared": len(want)}
    same = 0
    for a, b in zip(want, got["tokens"]):
        if a != b:
            break
        same += 1
    return {"transformers": want, "llama_cpp": got["tokens"], "matching_prefix": same, "compared": len(want)}


def copy_to_lmstudio(path: Path, folder: str, model_name: str) -> Path:
    dest_dir = Path(os.path.expanduser(folder)) / "aba-tui" / model_name
    dest_dir.mkdir(parents=True, exist_ok=True)
    dest = dest_dir / path.name
    shutil.copy2(path, dest)
    return dest
