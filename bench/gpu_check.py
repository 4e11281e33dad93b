"""One-shot GPU check (at most ~8 minutes on a CUDA machine): the person's stack on a stand-in for their 16 GB card.

    python bench/gpu_check.py            # on a CUDA machine
    python bench/gpu_check.py --dry-run  # anywhere: the plan, the model's shape and the estimates, nothing trained

What it does on CUDA:
1. builds a random-weight model with Qwen3-8B's exact config on the GPU (no download; the demo's tokenizer) and
   saves it as safetensors shards;
2. runs `aba smoke` on it twice, on unsloth 4-bit and on standard 4-bit (bitsandbytes NF4), with the seed's GRPO
   shape (4 generations x 1,024 tokens, batch 1 x accumulation 8), each worker capped at 16 GiB through
   ABA_CUDA_MEMORY_CAP_GB (torch.cuda.set_per_process_memory_fraction);
3. samples NVML every 0.5 s meanwhile (this script's own sampler, the whole card) beside the worker's own;
4. prints, per backend: peak VRAM (torch and NVML) against the estimate for SFT and GRPO, median step times, the
   verdict, and every library version.
Without CUDA it refuses in one line (exit 2); --dry-run runs the plan (config, shape, estimates, commands) on CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CAP_GIB = 16
# Qwen3-8B's config.json (Qwen/Qwen3-8B), field for field; 8,190,735,360 parameters.
QWEN3_8B = dict(
    vocab_size=151936, hidden_size=4096, intermediate_size=12288, num_hidden_layers=36, num_attention_heads=32,
    num_key_value_heads=8, head_dim=128, max_position_embeddings=40960, max_window_layers=36, rope_theta=1_000_000.0,
    rms_norm_eps=1e-6, tie_word_embeddings=False, attention_bias=False, attention_dropout=0.0, hidden_act="silu",
    initializer_range=0.02, use_sliding_window=False, sliding_window=None, bos_token_id=151643, eos_token_id=151645,
)
# The seed's GRPO shape (data/configs/qwen3-8b.toml) and a smoke short enough for the 8-minute budget.
SEED_SHAPE = {
    "grpo.num_generations": 4, "smoke.num_generations": 4, "grpo.max_completion_length": 1024,
    "smoke.max_completion_length": 1024, "grpo.per_device_train_batch_size": 1, "grpo.gradient_accumulation_steps": 8,
    "grpo.max_prompt_length": 512, "sft.max_seq_length": 2048, "sft.per_device_train_batch_size": 1,
    "sft.gradient_accumulation_steps": 4, "model.gradient_checkpointing": True, "model.dtype": "bfloat16",
    "train.device": "cuda", "model.load_in_4bit": True, "model.lora_r": 16, "model.lora_alpha": 32,
}
BACKENDS = ("unsloth", "standard")


def qwen3_8b_config(vocab_size: int | None = None):
    from transformers import Qwen3Config

    fields = dict(QWEN3_8B)
    if vocab_size:
        fields["vocab_size"] = vocab_size
    return Qwen3Config(**fields)


def count_params(config) -> int:
    """Parameters of the model this config builds, counted on the meta device (no memory)."""
    import torch
    from transformers import Qwen3ForCausalLM

    with torch.device("meta"):
        model = Qwen3ForCausalLM(config)
    return sum(p.numel() for p in model.parameters())


def plan(args: argparse.Namespace, model_dir: Path) -> list[tuple[str, list[str]]]:
    """(backend, the `aba smoke` command line) for each backend checked."""
    sets = {**SEED_SHAPE, "model.base": str(model_dir), "smoke.sft_steps": args.sft_steps,
            "smoke.grpo_steps": args.grpo_steps, "run.checkpoint_steps": 1000}
    out = []
    for backend in args.backends:
        cmd = [sys.executable, "-m", "engine.cli", "smoke", str(ROOT / "data" / "configs" / "demo.toml")]
        for key, value in {**sets, "model.backend": backend}.items():
            text = str(value).lower() if isinstance(value, bool) else str(value)
            cmd += ["--set", f"{key}={text}"]
        out.append((backend, cmd))
    return out


def estimates(config, sft_rows: int = 1) -> dict[str, float]:
    """The pipeline's own estimate (engine.training.estimate) for the seed's SFT and GRPO batches, before launch."""
    from engine.training.estimate import Batch, estimate_vram

    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    sft = estimate_vram(config, bits=4, lora_r=16, target_modules=targets, gradient_checkpointing=True,
                        batch=Batch(rows=sft_rows, prompt_len=SEED_SHAPE["sft.max_seq_length"]))
    grpo = estimate_vram(config, bits=4, lora_r=16, target_modules=targets, gradient_checkpointing=True,
                         batch=Batch(rows=1, prompt_len=SEED_SHAPE["grpo.max_prompt_length"], completion_len=1024,
                                     loss_len=1024, generations=8))
    return {"sft_gb": sft.total_gb, "grpo_gb": grpo.total_gb}


def versions() -> dict[str, str]:
    from engine.stages.smoke import library_versions

    out = library_versions()
    out["python"] = sys.version.split()[0]
    try:
        import torch

        out["cuda (torch)"] = torch.version.cuda or "-"
        if torch.cuda.is_available():
            out["gpu"] = torch.cuda.get_device_name(0)
    except Exception:  # noqa: S110 - versions are informative only
        pass
    try:
        import pynvml

        pynvml.nvmlInit()
        driver = pynvml.nvmlSystemGetDriverVersion()
        out["nvidia driver"] = driver.decode() if isinstance(driver, bytes) else driver
    except Exception:
        out["nvidia driver"] = "-"
    return out


class NvmlPeak(threading.Thread):
    """The card's used memory every `interval` s (NVML); `peak_gb` is the highest reading since start."""

    def __init__(self, interval: float = 0.5):
        super().__init__(daemon=True)
        import pynvml

        pynvml.nvmlInit()
        self._nvml, self._handle = pynvml, pynvml.nvmlDeviceGetHandleByIndex(0)
        self.interval, self.peak_gb, self.samples = interval, 0.0, 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            used = self._nvml.nvmlDeviceGetMemoryInfo(self._handle).used / 1024**3
            self.peak_gb, self.samples = max(self.peak_gb, used), self.samples + 1
            self._stop_event.wait(self.interval)

    def reset(self) -> None:
        self.peak_gb = 0.0

    def stop(self) -> None:
        self._stop_event.set()


