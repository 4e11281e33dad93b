"""TRL's fused LM head runs a Triton kernel, which needs a GPU. Give it a plain-torch twin for tensors off the GPU.

TRL 1.15 always patches the model forward with a chunked log-prob kernel (`trl.kernels.ChunkedLogProbFunction`,
called as `trl.trainer.utils._ChunkedLogProbFunction.apply(...)` in the fused forward). Without Triton the import
fails and TRL leaves it None (the first step raises AttributeError); with Triton installed but no GPU (Linux CPU
machines: Unsloth depends on Triton) the kernel raises "0 active drivers" on CPU tensors. `ensure_fused_head()`
puts a dispatcher in its place: CUDA/XPU tensors go to TRL's kernel unchanged, anything else to an equivalent
computed with ordinary torch ops (autograd does the backward), so the same TRL trainers run on a laptop.
tests/test_trl_compat.py pins this to TRL's version, signature and output shapes.

Where this twin is the one that runs: the standard backend (HF + PEFT) on a machine without a GPU, the test suite
included. Elsewhere something else covers it and it stands aside: on CUDA, TRL's own Triton kernel; on the unsloth
backend, unsloth_zoo's CPU twin (`unsloth_zoo.cpu.ops.patch_trl_fused_lm_head`, installed when unsloth is imported
first, is kept as it is) and Unsloth's fused head on GPU. TRL 1.16 ships a torch fallback of its own, but Unsloth
2026.10.9 requires trl<=1.15.0.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

OPTIONAL_OUTPUTS = ("entropy", "log_sum_sq_probs", "mean_logits", "is_top1")


class TorchChunkedLogProb:
    """Same call and outputs as trl.kernels.ChunkedLogProbFunction.apply, in chunks of tokens to bound memory."""

    TOKENS_PER_CHUNK = 2048

    @staticmethod
    def apply(hidden, weight, bias, targets, temperature, chunk_size, final_logit_softcapping=None, logit_scale=1.0,
              outputs=OPTIONAL_OUTPUTS):
        wanted = set(outputs)
        parts: dict[str, list[torch.Tensor]] = {k: [] for k in ("log_probs", *OPTIONAL_OUTPUTS)}
        step = TorchChunkedLogProb.TOKENS_PER_CHUNK
        for start in range(0, max(hidden.shape[0], 1), step):
            h = hidden[start : start + step]
            t = targets[start : start + step]
            z = F.linear(h, weight, bias).float() * (1.0 if logit_scale is None else logit_scale)
            if final_logit_softcapping is not None:
                z = final_logit_softcapping * torch.tanh(z / final_logit_softcapping)
            z = z / temperature
            logp = torch.log_softmax(z, dim=-1)
            parts["log_probs"].append(logp.gather(-1, t.unsqueeze(-1)).squeeze(-1))
            if "entropy" in wanted:
                parts["entropy"].append(-(logp.exp() * logp).sum(-1))
            if "log_sum_sq_probs" in wanted:
                parts["log_sum_sq_probs"].append(torch.logsumexp(2 * logp, dim=-1))
            if "mean_logits" in wanted:
                parts["mean_logits"].append(z.mean(-1))
            if "is_top1" in wanted:
                parts["is_top1"].append((z.argmax(-1) == t).float())
        out = []
        for name in ("log_probs", *OPTIONAL_OUTPUTS):
            if name != "log_probs" and name not in wanted:
                out.append(None)
            else:
                out.append(torch.cat(parts[name]) if parts[name] else hidden.new_zeros(0))
        return tuple(out)


KERNEL_DEVICES = ("cuda", "xpu")  # where TRL's Triton kernel runs (trl.trainer.utils._supports_trl_loss_kernel)


class FusedHeadDispatch:
    """Stands in for `_ChunkedLogProbFunction`: TRL's kernel on a GPU, the torch twin elsewhere."""

    def __init__(self, kernel: Any):
        self.kernel = kernel  # TRL's ChunkedLogProbFunction, or None when Triton did not import

    def apply(self, hidden, *args):
        if self.kernel is not None and hidden.device.type in KERNEL_DEVICES:
            return self.kernel.apply(hidden, *args)
        return TorchChunkedLogProb.apply(hidden, *args)


def ensure_fused_head() -> bool:
    """Install the dispatcher in TRL's fused forward (once). Returns True when this call installed it."""
    from trl.trainer import utils

    current = getattr(utils, "_ChunkedLogProbFunction", None)
    if isinstance(current, FusedHeadDispatch) or getattr(current, "_unsloth_cpu_dispatch", False):
        return False  # ours already, or unsloth_zoo's own device dispatch (the unsloth backend's CPU twin)
    utils._ChunkedLogProbFunction = FusedHeadDispatch(current)
    return True
