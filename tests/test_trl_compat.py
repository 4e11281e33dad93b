"""The torch twin of TRL's fused LM head, pinned to the installed TRL: a TRL update that changes the kernel's call,
signature or outputs fails here, loudly, before a training run does."""

from __future__ import annotations

import inspect
import re
from importlib.metadata import version

import pytest
import torch

from engine.models.trl_compat import OPTIONAL_OUTPUTS, FusedHeadDispatch, TorchChunkedLogProb, ensure_fused_head

PINNED_TRL = "1.15.0"  # the version this twin was written against (trl/trainer/utils.py, trl/kernels/chunked_logprob.py)
KERNEL_PARAMS = ["ctx", "hidden", "weight", "bias", "targets", "temperature", "chunk_size", "final_logit_softcapping",
                 "logit_scale", "outputs"]
RECHECK = ("re-read TRL's fused forward (trl/trainer/utils.py, `_ChunkedLogProbFunction.apply(`) and "
           "trl/kernels/chunked_logprob.py, update engine/models/trl_compat.py to match, then PINNED_TRL here")


def test_pinned_trl_version():
    assert version("trl") == PINNED_TRL, f"TRL is {version('trl')}, the fused-head twin was checked on {PINNED_TRL}: {RECHECK}"


def test_kernel_signature_and_outputs_are_the_twins():
    kernels = pytest.importorskip("trl.kernels.chunked_logprob", reason="Triton not installed: TRL has no kernel")
    params = list(inspect.signature(kernels.ChunkedLogProbFunction.forward).parameters)
    assert params == KERNEL_PARAMS, f"ChunkedLogProbFunction.forward{params}: {RECHECK}"
    assert tuple(kernels.OPTIONAL_OUTPUTS) == OPTIONAL_OUTPUTS, f"outputs {kernels.OPTIONAL_OUTPUTS}: {RECHECK}"
    ours = list(inspect.signature(TorchChunkedLogProb.apply).parameters)
    assert ours == KERNEL_PARAMS[1:], ours


def test_trl_calls_the_kernel_as_the_twin_expects():
    from trl.trainer import utils

    source = inspect.getsource(utils)
    call = re.search(r"_ChunkedLogProbFunction\.apply\((.*?)\)\n", source, re.S)
    assert call, f"TRL no longer calls _ChunkedLogProbFunction.apply: {RECHECK}"
    args = [a.strip() for a in call.group(1).split(",") if a.strip()]
    assert len(args) == len(KERNEL_PARAMS) - 1, f"TRL passes {args}: {RECHECK}"
    assert "log_probs, entropy, log_sum_sq_probs, mean_logits, is_top1 = (" in source, f"TRL unpacks other outputs: {RECHECK}"


def test_twin_shapes_and_values_on_cpu():
    torch.manual_seed(0)
    n, h, v = 7, 16, 50
    hidden, weight, bias = torch.randn(n, h, requires_grad=True), torch.randn(v, h), torch.randn(v)
    targets = torch.randint(0, v, (n,))
    out = TorchChunkedLogProb.apply(hidden, weight, bias, targets, 0.7, 8, 30.0, 1.0, ("entropy", "is_top1"))
    assert len(out) == 1 + len(OPTIONAL_OUTPUTS)
    log_probs, entropy, log_sum_sq, mean_logits, is_top1 = out
    assert log_sum_sq is None and mean_logits is None  # not asked for: None, as TRL's kernel returns
    for x in (log_probs, entropy, is_top1):
        assert x.shape == (n,) and x.dtype == torch.float32
    z = 30.0 * torch.tanh((hidden @ weight.T + bias) / 30.0) / 0.7
    ref = torch.log_softmax(z, -1)
    assert torch.allclose(log_probs, ref.gather(-1, targets[:, None]).squeeze(-1), atol=1e-5)
    assert torch.equal(is_top1, (z.argmax(-1) == targets).float())
    log_probs.sum().backward()
    assert hidden.grad is not None and torch.isfinite(hidden.grad).all()


def test_trl_fused_forward_runs_on_cpu_through_the_dispatcher():
    """TRL's own patched forward, on a CPU model, gives the plain log-softmax log-probs once the twin is in place."""
    from transformers import Qwen3Config, Qwen3ForCausalLM
    from trl.trainer import utils

    ensure_fused_head()
    assert isinstance(utils._ChunkedLogProbFunction, FusedHeadDispatch)
    assert not ensure_fused_head()  # installed once
    torch.manual_seed(0)
    cfg = Qwen3Config(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                      num_key_value_heads=1, head_dim=16, tie_word_embeddings=True)
    model = Qwen3ForCausalLM(cfg).eval()
    utils.add_fused_lm_head(model)  # what TRL's trainers do to the model
    ids = torch.randint(0, 64, (2, 6))
    with torch.no_grad():
        fused = model(input_ids=ids, labels=ids, fused_lm_head=True)
        logits = model(input_ids=ids).logits[:, :-1].float()
    expect = torch.log_softmax(logits, -1).gather(-1, ids[:, 1:, None]).squeeze(-1)
    assert fused.log_probs.shape == expect.shape and torch.allclose(fused.log_probs, expect, atol=1e-4)
