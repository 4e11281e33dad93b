"""Model loading: Unsloth QLoRA where it works, else HF transformers + PEFT; the tiny demo model built from a config.

Heavy imports happen inside the functions: this module is only imported by stages running in workers.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.config import Config
from engine.errors import UserError

ROOT = Path(__file__).resolve().parents[2]
DEMO_TOKENIZER = ROOT / "data" / "demo" / "tokenizer"
DEMO_PREFIX = "demo:"

# The tiny Qwen3-architecture model: small enough to train on 2 CPU cores in seconds.
TINY_QWEN3 = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=16,
    max_position_embeddings=4096,
    rope_theta=1_000_000.0,
    tie_word_embeddings=True,
    rms_norm_eps=1e-6,
)


@dataclass
class Backend:
    name: str  # "unsloth" or "standard"
    reason: str
    device: str  # "cuda" or "cpu"
    quantized: bool


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def pick_backend(cfg: Config, force_standard: bool = False) -> Backend:
    """Which loader runs, and why, in one line for the stage log."""
    want = "standard" if force_standard else cfg.model.backend
    device = cfg.train.device
    cuda = cuda_available() if device != "cpu" else False
    if device == "cuda" and not cuda:
        raise UserError("train.device = 'cuda' but torch sees no CUDA device")
    dev = "cuda" if cuda else "cpu"
    quant = bool(cuda and cfg.model.load_in_4bit and not cfg.model.base.startswith(DEMO_PREFIX))
    if want == "standard":
        why = "forced (--use-standard or model.backend = standard)" if want == cfg.model.backend or force_standard else ""
        return Backend("standard", f"standard HF transformers + PEFT: {why or 'chosen'}; {_qdesc(quant, dev)}", dev, quant)
    unsloth_err = _unsloth_problem(cuda, cfg)
    if want == "unsloth" and unsloth_err:
        raise UserError(f"model.backend = 'unsloth' but {unsloth_err}; use backend = 'auto' or --use-standard")
    if unsloth_err:
        return Backend("standard", f"standard HF transformers + PEFT: auto, because {unsloth_err}; {_qdesc(quant, dev)}", dev, quant)
    return Backend("unsloth", "unsloth FastLanguageModel: CUDA present and unsloth imports; QLoRA 4-bit", "cuda", cfg.model.load_in_4bit)


def _qdesc(quant: bool, dev: str) -> str:
    return "4-bit bitsandbytes QLoRA on CUDA" if quant else f"plain LoRA on {dev}"


def _unsloth_problem(cuda: bool, cfg: Config) -> str | None:
    if not cuda:
        return "no CUDA device"
    if cfg.model.base.startswith(DEMO_PREFIX):
        return "the demo model is built locally"
    if cfg.model.fast_inference and cfg.model.unsloth_standby:
        os.environ.setdefault("UNSLOTH_VLLM_STANDBY", "1")  # read by unsloth at import, so before the first one
    try:
        import unsloth  # noqa: F401
    except Exception as err:  # ImportError, Triton and driver errors all land here
        return f"unsloth does not import ({type(err).__name__}: {str(err).splitlines()[0][:120]})"
    return None


def load_tokenizer(base: str):
    from transformers import AutoTokenizer

    path = DEMO_TOKENIZER if base.startswith(DEMO_PREFIX) else base
    tok = AutoTokenizer.from_pretrained(str(path))
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def materialize_demo_base(name: str, seed: int, dest: Path, log=None, progress=None) -> Path:
    """Build the tiny model from its config (seeded) once per run and save it like any local HF model."""
    if name != "demo:tiny-qwen3":
        raise UserError(f"model.base: unknown demo model {name!r} (available: demo:tiny-qwen3)")
    if (dest / "config.json").exists():
        return dest
    # Built once per runs folder and copied into each run, so every run holds the exact base it trained from.
    root = Path(os.environ.get("ABA_CACHE_DIR") or dest.parent.parent / ".cache")
    cache = root / f"{name.split(':', 1)[1]}-seed{seed}-{_demo_fingerprint()}"
    if not (cache / "config.json").exists():
        if log:
            log(f"building the tiny demo model {name} (seed {seed}): a few seconds of pre-training on the shipped "
                "text, once per runs folder")
        _build_demo_base(name, seed, cache, progress)
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(cache, tmp)
    tmp.replace(dest)
    return dest


def _demo_fingerprint() -> str:
    """Changes when the tokenizer, the shipped text or the tiny config change."""
    import hashlib

    h = hashlib.sha256(json.dumps(TINY_QWEN3, sort_keys=True).encode())
    for path in sorted([*DEMO_TOKENIZER.glob("*"), *(ROOT / "data" / "prompts").glob("*.jsonl"), ROOT / "data" / "demo" / "traces.jsonl"]):
        h.update(path.read_bytes())
    return h.hexdigest()[:12]


def _build_demo_base(name: str, seed: int, dest: Path, progress=None) -> None:
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    tok = load_tokenizer(name)
    config = Qwen3Config(
        vocab_size=len(tok), bos_token_id=None, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, **TINY_QWEN3
    )
    torch.manual_seed(seed)
    model = Qwen3ForCausalLM(config)
    _warm_up(model, tok, seed, progress=progress)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f"{dest.name}.{os.getpid()}.tmp")
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    try:
        tmp.replace(dest)
    except OSError:  # another worker built it first
        shutil.rmtree(tmp, ignore_errors=True)


def _warm_up(model, tok, seed: int, steps: int = 200, progress=None) -> None:
    """A few seconds of full-parameter LM training on the shipped demo text, so the tiny base writes word-like text.

    A random 200k-parameter model emits uniform noise, which gives GRPO and the battery nothing to move. This is a
    deterministic pre-training on data/ (no hub), not a trick on any stage: every stage still trains as it would.
    """
    import random

    import torch

    from engine.tracefile import DEMO_TRACES, assistant_content, load_trace_file

    texts = []
    for row in load_trace_file(DEMO_TRACES):
        msgs = row["turns"] + [{"role": "assistant", "content": assistant_content(row["reasoning"], row["answer"])}]
        texts.append(tok.apply_chat_template(msgs, tokenize=False))
    for path in sorted((ROOT / "data" / "prompts").glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                texts.append(tok.apply_chat_template(json.loads(line)["turns"], tokenize=False))
    ids = [tok(t, truncation=True, max_length=256)["input_ids"] for t in texts]
    rng = random.Random(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    model.train()
    for step in range(steps):
        batch = rng.sample(ids, min(8, len(ids)))
        width = max(len(b) for b in batch)
        input_ids = torch.full((len(batch), width), tok.pad_token_id)
        labels = torch.full((len(batch), width), -100)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for i, b in enumerate(batch):
            input_ids[i, : len(b)] = torch.tensor(b)
            labels[i, : len(b)] = torch.tensor(b)
            mask[i, : len(b)] = 1
        loss = model(input_ids=input_ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        if progress is not None:  # n/N and an ETA in the pipeline while the demo model is built
            progress(step + 1, steps, "building the tiny demo model")
    model.eval()


def base_path(cfg: Config, run_dir: Path, log=None, progress=None) -> str:
    """The base model as something from_pretrained opens: a hub id, a folder, or the run's built demo model."""
    if cfg.model.base.startswith(DEMO_PREFIX):
        return str(materialize_demo_base(cfg.model.base, cfg.run.seed, run_dir / "base-model", log, progress))
    return cfg.model.base


