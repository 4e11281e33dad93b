"""The config's sections: typed dataclasses, one per stage or concern, with a default and help on every field."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from engine.dims import DIMENSIONS, equal_weights
from engine.registry import STAGES


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
    report_to: list[str] = _f(
        list, "Experiment trackers every training stage logs to through TRL (none by default); the run's name and "
        "frozen config become the tracker's run name and config.", choices=("tensorboard", "trackio", "wandb"))
    torch_threads: int = _f(
        0, "CPU threads each stage worker gives torch (and OpenMP/MKL); 0 = its share: the usable cores divided among "
        "the stage's data-parallel ranks, so workers and the panel do not oversubscribe the machine.", min=0)


@dataclass
class ModelConfig:
    base: str = _f(
        "mlabonne/Qwen3-8B-abliterated",
        "Base model: a HF hub id, a local folder, or 'demo:tiny-qwen3' for the built-in tiny model.",
    )
    backend: str = _f(
        "auto",
        "auto: Unsloth where it imports and CUDA exists, else standard; unsloth (its CPU backend without CUDA); "
        "standard (HF transformers + PEFT).",
        choices=("auto", "unsloth", "standard"),
    )
    load_in_4bit: bool = _f(True, "QLoRA: load the base in 4-bit NF4 through bitsandbytes (CUDA or CPU, both backends).")
    dtype: str = _f("bfloat16", "Compute dtype on GPU (CPU always trains in float32).", choices=("bfloat16", "float16", "float32"))
    lora_r: int = _f(16, "LoRA rank.", min=1)
    lora_alpha: int = _f(32, "LoRA alpha.", min=1)
    lora_dropout: float = _f(0.0, "LoRA dropout.", min=0.0, max=1.0)
    target_modules: list[str] = _f(
        lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        "Module names that receive LoRA adapters.",
    )
    gradient_checkpointing: bool = _f(True, "Trade compute for VRAM headroom (the seed keeps it on for SFT and GRPO).")
    fast_inference: bool = _f(
        False, "Unsloth backend: load with fast_inference (vLLM inside Unsloth, sharing the training weights) so GRPO "
        "generates through it. Not yet verified on a GPU here.")
    gpu_memory_utilization: float = _f(
        0.6, "Unsloth fast_inference: share of the card vLLM may use (weights included; the estimate adds what is "
        "beyond the weights). Not yet verified on a GPU here.", gt=0.0, max=1.0)
    unsloth_standby: bool = _f(
        False, "Unsloth fast_inference: standby mode (UNSLOTH_VLLM_STANDBY=1), vLLM's memory lent to training between "
        "generations. Not yet verified on a GPU here.")


class LLMBackendName(StrEnum):
    """The LLM backends `[*.llm] backend` names (engine.llm.make_backend builds each)."""

    VERTEX = "vertex"
    VERTEX_BATCH = "vertex-batch"
    OPENAI = "openai"
    LOCAL = "local"
    OFFLINE = "offline"


@dataclass
class LLMConfig:
    backend: str = _f(
        "vertex",
        "vertex (Gemini on Vertex AI), vertex-batch (Vertex batch prediction), openai (any OpenAI-compatible server), "
        "local (a transformers model in the worker), offline (shipped examples + heuristic judge).",
        choices=tuple(b.value for b in LLMBackendName),
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
    max_prompt_chars: int = _f(
        20_000, "Longest prompt accepted from a prompt file, in characters of all its turns (0: no limit); the model's"
        " own limit (grpo.max_prompt_length tokens) is applied later by cutting old turns.", min=0)
    long_prompts: str = _f(
        "refuse", "A prompt longer than max_prompt_chars: 'refuse' stops the run before it starts (file:line), 'cut'"
        " keeps its last max_prompt_chars characters with a warning per prompt.", choices=("refuse", "cut"))


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
    reuse: bool = _f(True, "Reuse an SFT adapter trained by another run in this runs folder on identical SFT inputs "
                     "(model, sft and train sections, seed, the training rows): a reward-weight sweep trains SFT once.")


@dataclass
class GRPOConfig:
    learning_rate: float = _f(5e-6, "Learning rate.", gt=0)
    num_generations: int = _f(4, "Completions per prompt (the seed's sweet spot for 16 GB).", min=2)
    max_completion_length: int = _f(1024, "Longest completion, in tokens.", min=8)
    max_prompt_length: int = _f(
        512, "Longest prompt, in tokens of its chat-templated form: longer prompts lose their oldest turns, then the "
        "start of their first kept turn (TRL 1.x has no such limit, so the grpo stage cuts them before training).",
        min=8)
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
    use_vllm: bool = _f(
        False, "Generate completions with TRL's vLLM in colocate mode (vllm_mode='colocate'; needs CUDA and vllm). "
        "Not yet verified on a GPU here.")
    vllm_gpu_memory_utilization: float = _f(
        0.3, "Share of the card colocated vLLM reserves for its own weights and KV cache (the VRAM estimate adds it). "
        "Not yet verified on a GPU here.", gt=0.0, max=1.0)
    judge_max_failed_share: float = _f(
        0.2, "Pause the stage (checkpoint, then fail with the reason) when more than this share of judge calls failed "
        "after their retries over the last grpo.judge_failure_window steps; failed completions get no reward.",
        min=0.0, max=1.0,
    )
    judge_failure_window: int = _f(10, "Steps over which grpo.judge_max_failed_share is measured.", min=1)
    judge_cache_size: int = _f(4096, "Judged completions kept in memory (least recently used dropped first).", min=1)


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
class HealthConfig:
    enabled: bool = _f(True, "Run the GRPO health rules on every logged step and write `health` events (aba health).")
    window: int = _f(5, "Logged steps averaged by the level rules: zero-std groups, entropy, KL, clipping, judge failures, saturation.", min=1)
    trend_window: int = _f(20, "Logged steps the trend rules (length hacking, component divergence) compare, later half against earlier half.", min=2)
    reward_window: int = _f(20, "Reward not rising: steps after which the reward must be rising (Axolotl's guide: within 20 steps).", min=2)
    reward_min_gain: float = _f(0.0, "Reward not rising: fires when the later half of the window gains this much or less over the earlier half.")
    reward_floor: float = _f(0.15, "Reward not rising: also fires when the later half's mean reward stays below this (Axolotl: 0.15).")
    zero_std_max: float = _f(0.8, "Zero-std groups: fires when more than this share of groups give all completions one reward (Axolotl: 0.8).", min=0.0, max=1.0)
    entropy_low: float = _f(0.05, "Entropy low (warn): mean token entropy below this (Axolotl's healthy band starts at 0.05).", min=0.0)
    entropy_collapse: float = _f(0.01, "Entropy collapse (alarm): mean token entropy below this (Axolotl: 0.01).", min=0.0)
    kl_max: float = _f(2.0, "KL divergence (alarm): mean KL to the reference above this (Axolotl: above 2 means divergence).", min=0.0)
    clip_max: float = _f(0.1, "Clipping (warn): mean clip_ratio/region_mean above this (Axolotl: keep it below 0.1).", min=0.0, max=1.0)
    length_rise: float = _f(0.1, "Length hacking: the later half's mean length exceeds the earlier half's by this share of max_completion_length.", min=0.0)
    length_near_max: float = _f(0.8, "Length hacking: and reaches this share of max_completion_length while completions/clipped_ratio rises.", min=0.0, max=1.0)
    divergence_delta: float = _f(0.05, "Component divergence: a weighted component rises by more than this while the total falls or another falls by more than this.", min=0.0)
    judge_failed_max: float = _f(0.1, "Judge failures (alarm): mean judge/failed_share above this.", min=0.0, max=1.0)
    vram_min_headroom: float = _f(0.05, "VRAM headroom (alarm): free GPU memory below this share of the total.", min=0.0, max=1.0)
    audit: bool = _f(True, "Audit the judge before trusting it (degenerate completions, test-retest, position bias) in the judge and grpo stages.")
    audit_prompts: int = _f(3, "Judge audit: prompts each degenerate completion is scored against.", min=1)
    audit_retest: int = _f(6, "Judge audit: traces re-judged for test-retest agreement.", min=0)
    audit_pairs: int = _f(4, "Judge audit: chosen/rejected pairs judged in both orders for position bias.", min=0)


@dataclass
class DataConfig:
    from_run: str = _f("", "Take prompts, traces, judge scores and human edits from another run (its id) or from a "
                           ".jsonl/.csv file (`aba export-data` format), copied into the new run when it is created; "
                           "empty: this run generates its own (datagen, judge).")


@dataclass
class Config:
    run: RunConfig = _f(RunConfig, "Run-wide settings.")
    model: ModelConfig = _f(ModelConfig, "Base model and adapters.")
    train: TrainConfig = _f(TrainConfig, "Where training runs.")
    gpu: GPUConfig = _f(GPUConfig, "VRAM sampling.")
    data: DataConfig = _f(DataConfig, "Where the run's data comes from (generate once, train many).")
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
    health: HealthConfig = _f(HealthConfig, "The GRPO doctor: health-rule thresholds and the judge audit.")
