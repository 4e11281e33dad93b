"""The researcher's own stack, executed on CPU: `aba smoke` on Unsloth's CPU backend in 4-bit, on HF + PEFT with
bitsandbytes 4-bit and with plain LoRA; the merge and GGUF export of a 4-bit-trained adapter; the fallback when
the unsloth import really fails; the import order. Unsloth runs only in the smoke's worker processes, never in
this one, so every in-process test still exercises the unpatched libraries."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from engine.runner import supervisor as sup
from engine.store import RunStore
from tests.conftest import DEMO, ROOT

STEPS = ["--set", "smoke.sft_steps=2", "--set", "smoke.grpo_steps=2", "--set", "smoke.max_completion_length=16"]
LAYERS_4BIT = 4 * 7  # the demo model's 4 blocks x the 7 LoRA targets, every one a bitsandbytes Linear4bit


def _smoke(tmp_path_factory, cache, *sets: str, env: dict | None = None) -> dict:
    """`aba smoke DEMO --set ...` from a fresh shell, as the person types it; returns what the run recorded."""
    runs = tmp_path_factory.mktemp("runs")
    full = dict(os.environ, ABA_RUNS_DIR=str(runs), ABA_CACHE_DIR=str(cache), HF_HUB_OFFLINE="1",
                TRANSFORMERS_OFFLINE="1", PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
                **(env or {}))
    full.pop("ABA_FAULT", None)
    proc = subprocess.run([sys.executable, "-m", "engine.cli", "smoke", str(DEMO), *STEPS, *sets], cwd=ROOT, env=full,
                          capture_output=True, text=True, timeout=900)
    run_dir = sup.resolve_run(None, runs)
    with RunStore(run_dir / "run.db") as store:
        report = store.results("smoke", "report").get("summary")
        logs = [r.message for r in store.logs_since(0, stage="smoke")]
        estimates = store.events("smoke", kind="estimate")
    return {"proc": proc, "run_dir": run_dir, "report": report, "logs": logs, "estimates": estimates}


@pytest.fixture(scope="module")
def unsloth_4bit(tmp_path_factory, _model_cache):
    return _smoke(tmp_path_factory, _model_cache, "--set", "model.backend=unsloth", "--set", "model.load_in_4bit=true",
                  "--set", "model.gradient_checkpointing=true")


@pytest.fixture(scope="module")
def standard_4bit(tmp_path_factory, _model_cache):
    return _smoke(tmp_path_factory, _model_cache, "--set", "model.backend=standard", "--set", "model.load_in_4bit=true")


def _passed(run: dict) -> dict:
    proc, report = run["proc"], run["report"]
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert report and report["passed"], json.dumps(report)
    # `aba smoke` prints the report as its last output, for the person reading the terminal
    assert json.loads(proc.stdout[proc.stdout.index("\n{") + 1:])["backend"] == report["backend"]
    return report


def test_smoke_on_unsloths_cpu_backend_in_4bit(unsloth_4bit):
    report = _passed(unsloth_4bit)
    assert report["backend"] == "unsloth" and report["device"] == "cpu"
    assert report["quantized_4bit"] is True and report["linear4bit_layers"] == LAYERS_4BIT
    assert "Unsloth's CPU backend" in report["backend_reason"] and "4-bit NF4" in report["backend_reason"]
    assert report["sft_steps"] == 2 and report["grpo_steps"] == 2
    assert report["versions"]["unsloth"] != "-" and report["versions"]["bitsandbytes"] != "-"
    # Unsloth's patched GRPOConfig ran: its CPU __post_init__ set non-reentrant checkpointing (TRL 1.15 with
    # transformers 5 leaves gradient_checkpointing_kwargs None) ...
    assert report["grpo_args"]["gradient_checkpointing_kwargs"] == {"use_reentrant": False}
    assert report["grpo_args"]["use_cpu"] is True
    # ... and the estimate read the batch from trainer.args as patched: rows and generations as the trainer ran them
    grpo_est = [e for e in unsloth_4bit["estimates"] if e.data.get("generations")][-1]
    args = report["grpo_args"]
    assert grpo_est.data["rows"] == args["per_device_train_batch_size"]
    assert grpo_est.data["generations"] == args["generation_batch_size"]
    assert any("GRPO batch as the trainer runs it: per_device_train_batch_size "
               f"{args['per_device_train_batch_size']}" in line for line in unsloth_4bit["logs"])
    # The worker imported unsloth first (an import after trl/transformers/peft is reported as a crash, see below);
    # this test process never imported it.
    assert not any("ImportOrderError" in line for line in unsloth_4bit["logs"])
    assert "unsloth" not in sys.modules


def test_smoke_standard_4bit_and_plain_lora(standard_4bit, tmp_path_factory, _model_cache):
    report = _passed(standard_4bit)
    assert report["backend"] == "standard" and report["quantized_4bit"] is True
    assert report["linear4bit_layers"] == LAYERS_4BIT
    assert report["grpo_args"]["gradient_checkpointing_kwargs"] is None  # TRL's own: nothing patched it here
    plain = _passed(_smoke(tmp_path_factory, _model_cache, "--set", "model.backend=standard"))
    assert plain["backend"] == "standard" and plain["quantized_4bit"] is False and plain["linear4bit_layers"] == 0


def test_a_4bit_trained_adapter_merges_into_the_16bit_base_and_exports(standard_4bit, tmp_path):
    """SFT in 4-bit -> merge -> GRPO (the smoke ran those); the merge read the 16-bit base files and equals PEFT's
    merge_and_unload on a 16-bit load; the GGUF of it gives llama.cpp the same greedy tokens as transformers."""
    import torch
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    from engine.evaluation import gguf, llama_check

    _passed(standard_4bit)
    run_dir = standard_4bit["run_dir"]
    base, adapter = run_dir / "base-model", run_dir / "smoke" / "standard" / "sft" / "adapter"
    merged = run_dir / "smoke" / "standard" / "sft" / "merged"
    assert any("streamed on the CPU" in line for line in standard_4bit["logs"])  # from the 16-bit safetensors
    ours = {}
    for path in merged.glob("*.safetensors"):
        ours.update(load_file(str(path)))
    assert all(t.dtype in (torch.float32, torch.bfloat16, torch.float16) for t in ours.values())  # never 4-bit packed
    ref = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32)
    ref = PeftModel.from_pretrained(ref, str(adapter)).merge_and_unload().state_dict()
    changed = 0
    for key, want in ref.items():
        if key == "lm_head.weight" and key not in ours:
            continue  # tied to the embeddings
        assert torch.allclose(ours[key].float(), want.float(), atol=1e-6, rtol=1e-5), key
        changed += int(key.endswith("proj.weight"))
    assert changed == LAYERS_4BIT
    if not llama_check.available():
        pytest.skip("llama-cpp-python is not installed")
    out = tmp_path / "sft-4bit-trained-F16.gguf"
    gguf.write_gguf(merged, out, "F16")
    same = gguf.compare_with_llama_cpp(out, merged, "Is it wise to trust a confident answer?", n_tokens=16)
    assert "error" not in same and same["matching_prefix"] == same["compared"] == 16, same


def test_unsloth_import_failure_falls_back_to_standard_and_says_what_crashed(tmp_path_factory, _model_cache):
    # A real failure: with its CPU fallback disabled, importing unsloth raises on a machine without a GPU.
    run = _smoke(tmp_path_factory, _model_cache, "--set", "model.backend=unsloth",
                 env={"UNSLOTH_DISABLE_CPU_FALLBACK": "1"})
    report = run["report"]
    assert run["proc"].returncode == 1, json.dumps(report)
    assert report["backend"] == "standard" and report["passed"] is False
    assert report["sft_steps"] == 2 and report["grpo_steps"] == 2  # the retry itself ran every step
    assert report["unsloth_error"].startswith("NotImplementedError: Unsloth cannot find any torch accelerator")
    assert report["problems"][0].startswith("unsloth crashed (NotImplementedError") and "then passed" in report["problems"][0]
    with RunStore(run["run_dir"] / "run.db") as store:
        assert "unsloth failed (NotImplementedError" in store.events("smoke", kind="fallback")[0].message
        assert "unsloth crashed" in store.stage("smoke").reason


def test_unsloth_refuses_to_come_after_trl_transformers_or_peft():
    """Unsloth patches trl, transformers and peft when it is imported: a process that imported one of them first
    gets a crash line (which smoke turns into its fallback), never a half-patched run."""
    code = ("import transformers\n"
            "from engine.models.loading import import_unsloth\n"
            "import sys\n"
            "print(import_unsloth()); print('unsloth' in sys.modules)\n")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    lines = proc.stdout.strip().splitlines()
    assert lines[-2].startswith("ImportOrderError: transformers imported before unsloth"), proc.stdout + proc.stderr
    assert lines[-1] == "False"


def test_backend_choice_says_why(monkeypatch):
    from engine import config
    from engine.models import loading as models

    cfg = config.load(DEMO)
    b = models.pick_backend(cfg)
    assert (b.name, b.quantized) == ("standard", False) and "auto, because there is no CUDA device" in b.reason
    cfg.model.load_in_4bit = True
    b = models.pick_backend(cfg)
    assert b.name == "standard" and b.quantized and "4-bit NF4 QLoRA (bitsandbytes, double quant) on cpu" in b.reason
    assert "unsloth" not in sys.modules  # auto on CPU never imports it


def test_lora_keeps_learning_across_grpo_steps_on_the_4bit_model(tmp_path, monkeypatch):
    """The AVX512-BF16 repack guarded: bitsandbytes repacks a 4-bit weight in place on its first no-grad forward in
    eval mode on a CPU with AVX512-BF16 (this test's machine has it) and never unpacks it. An eval-mode forward runs
    before every GRPO generation here, as a sample or an evaluation would; no layer may get packed, and the LoRA
    weights must change at every step on the standard backend's bitsandbytes NF4 model."""
    import torch
    from trl import GRPOTrainer

    from engine import config
    from engine.config import STAGES
    from engine.context import StageContext
    from engine.training.grpo import train_grpo
    from engine.models import loading as models

    cfg = config.load(DEMO)
    cfg.model.load_in_4bit = True
    cfg.run.checkpoint_steps = 10_000
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    config.save(cfg, run_dir / "config.toml")
    store = RunStore(run_dir / "run.db", create=True)
    store.init_run("t", "t", "demo", STAGES, ["grpo"])
    store.start_attempt("grpo", 0)
    ctx = StageContext(name="grpo", run_dir=run_dir, cfg=cfg, store=store)
    base = models.base_path(cfg, run_dir)

    def lora(model) -> torch.Tensor:
        return torch.cat([p.detach().flatten().clone() for n, p in model.named_parameters() if "lora_" in n])

    def layers(model) -> list:
        return [m for m in model.modules() if hasattr(m, "support_avx512bf16_for_cpu")]

    seen: list[tuple[torch.Tensor, int]] = []
    generate = GRPOTrainer._generate_and_score_completions

    def eval_forward_then_generate(self, *args, **kwargs):
        model = self.model
        model.eval()
        with torch.no_grad():  # the repack's trigger: no grad, eval mode, CPU
            model(input_ids=torch.tensor([[1, 2, 3, 4, 5]]))
        model.train()
        seen.append((lora(model), sum(bool(getattr(m.weight.quant_state, "packing_format_for_cpu", False))
                                      for m in layers(model))))
        return generate(self, *args, **kwargs)

    monkeypatch.setattr(GRPOTrainer, "_generate_and_score_completions", eval_forward_then_generate)
    trainer, _ = train_grpo(ctx, models.pick_backend(cfg), base, tmp_path / "out", max_steps=3, num_generations=4,
                            max_completion_length=16)
    store.close()
    assert len(layers(trainer.model)) == LAYERS_4BIT
    assert all(m.support_avx512bf16_for_cpu is False for m in layers(trainer.model))
    assert [packed for _, packed in seen] == [0, 0, 0]  # no layer ever left the trainable layout
    points = [w for w, _ in seen] + [lora(trainer.model)]
    deltas = [(b - a).abs().max().item() for a, b in zip(points, points[1:])]
    assert len(deltas) == 3 and all(d > 1e-6 for d in deltas), deltas  # every step moved the LoRA
    assert "unsloth" not in sys.modules