def torch_dtype(cfg: Config, backend: Backend):
    import torch

    if backend.device == "cpu":
        return torch.float32
    return {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}[cfg.model.dtype]


def lora_config(cfg: Config, task_type: str = "CAUSAL_LM"):
    from peft import LoraConfig

    return LoraConfig(
        r=cfg.model.lora_r,
        lora_alpha=cfg.model.lora_alpha,
        lora_dropout=cfg.model.lora_dropout,
        target_modules=cfg.model.target_modules,
        task_type=task_type,
    )


def load_for_training(cfg: Config, backend: Backend, path: str, max_seq_length: int, *,
                      fast_inference: bool = False) -> tuple[Any, Any, Any]:
    """(model, tokenizer, peft_config). On unsloth the model already carries its LoRA and peft_config is None.

    fast_inference (GRPO with model.fast_inference on Unsloth): Unsloth loads a vLLM engine sharing the weights.
    """
    from engine.models.trl_compat import ensure_fused_head

    ensure_fused_head()
    if backend.name == "unsloth":
        from unsloth import FastLanguageModel

        extra: dict[str, Any] = {}
        if fast_inference:
            extra = {"fast_inference": True, "gpu_memory_utilization": cfg.model.gpu_memory_utilization,
                     "max_lora_rank": cfg.model.lora_r}
        model, tok = FastLanguageModel.from_pretrained(
            model_name=path, max_seq_length=max_seq_length, load_in_4bit=cfg.model.load_in_4bit, dtype=None, **extra
        )
        model = FastLanguageModel.get_peft_model(
            model,
            r=cfg.model.lora_r,
            lora_alpha=cfg.model.lora_alpha,
            lora_dropout=cfg.model.lora_dropout,
            target_modules=cfg.model.target_modules,
            use_gradient_checkpointing="unsloth" if cfg.model.gradient_checkpointing else False,
            random_state=cfg.run.seed,
        )
        return model, tok, None
    model = load_plain(cfg, backend, path)
    tok = load_tokenizer(cfg.model.base if cfg.model.base.startswith(DEMO_PREFIX) else path)
    return model, tok, lora_config(cfg)


def load_plain(cfg: Config, backend: Backend, path: str, *, quantize: bool | None = None):
    """A causal LM from `path` with the backend's dtype and (on CUDA) 4-bit quantization."""
    from transformers import AutoModelForCausalLM

    quant = backend.quantized if quantize is None else quantize
    kwargs: dict[str, Any] = {"dtype": torch_dtype(cfg, backend)}
    if quant:
        import torch
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16 if cfg.model.dtype == "bfloat16" else torch.float16,
        )
    if backend.device == "cuda":
        kwargs["device_map"] = {"": 0}
    try:
        model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    except OSError as err:
        raise UserError(f"model {path!r}: cannot load ({str(err).splitlines()[0][:200]})") from None
    if quant:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=cfg.model.gradient_checkpointing)
    return model


def check_adapter(path: Path) -> None:
    """A clear error for a missing or damaged adapter folder (a user can point eval at any path)."""
    cfg_file = path / "adapter_config.json"
    if not cfg_file.exists():
        raise UserError(f"{path}: no adapter here (adapter_config.json missing); did its training stage succeed?")
    try:
        json.loads(cfg_file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise UserError(f"{cfg_file}:{err.lineno}:{err.colno}: damaged adapter config ({err.msg})") from None
