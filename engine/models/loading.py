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
    quantized: bool  # 4-bit NF4 asked for; load_for_training checks the layers really are Linear4bit
    layers_4bit: int = 0  # bitsandbytes Linear4bit layers in the last model loaded for training


class UnslothUnavailable(UserError):
    """model.backend = "unsloth" was asked for and unsloth does not import here; `crash` says why in one line."""

    def __init__(self, message: str, crash: str):
        super().__init__(message)
        self.crash = crash


# Unsloth patches these at import: imported before it, they run unpatched (on CPU, TRL's Triton head then fails).
IMPORT_AFTER_UNSLOTH = ("trl", "transformers", "peft")


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def pick_backend(cfg: Config, force_standard: bool = False) -> Backend:
    """Which loader runs, and why, in one line for the stage log.

    auto: Unsloth where CUDA exists and it imports, else the standard backend. Unsloth's CPU backend runs only when
    asked for (model.backend = "unsloth"), since importing it patches transformers and TRL for the whole process.
    model.load_in_4bit quantizes (bitsandbytes NF4, double quant) on either backend, on CUDA or on the CPU.
    """
    want = "standard" if force_standard else cfg.model.backend
    device = cfg.train.device
    cuda = cuda_available() if device != "cpu" else False
    if device == "cuda" and not cuda:
        raise UserError("train.device = 'cuda' but torch sees no CUDA device")
    dev = "cuda" if cuda else "cpu"
    quant = bool(cfg.model.load_in_4bit)
    qdesc = f"4-bit NF4 QLoRA (bitsandbytes, double quant) on {dev}" if quant else f"plain LoRA on {dev}"
    if cuda:
        qdesc += cap_cuda_memory()
    if want == "standard":
        why = "forced (--use-standard)" if force_standard and cfg.model.backend != "standard" else "model.backend = standard"
        return Backend("standard", f"standard HF transformers + PEFT: {why}; {qdesc}", dev, quant)
    if want == "auto" and not cuda:
        return Backend("standard", "standard HF transformers + PEFT: auto, because there is no CUDA device (Unsloth's "
                       f"CPU backend runs only when asked: model.backend = unsloth); {qdesc}", dev, quant)
    if cfg.model.fast_inference and cfg.model.unsloth_standby:
        os.environ.setdefault("UNSLOTH_VLLM_STANDBY", "1")  # read by unsloth at import, so before the first one
    crash = import_unsloth()
    if crash and want == "unsloth":
        raise UnslothUnavailable(f"model.backend = 'unsloth' but unsloth does not import ({crash}); use backend = "
                                 "'auto' or --use-standard", crash)
    if crash:
        return Backend("standard", f"standard HF transformers + PEFT: auto, because unsloth does not import ({crash}); "
                       f"{qdesc}", dev, quant)
    how = "auto, CUDA present and unsloth imports" if want == "auto" else "model.backend = unsloth"
    where = "" if cuda else " (Unsloth's CPU backend: no CUDA device)"
    return Backend("unsloth", f"unsloth {_version('unsloth')} FastLanguageModel{where}: {how}; {qdesc}", dev, quant)


def cap_cuda_memory() -> str:
    """ABA_CUDA_MEMORY_CAP_GB=16 caps this process's CUDA allocations (torch.cuda.set_per_process_memory_fraction):
    a bigger card stands in for a 16 GB one (bench/gpu_check.py). Returns what it did for the backend line."""
    cap = os.environ.get("ABA_CUDA_MEMORY_CAP_GB")
    if not cap:
        return ""
    import torch

    index = torch.cuda.current_device()
    total = torch.cuda.get_device_properties(index).total_memory
    try:
        fraction = min(1.0, float(cap) * 1024**3 / total)
    except ValueError:
        raise UserError(f"ABA_CUDA_MEMORY_CAP_GB={cap!r}: not a number of GiB") from None
    torch.cuda.set_per_process_memory_fraction(fraction, index)
    return f"; CUDA memory capped at {float(cap):g} GiB of {total / 1024**3:.0f} (ABA_CUDA_MEMORY_CAP_GB)"


def _version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "?"