def build_model(dest: Path) -> tuple[int, float]:
    """Random weights with Qwen3-8B's config, built on the GPU in bfloat16 and saved as safetensors shards."""
    import torch
    from transformers import Qwen3ForCausalLM

    from engine.models.loading import load_tokenizer

    t0 = time.perf_counter()
    tok = load_tokenizer("demo:tiny-qwen3")
    config = qwen3_8b_config()
    config.eos_token_id, config.pad_token_id = tok.eos_token_id, tok.pad_token_id  # ids inside the demo vocabulary
    torch.manual_seed(3407)
    with torch.device("cuda"):
        model = Qwen3ForCausalLM(config).to(torch.bfloat16)
    params = sum(p.numel() for p in model.parameters())
    model.save_pretrained(dest, max_shard_size="4GB", safe_serialization=True)
    tok.save_pretrained(dest)
    del model
    torch.cuda.empty_cache()
    return params, time.perf_counter() - t0


def _gb(value) -> str:
    return "-" if value is None else f"{value:.2f}"


def _s(value) -> str:
    return "-" if value is None else f"{value:.1f}"


def print_report(rows: list[dict], est: dict[str, float], vers: dict[str, str]) -> None:
    print(f"\n== gpu_check: Qwen3-8B shape, 4-bit NF4, {CAP_GIB} GiB cap; estimate SFT {est['sft_gb']:.2f} GB, "
          f"GRPO {est['grpo_gb']:.2f} GB ==")
    head = ("backend", "4bit", "SFT est", "GRPO est", "torch peak", "NVML peak", "card peak", "SFT s/step",
            "GRPO s/step", "wall s", "verdict")
    print(" | ".join(head))
    for r in rows:
        rep = r.get("report") or {}
        verdict = "PASS" if rep.get("passed") else "FAIL: " + "; ".join(rep.get("problems") or [r.get("error", "no report")])
        print(" | ".join([
            rep.get("backend", r["backend"]) + ("" if rep.get("backend", r["backend"]) == r["backend"] else
                                                f" (asked {r['backend']})"),
            str(rep.get("quantized_4bit", "-")), _gb(rep.get("sft_estimate_gb")), _gb(rep.get("grpo_estimate_gb")),
            _gb(rep.get("torch_peak_gb")), _gb(rep.get("nvml_peak_gb")), _gb(r.get("card_peak_gb")),
            _s(rep.get("sft_median_step_s")), _s(rep.get("grpo_median_step_s")), _s(r.get("wall_s")), verdict[:300],
        ]))
        if rep.get("grpo_args"):
            print(f"   GRPO args as the trainer ran them: {json.dumps(rep['grpo_args'])}")
    print("versions: " + ", ".join(f"{k} {v}" for k, v in vers.items()))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dry-run", action="store_true", help="print the plan and the estimates; build and train nothing")
    ap.add_argument("--out", type=Path, default=None, help="work folder (default: a fresh one under runs/.gpu_check)")
    ap.add_argument("--sft-steps", type=int, default=3)
    ap.add_argument("--grpo-steps", type=int, default=2)
    ap.add_argument("--backends", default=",".join(BACKENDS), type=lambda s: [b for b in s.split(",") if b])
    ap.add_argument("--timeout", type=float, default=210.0, help="seconds each smoke may take")
    args = ap.parse_args(argv)
    bad = [b for b in args.backends if b not in BACKENDS]
    if bad:
        print(f"gpu_check: unknown backend {bad[0]!r} (choose from {', '.join(BACKENDS)})", file=sys.stderr)
        return 2
    import torch

    if not args.dry_run and not torch.cuda.is_available():
        print(f"gpu_check: no CUDA device (torch {torch.__version__} sees none); nothing to check on this machine "
              "(--dry-run prints the plan)", file=sys.stderr)
        return 2
    work = args.out or ROOT / "runs" / ".gpu_check" / time.strftime("%Y%m%d-%H%M%S")
    model_dir = work / "qwen3-8b-random"
    config = qwen3_8b_config()
    est = estimates(config)
    steps = plan(args, model_dir)
    if args.dry_run:
        print(f"gpu_check --dry-run: Qwen3-8B config, {count_params(config):,} parameters (meta device, nothing "
              f"allocated); estimate SFT {est['sft_gb']:.2f} GB, GRPO {est['grpo_gb']:.2f} GB; cap {CAP_GIB} GiB")
        print(f"would build {model_dir} (random weights, safetensors shards, the demo tokenizer), then run:")
        for backend, cmd in steps:
            print(f"  [{backend}] ABA_CUDA_MEMORY_CAP_GB={CAP_GIB} {' '.join(cmd[1:])}")
        print("versions: " + ", ".join(f"{k} {v}" for k, v in versions().items()))
        return 0
    work.mkdir(parents=True, exist_ok=True)
    sampler = NvmlPeak()
    sampler.start()
    params, build_s = build_model(model_dir)
    print(f"built {model_dir}: {params:,} parameters in {build_s:.0f} s (card peak {sampler.peak_gb:.2f} GB)", flush=True)
    rows = []
    for backend, cmd in steps:
        env = dict(os.environ, ABA_CUDA_MEMORY_CAP_GB=str(CAP_GIB), ABA_RUNS_DIR=str(work / "runs" / backend),
                   PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
        sampler.reset()
        t0 = time.perf_counter()
        row: dict = {"backend": backend}
        try:
            proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=args.timeout)
            out = proc.stdout
            row["report"] = json.loads(out[out.index("\n{") + 1:]) if "\n{" in out else None
            if row["report"] is None:
                row["error"] = (proc.stderr or out).strip().splitlines()[-1:] or [f"exit {proc.returncode}"]
                row["error"] = row["error"][0][:300]
        except subprocess.TimeoutExpired:
            row["error"] = f"timed out after {args.timeout:.0f} s"
            # The run goes on in its own supervisor: stop it (its runs folder holds only this run) before the next.
            subprocess.run([sys.executable, "-m", "engine.cli", "cancel", "--grace", "10"], cwd=ROOT, env=env,
                           capture_output=True, timeout=120)
        row["wall_s"], row["card_peak_gb"] = time.perf_counter() - t0, sampler.peak_gb
        rows.append(row)
        print(f"[{backend}] done in {row['wall_s']:.0f} s", flush=True)
    sampler.stop()
    print_report(rows, est, versions())
    (work / "gpu_check.json").write_text(json.dumps({"estimate": est, "rows": rows, "versions": versions()}, indent=2))
    return 0 if rows and all((r.get("report") or {}).get("passed") for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
