"""Typed pipeline configuration: the seed's numbers as defaults, help on every field, strict loading."""

from __future__ import annotations

import difflib
import re
import tomllib
import typing
from dataclasses import MISSING, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

import tomli_w

from engine.dims import DIMENSIONS, equal_weights
from engine.errors import UserError

STAGES: tuple[str, ...] = (
    "smoke",
    "datagen",
    "judge",
    "sft",
    "grpo",
    "eval",
    "export",
    "grpo-dims",
    "ties",
    "commitment",
    "entangled",
)


def _f(default: Any, help: str, **meta: Any) -> Any:
    """A config field: a default, a help text, and optional checks (min, max, gt, choices)."""
    meta["help"] = help
    if callable(default):
        return field(default_factory=default, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class RunConfig:
    name: str = _f("entropy-joy", "A label for runs made from this config.")
    seed: int = _f(3407, "Random seed for model init, sampling and data order.", min=0)
    stages: list[str] = _f(
        lambda: ["datagen", "judge", "sft", "grpo", "eval", "export"],
        "Stages `aba run` runs when --stages is not given, in pipeline order.",
        choices=STAGES,
    )
    checkpoint_steps: int = _f(50, "Save a resumable checkpoint every N optimizer steps.", min=1)
    cancel_grace_s: float = _f(30.0, "Seconds a cancelled stage gets to save a checkpoint before it is killed.", min=0)


@dataclass
class ModelConfig:
    base: str = _f(
        "mlabonne/Qwen3-8B-abliterated",
        "Base model: a HF hub id, a local folder, or 'demo:tiny-qwen3' for the built-in tiny model.",
    )
    backend: str = _f(
        "auto",
        "auto: Unsloth where it imports and CUDA exists, else standard; unsloth; standard (HF transformers + PEFT).",
        choices=("auto", "unsloth", "standard"),
    )
    load_in_4bit: bool = _f(True, "QLoRA: load the base in 4-bit through bitsandbytes (CUDA only; ignored on CPU).")
    dtype: str = _f("bfloat16", "Compute dtype on GPU (CPU always trains in float32).", choices=("bfloat16", "float16", "float32"))
    lora_r: int = _f(16, "LoRA rank.", min=1)
    lora_alpha: int = _f(32, "LoRA alpha.", min=1)
    lora_dropout: float = _f(0.0, "LoRA dropout.", min=0.0, max=1.0)
    target_modules: list[str] = _f(
        lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        "Module names that receive LoRA adapters.",
    )
    gradient_checkpointing: bool = _f(True, "Trade compute for VRAM headroom (the seed keeps it on for SFT and GRPO).")


@dataclass
class LLMConfig:
    backend: str = _f(
        "vertex",
        "vertex (Gemini on Vertex AI), vertex-batch (Vertex batch prediction), openai (any OpenAI-compatible server), "
        "local (a transformers model in the worker), offline (shipped examples + heuristic judge).",
        choices=("vertex", "vertex-batch", "openai", "local", "offline"),
    )
    model: str = _f("gemini-3-pro-preview", "Model name as the backend knows it.")
    base_url: str = _f("http://localhost:1234/v1", "openai backend: server URL (LM Studio's default shown).")
    api_key_env: str = _f("OPENAI_API_KEY", "openai backend: environment variable holding the API key (never stored).")
    project: str = _f("", "vertex: Google Cloud project (empty: GOOGLE_CLOUD_PROJECT).")
    location: str = _f("global", "vertex: region (empty: GOOGLE_CLOUD_LOCATION).")
    bucket: str = _f("", "vertex-batch: gs:// prefix for request and result files.")
    concurrency: int = _f(8, "Calls in flight at once.", min=1)
    rpm: int = _f(60, "Client-side cap on requests per minute.", min=1)
    tpm: int = _f(1_000_000, "Client-side cap on tokens per minute.", min=1)
    timeout_s: float = _f(120.0, "Seconds before one call is abandoned and retried.", gt=0)
    max_retries: int = _f(5, "Retries on 408, 429, 5xx, timeouts and cut connections.", min=0)
    backoff_s: float = _f(1.0, "First retry delay; doubles each retry with full jitter, capped at 60 s (Retry-After wins).", gt=0)
    temperature: float = _f(1.0, "Sampling temperature.", min=0.0)
    max_tokens: int = _f(4096, "Largest reply, in tokens.", min=1)


@dataclass
class DatagenConfig:
    llm: LLMConfig = _f(LLMConfig, "The generator model.")
    prompts_dir: str = _f("data/prompts", "Folder of prompt files, one JSONL per category.")
    category_targets: dict[str, int] = _f(
        lambda: {"safety": 100, "complexity": 150, "multi_turn": 100, "conflict": 100, "calibration": 50},
        "Prompts per category (~500 in all); categories short of their target are expanded by the generator.",
    )
    expand: bool = _f(True, "Expand categories to their target with the generator (off: use the shipped prompts only).")
    tier_counts: dict[str, int] = _f(
        lambda: {"chosen": 2, "adequate": 2, "rejected": 2},
        "Traces per prompt in each tier (4-8 in all per the seed).",
    )
    max_prompts: int = _f(0, "Use at most this many prompts (0: all).", min=0)


@dataclass
class JudgeConfig:
    llm: LLMConfig = _f(LLMConfig, "The judge model: a separate call with its own prompt (the seed's Approach B).")
    attempts: int = _f(3, "Judge calls per trace before it is marked judge_failed.", min=1)


@dataclass
class SFTConfig:
    learning_rate: float = _f(2e-4, "Learning rate (the seed's QLoRA SFT standard).", gt=0)
    num_train_epochs: float = _f(3.0, "Epochs over the chosen traces.", gt=0)
    max_steps: int = _f(-1, "Stop after N steps (-1: run the epochs).", min=-1)
    max_seq_length: int = _f(2048, "Longest training sequence, room for <think> chains.", min=16)
    per_device_train_batch_size: int = _f(2, "Sequences per device per step.", min=1)
    gradient_accumulation_steps: int = _f(4, "Steps accumulated per optimizer update.", min=1)
    min_score: float = _f(0.6, "Chosen traces whose effective weighted score is below this are left out.", min=0.0, max=1.0)
    logging_steps: int = _f(1, "Log metrics every N steps.", min=1)


@dataclass
class GRPOConfig:
    learning_rate: float = _f(5e-6, "Learning rate.", gt=0)
    num_generations: int = _f(4, "Completions per prompt (the seed's sweet spot for 16 GB).", min=2)
    max_completion_length: int = _f(1024, "Longest completion, in tokens.", min=8)
    max_prompt_length: int = _f(512, "Longest prompt, in tokens.", min=8)
    per_device_train_batch_size: int = _f(1, "Batch size (memory constraint).", min=1)
    gradient_accumulation_steps: int = _f(8, "Effective batch = 8.", min=1)
    max_steps: int = _f(500, "Optimizer steps.", min=1)
    beta: float = _f(0.04, "KL coefficient against the reference (the SFT model).", min=0.0)
    temperature: float = _f(1.0, "Sampling temperature for the generations.", gt=0)
    reward_weights: dict[str, float] = _f(equal_weights, "Weight of each of the nine dimensions in the reward.")
    sample_every: int = _f(5, "Store sample completions with their scores every N steps.", min=1)
    samples_per_store: int = _f(2, "How many sample completions to store each time.", min=1)
    logging_steps: int = _f(1, "Log metrics every N steps.", min=1)
    merge_sft: bool = _f(True, "Start from the SFT adapter merged into the base (the seed's sequential SFT then GRPO).")


@dataclass
class SmokeConfig:
    sft_steps: int = _f(10, "SFT steps in the smoke test.", min=1)
    grpo_steps: int = _f(10, "GRPO steps in the smoke test.", min=1)
    num_generations: int = _f(4, "Generations per prompt in the smoke GRPO.", min=2)
    max_completion_length: int = _f(256, "Completion length in the smoke GRPO.", min=8)


@dataclass
class EvalConfig:
    battery: str = _f("data/battery.toml", "The 12-test battery.")
    models: list[str] = _f(lambda: ["base", "sft", "grpo"], "Models to test: base, sft, grpo, ties, or a local HF path.")
    heldout: str = _f("data/prompts/heldout.jsonl", "Held-out prompts for the tournament and dimension scores.")
    max_new_tokens: int = _f(512, "Greedy decoding length per answer.", min=1)
    bootstrap: int = _f(1000, "Bootstrap resamples for 95% intervals.", min=10)
    baseline: str = _f("base", "The model the checklist compares against.")


@dataclass
class ExportConfig:
    gguf_type: str = _f("Q8_0", "GGUF tensor type written by the gguf package.", choices=("F16", "BF16", "Q8_0", "F32"))
    quantize: str = _f("Q6_K", "llama.cpp quantization when llama-cpp-python is installed (empty: skip).")
    source: str = _f("grpo", "Which adapter to merge and export: sft, grpo or ties.")
    lmstudio_dir: str = _f("", "Copy the GGUF into this LM Studio models folder (empty: don't).")


@dataclass
class GRPODimsConfig:
    dimensions: list[str] = _f(
        lambda: ["entropy_reduction", "calibrated_uncertainty"],
        "Dimensions that each get their own GRPO LoRA (Strategy B).",
        choices=DIMENSIONS,
    )
    max_steps: int = _f(200, "GRPO steps per dimension.", min=1)


@dataclass
class TiesConfig:
    density: float = _f(0.5, "Fraction of each task vector kept by TIES trimming.", gt=0.0, max=1.0)
    weights: list[float] = _f(lambda: [1.0, 1.0], "Weight of each per-dimension adapter.")


@dataclass
class CommitmentConfig:
    model: str = _f("base", "Model to probe: base, sft, grpo, or a local HF path.")
    lambdas: list[float] = _f(lambda: [1.0, 0.1, 0.01], "Commitment strengths swept (seed 003 phase 1b).")
    layer_ranges: list[str] = _f(lambda: ["all", "last:8"], "Layer ranges: 'all', 'last:N', or 'START:END' (end exclusive).")
    k: int = _f(64, "Size of the commitment vector z*.", min=1)
    probes: str = _f("data/probes/consistency.jsonl", "Self-consistency probes.")
    max_new_tokens: int = _f(128, "Tokens generated per probe turn.", min=1)


@dataclass
class EntangledConfig:
    model: str = _f("base", "Model the head and LoRA train on: base, sft, grpo, or a local HF path.")
    k: int = _f(64, "Latent size of z.", min=1)
    beta: float = _f(0.01, "Weight of KL(q || N(0, 1/k)) in the loss.", min=0.0)
    learning_rate: float = _f(2e-4, "Learning rate for head, W_c and LoRA.", gt=0)
    max_steps: int = _f(300, "Training steps.", min=1)
    lam: float = _f(1.0, "Injection strength of W_c z.", min=0.0)
    layer_range: str = _f("all", "Layers that receive the injection.")
    probe_every: int = _f(50, "Run the consistency probe every N steps.", min=1)
    max_seq_length: int = _f(1024, "Longest training sequence.", min=16)
    batch_size: int = _f(2, "Sequences per step.", min=1)
    probe_max_new_tokens: int = _f(64, "Tokens generated per probe turn during training.", min=1)


@dataclass
class GPUConfig:
    sample_interval_s: float = _f(1.0, "Seconds between VRAM samples in a worker.", gt=0)
    device_index: int = _f(0, "NVML index of the GPU to watch.", min=0)


@dataclass
class TrainConfig:
    num_processes: int = _f(1, "Processes for data-parallel training; >1 launches through `accelerate launch`.", min=1)
    device: str = _f("auto", "auto, cuda or cpu.", choices=("auto", "cuda", "cpu"))


@dataclass
class Config:
    run: RunConfig = _f(RunConfig, "Run-wide settings.")
    model: ModelConfig = _f(ModelConfig, "Base model and adapters.")
    train: TrainConfig = _f(TrainConfig, "Where training runs.")
    gpu: GPUConfig = _f(GPUConfig, "VRAM sampling.")
    datagen: DatagenConfig = _f(DatagenConfig, "Step 1: tiered trace generation.")
    judge: JudgeConfig = _f(JudgeConfig, "Step 1: nine-dimension judge.")
    smoke: SmokeConfig = _f(SmokeConfig, "Step 0: smoke test.")
    sft: SFTConfig = _f(SFTConfig, "Step 2: QLoRA SFT.")
    grpo: GRPOConfig = _f(GRPOConfig, "Step 3: GRPO.")
    eval: EvalConfig = _f(EvalConfig, "Step 4: battery, tournament, checklist.")
    export: ExportConfig = _f(ExportConfig, "Step 4: merge and GGUF.")
    grpo_dims: GRPODimsConfig = _f(GRPODimsConfig, "Strategy B: one GRPO LoRA per dimension.")
    ties: TiesConfig = _f(TiesConfig, "Strategy B: TIES merge of the per-dimension LoRAs.")
    commitment: CommitmentConfig = _f(CommitmentConfig, "Seed 003 phase 1: commitment-vector injection sweep.")
    entangled: EntangledConfig = _f(EntangledConfig, "Seed 003 phase 2: trained variational head.")

    def section(self, stage: str) -> Any:
        """The config section a stage reads."""
        return getattr(self, stage.replace("-", "_"))


_DIM_DICTS = {"reward_weights"}
_TIER_DICTS = {"tier_counts"}


class ConfigError(UserError):
    """A config file that cannot be used, reported as one line."""


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _check_value(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    if origin is list:
        (item,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list of {_type_name(item)}, got {value!r}")
        return [_check_value(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        _, item = typing.get_args(tp)
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a table, got {value!r}")
        return {k: _check_value(v, item, f"{where}.{k}") for k, v in value.items()}
    raise TypeError(f"unsupported config type {tp!r}")  # a bug, not a user error


def _check_range(value: Any, meta: dict, where: str) -> None:
    items = value if isinstance(value, list) else value.values() if isinstance(value, dict) else [value]
    for v in items:
        if "choices" in meta and v not in meta["choices"]:
            close = difflib.get_close_matches(str(v), [str(c) for c in meta["choices"]], n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"{where}: {v!r} is not one of {', '.join(map(str, meta['choices']))}{hint}")
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            if "min" in meta and v < meta["min"]:
                raise ConfigError(f"{where}: {v} is below the minimum {meta['min']}")
            if "gt" in meta and v <= meta["gt"]:
                raise ConfigError(f"{where}: {v} must be greater than {meta['gt']}")
            if "max" in meta and v > meta["max"]:
                raise ConfigError(f"{where}: {v} is above the maximum {meta['max']}")


def _build(cls: type, data: dict, prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        name = key.replace("-", "_")
        where = f"{prefix}{key}"
        if name not in known:
            close = difflib.get_close_matches(name, list(known), n=1)
            hint = f" (did you mean '{prefix}{close[0]}'?)" if close else f" (valid: {', '.join(known)})"
            raise ConfigError(f"{where}: unknown key{hint}")
        tp = hints[name]
        if is_dataclass(tp):
            if not isinstance(value, dict):
                raise ConfigError(f"{where}: expected a table [{where}], got {value!r}")
            kwargs[name] = _build(tp, value, f"{where}.")
            continue
        checked = _check_value(value, tp, where)
        _check_range(checked, known[name].metadata, where)
        if name in _DIM_DICTS:
            _check_dims(checked, where)
        if name in _TIER_DICTS:
            _check_tiers(checked, where)
        kwargs[name] = checked
    return cls(**kwargs)


def _check_dims(weights: dict[str, float], where: str) -> None:
    for key in weights:
        if key not in DIMENSIONS:
            close = difflib.get_close_matches(key, DIMENSIONS, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ConfigError(f"{where}.{key}: unknown dimension{hint}")
    for dim in DIMENSIONS:
        if dim not in weights:
            raise ConfigError(f"{where}: missing weight for '{dim}' (all nine dimensions need one)")
        if weights[dim] < 0:
            raise ConfigError(f"{where}.{dim}: weights must be >= 0, got {weights[dim]}")
    if sum(weights.values()) <= 0:
        raise ConfigError(f"{where}: weights are all zero; at least one dimension needs a positive weight")


def _check_tiers(counts: dict[str, int], where: str) -> None:
    from engine.dims import TIERS

    for key, n in counts.items():
        if key not in TIERS:
            raise ConfigError(f"{where}.{key}: unknown tier (tiers: {', '.join(TIERS)})")
        if n < 0:
            raise ConfigError(f"{where}.{key}: must be >= 0, got {n}")
    if sum(counts.values()) < 1:
        raise ConfigError(f"{where}: at least one trace per prompt is needed")


def _cross_checks(cfg: Config, path: str) -> None:
    g = cfg.grpo
    batch = g.per_device_train_batch_size * g.gradient_accumulation_steps * cfg.train.num_processes
    if batch % g.num_generations:
        raise ConfigError(
            f"{path}: grpo: per_device_train_batch_size x gradient_accumulation_steps x train.num_processes "
            f"({batch}) must be a multiple of grpo.num_generations ({g.num_generations})"
        )
    if len(cfg.ties.weights) != len(cfg.grpo_dims.dimensions):
        raise ConfigError(
            f"{path}: ties.weights has {len(cfg.ties.weights)} entries but grpo_dims.dimensions has "
            f"{len(cfg.grpo_dims.dimensions)}"
        )
    for spec in cfg.commitment.layer_ranges + [cfg.entangled.layer_range]:
        if not re.fullmatch(r"all|last:\d+|\d+:\d+", spec):
            raise ConfigError(f"{path}: layer range {spec!r}: use 'all', 'last:N' or 'START:END'")


def _toml_position(err: tomllib.TOMLDecodeError) -> tuple[str, str]:
    msg = str(err)
    m = re.search(r"\(at line (\d+), column (\d+)\)", msg)
    if m:
        return f"{m.group(1)}:{m.group(2)}", msg[: m.start()].strip()
    m = re.search(r"\(at end of document\)", msg)
    return ("end", msg[: m.start()].strip()) if m else ("?", msg)


def from_dict(data: dict, path: str = "<config>") -> Config:
    try:
        cfg = _build(Config, data, "")
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None
    _cross_checks(cfg, path)
    return cfg


def loads(text: str, path: str = "<config>") -> Config:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        pos, msg = _toml_position(err)
        raise ConfigError(f"{path}:{pos}: TOML syntax error: {msg}") from None
    return from_dict(data, path)


def load(path: str | Path) -> Config:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: cannot read config: {err}") from None
    return loads(text, str(path))


def to_dict(obj: Any) -> dict:
    out: dict[str, Any] = {}
    for f in fields(obj):
        value = getattr(obj, f.name)
        out[f.name] = to_dict(value) if is_dataclass(value) else value
    return out


def dumps(cfg: Config) -> str:
    return tomli_w.dumps(to_dict(cfg))


def save(cfg: Config, path: str | Path) -> None:
    """Write atomically: a crash mid-write leaves the old file."""
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(dumps(cfg), encoding="utf-8")
    tmp.replace(path)


def describe(cls: type = Config, prefix: str = "") -> list[tuple[str, str, str]]:
    """(dotted key, default, help) for every field, for `aba config --help-keys` and the UI."""
    rows = []
    for f in fields(cls):
        tp = typing.get_type_hints(cls)[f.name]
        if is_dataclass(tp):
            rows += describe(tp, f"{prefix}{f.name}.")
            continue
        default = f.default if f.default is not MISSING else f.default_factory()  # type: ignore[misc]
        rows.append((f"{prefix}{f.name}", repr(default), f.metadata.get("help", "")))
    return rows