def import_unsloth() -> str | None:
    """Import unsloth, first: None when it imported, else the crash in one line.

    Unsloth patches transformers, TRL and PEFT when it is imported, so it must come before them; a worker that
    imported one of them first is a bug, reported as the crash (the smoke test then falls back and says so).
    """
    import sys

    if "unsloth" in sys.modules:
        return None
    early = [name for name in IMPORT_AFTER_UNSLOTH if name in sys.modules]
    if early:
        return (f"ImportOrderError: {', '.join(early)} imported before unsloth in this process; unsloth must come "
                "first to patch them")
    try:
        import unsloth  # noqa: F401
    except Exception as err:  # NotImplementedError (no accelerator, CPU fallback off), ImportError, Triton, drivers
        return f"{type(err).__name__}: {(str(err).splitlines() or [''])[0][:200]}"
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
    Asked for 4-bit, the model must come back with bitsandbytes Linear4bit layers (Unsloth's CPU loader falls back
    to 16-bit weights when bitsandbytes fails; that is an error here, never a silent change of what trains).
    """
    if backend.name == "unsloth":
        crash = import_unsloth()  # before the first trl/transformers/peft import of this process, or the crash
        if crash:
            raise UnslothUnavailable(f"unsloth does not import ({crash})", crash)
        from unsloth import FastLanguageModel

        from engine.models.trl_compat import ensure_fused_head

        ensure_fused_head()  # on the unsloth backend: unsloth_zoo's CPU twin is found and kept
        extra: dict[str, Any] = {}
        if fast_inference:
            extra = {"fast_inference": True, "gpu_memory_utilization": cfg.model.gpu_memory_utilization,
                     "max_lora_rank": cfg.model.lora_r}
        model, tok = FastLanguageModel.from_pretrained(
            model_name=path, max_seq_length=max_seq_length, load_in_4bit=backend.quantized,
            dtype=None if backend.device == "cuda" else torch_dtype(cfg, backend), **extra
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
        _check_4bit(backend, model, path)
        return model, tok, None
    from engine.models.trl_compat import ensure_fused_head

    ensure_fused_head()
    model = load_plain(cfg, backend, path)
    _check_4bit(backend, model, path)
    tok = load_tokenizer(cfg.model.base if cfg.model.base.startswith(DEMO_PREFIX) else path)
    return model, tok, lora_config(cfg)


def count_4bit(model) -> int:
    """bitsandbytes Linear4bit layers in `model` (0 when bitsandbytes was never imported)."""
    import sys

    bnb_nn = sys.modules.get("bitsandbytes.nn")
    if bnb_nn is None:
        return 0
    return sum(isinstance(m, bnb_nn.Linear4bit) for m in model.modules())


def _check_4bit(backend: Backend, model, path: str) -> None:
    backend.layers_4bit = count_4bit(model)
    if backend.quantized and not backend.layers_4bit:
        raise UserError(f"model.load_in_4bit = true but {backend.name} loaded {path} with 16-bit weights (no "
                        "bitsandbytes Linear4bit layer): bitsandbytes' 4-bit does not run here. On the CPU its "
                        "AVX512-BF16 layers reject layers narrower than 64 (or whose width is not a multiple of 32); "
                        "set model.load_in_4bit = false, or use the standard backend")


def keep_4bit_trainable(model) -> int:
    """The AVX512-BF16 guard, as unsloth_zoo's CPU loader has it: returns the layers it set.

    bitsandbytes 0.50 repacks a Linear4bit weight in place for its AVX512-BF16 kernel on the first no-grad forward
    in eval mode (generation, an evaluation) on a CPU that has the instruction, and never unpacks it; training
    through the packed weight then stalls QLoRA learning, and GRPO generates between its steps. Every layer is kept
    on the trainable layout (`support_avx512bf16_for_cpu = False`); this also keeps layers narrower than 64, which
    the packed kernel rejects, working on the CPU.
    """
    count = 0
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False
            count += 1
    return count


def load_plain(cfg: Config, backend: Backend, path: str, *, quantize: bool | None = None):
    """A causal LM from `path` with the backend's dtype and, when asked, 4-bit NF4 (bitsandbytes, CUDA or CPU)."""
    from transformers import AutoModelForCausalLM

    quant = backend.quantized if quantize is None else quantize
    kwargs: dict[str, Any] = {"dtype": torch_dtype(cfg, backend)}
    if quant:
        import torch
        from transformers import BitsAndBytesConfig

        compute = (torch.float32 if backend.device == "cpu"
                   else torch.bfloat16 if cfg.model.dtype == "bfloat16" else torch.float16)
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=compute,
        )
    kwargs["device_map"] = {"": 0} if backend.device == "cuda" else {"": "cpu"} if quant else None
    try:
        model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    except OSError as err:
        raise UserError(f"model {path!r}: cannot load ({str(err).splitlines()[0][:200]})") from None
    if quant:
        from peft import prepare_model_for_kbit_training

        keep_4bit_trainable(model)
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
