"""The peak-VRAM estimate of a LoRA/QLoRA training step, from the model's shape and the batch TRL really runs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

GB = 1024**3
# bitsandbytes NF4 with double quantization: 4 bits + an 8-bit absmax per 64 weights + an fp32 scale per 256 blocks.
NF4_BYTES = 0.5 + 1 / 64 + 4 / (64 * 256)
LORA_BYTES = 16  # fp32 weight, its gradient and AdamW's two moments
TARGET_CARD_GB = 16.0  # the card this pipeline is sized for, used for a vLLM share when no GPU is visible


@dataclass
class Batch:
    """What one device holds in one step, as TRL runs it (read from trainer.args, after any backend patching).

    rows: sequences per forward/backward: per_device_train_batch_size, which in GRPO counts completions;
    prompt_len + completion_len: the longest sequence (SFT: max_length, completion_len 0);
    loss_len: positions whose logits are computed for the loss (GRPO: the completion; SFT: the sequence);
    generations: completions generated at once on this device (GRPO: per_device x steps_per_generation; SFT: 0).
    """

    rows: int
    prompt_len: int
    completion_len: int = 0
    loss_len: int | None = None
    generations: int = 0

    @property
    def seq_len(self) -> int:
        return self.prompt_len + self.completion_len


@dataclass
class VramEstimate:
    weights_gb: float
    lora_gb: float
    activations_gb: float
    logits_gb: float
    kv_cache_gb: float
    vllm_gb: float
    overhead_gb: float

    @property
    def total_gb(self) -> float:
        return (self.weights_gb + self.lora_gb + self.activations_gb + self.logits_gb + self.kv_cache_gb
                + self.vllm_gb + self.overhead_gb)

    def as_dict(self) -> dict[str, float]:
        d = {k: round(v, 3) for k, v in self.__dict__.items()}
        d["total_gb"] = round(self.total_gb, 3)
        return d


def _shapes(model_cfg: Any) -> dict[str, tuple[int, int]]:
    """(in, out) features of each LoRA-targetable linear layer of a Llama/Qwen-style block."""
    h = model_cfg.hidden_size
    heads = model_cfg.num_attention_heads
    kv = getattr(model_cfg, "num_key_value_heads", None) or heads
    hd = getattr(model_cfg, "head_dim", None) or h // heads
    inter = model_cfg.intermediate_size
    return {"q_proj": (h, heads * hd), "k_proj": (h, kv * hd), "v_proj": (h, kv * hd), "o_proj": (heads * hd, h),
            "gate_proj": (h, inter), "up_proj": (h, inter), "down_proj": (inter, h)}


def estimate_vram(model_cfg: Any, *, bits: int, lora_r: int, target_modules: list[str], batch: Batch,
                  gradient_checkpointing: bool, vllm: str = "", vllm_share: float = 0.0, card_gb: float | None = None,
                  cuda_overhead_gb: float = 0.6) -> VramEstimate:
    """Peak VRAM of one LoRA training step. The formula (README "Training for real (GPU)") term by term:

    weights: every block linear at `bits` (NF4 adds its absmax scales), embeddings and LM head in 16-bit;
    lora: r x (in + out) per target per layer, 16 bytes each (fp32 weight, grad, two Adam moments);
    activations: rows x seq tokens; with checkpointing one bf16 hidden vector per layer is kept plus one layer's
      working set (6 hidden + 3 intermediate vectors) during recompute; without it, that working set per layer;
    logits: rows x loss_len x vocab in fp32, twice (the logits and their gradient);
    kv cache: generations x seq tokens x 2 (K, V) x layers x kv_heads x head_dim in bf16 (transformers' generate);
    vllm: with TRL's colocated vLLM ("trl") its own 16-bit copy and KV pool take vllm_share of the card; with
      Unsloth's fast_inference ("unsloth") vLLM shares the training weights, so its share less the weights;
      either way generation's KV lives in that share and the kv term is 0;
    overhead: the CUDA context and allocator slack.
    """
    shapes = _shapes(model_cfg)
    layers = model_cfg.num_hidden_layers
    h, inter, vocab = model_cfg.hidden_size, model_cfg.intermediate_size, model_cfg.vocab_size
    block = layers * sum(i * o for i, o in shapes.values())
    embed = vocab * h * (1 if getattr(model_cfg, "tie_word_embeddings", False) else 2)
    per_param = NF4_BYTES if bits == 4 else bits / 8
    weights = block * per_param + embed * 2
    unknown = [t for t in target_modules if t not in shapes]
    lora_params = layers * sum(lora_r * sum(shapes[t]) for t in target_modules if t in shapes)
    lora_params += layers * len(unknown) * lora_r * 2 * max(h, inter)  # an unknown target: the widest linear
    tokens = batch.rows * batch.seq_len
    working = tokens * (6 * h + 3 * inter) * 2
    act = tokens * h * 2 * layers + working if gradient_checkpointing else working * layers
    loss_len = batch.seq_len if batch.loss_len is None else batch.loss_len
    logits = batch.rows * loss_len * vocab * 4 * 2
    kv_heads = getattr(model_cfg, "num_key_value_heads", None) or model_cfg.num_attention_heads
    hd = getattr(model_cfg, "head_dim", None) or h // model_cfg.num_attention_heads
    kv_cache = batch.generations * batch.seq_len * 2 * layers * kv_heads * hd * 2
    vllm_bytes = 0.0
    if vllm:
        share = vllm_share * (card_gb or TARGET_CARD_GB) * GB
        vllm_bytes = max(share - weights, 0.0) if vllm == "unsloth" else share
        kv_cache = 0
    return VramEstimate(weights / GB, lora_params * LORA_BYTES / GB, act / GB, logits / GB, kv_cache / GB,
                        vllm_bytes / GB, cuda_overhead_gb)


def batch_from_args(args: Any, *, prompt_len: int, world_size: int = 1) -> Batch:
    """The batch one device runs, from a trainer's `args` after the trainer (and any backend patch) built them.

    GRPO: TRL's per_device_train_batch_size counts completions, and it generates per_device x steps_per_generation
    completions at once (steps_per_generation defaults to gradient_accumulation_steps). Unsloth's GRPOConfig may
    have raised the batch to num_generations, which is why this reads the built args, never the config.
    SFT: per_device_train_batch_size sequences of max_length tokens.
    """
    rows = int(args.per_device_train_batch_size)
    if hasattr(args, "num_generations"):
        completion = int(args.max_completion_length)
        per_gen = getattr(args, "generation_batch_size", None)
        generations = int(per_gen) // max(world_size, 1) if per_gen else rows * int(
            getattr(args, "steps_per_generation", None) or args.gradient_accumulation_steps)
        return Batch(rows=rows, prompt_len=prompt_len, completion_len=completion, loss_len=completion,
                     generations=generations)
    return Batch(rows=rows, prompt_len=int(getattr(args, "max_length", None) or prompt_len))


CHECKPOINTS_KEPT = 2  # trainer.common_args: save_total_limit


def estimate_disk(model_cfg: Any, *, lora_r: int, target_modules: list[str], stage: str) -> int:
    """Bytes a stage writes at most: a training stage its checkpoints (LoRA weights in fp32 plus two Adam moments,
    CHECKPOINTS_KEPT of them, and the final adapter); export the merged 16-bit model and a GGUF of it (16-bit at
    most). Other stages: 0."""
    shapes = _shapes(model_cfg)
    layers = model_cfg.num_hidden_layers
    lora = layers * sum(lora_r * sum(shapes[t]) for t in target_modules if t in shapes)
    if stage in ("sft", "grpo", "grpo_dims", "entangled"):
        return int(lora * 4 * 3 * CHECKPOINTS_KEPT + lora * 4) + (1 << 20)
    if stage == "export":
        h, vocab = model_cfg.hidden_size, model_cfg.vocab_size
        block = layers * sum(i * o for i, o in shapes.values())
        embed = vocab * h * (1 if getattr(model_cfg, "tie_word_embeddings", False) else 2)
        return int((block + embed) * 2 * 2) + (1 << 20)
    return 0
