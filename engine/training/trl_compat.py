"""TRL's fused LM head runs Triton kernels, which need a GPU. Give CPU tensors a plain-torch twin.

TRL 1.15 always patches the model forward with a chunked log-prob kernel (trl.kernels, Triton). Without Triton
the import fails and TRL leaves `_ChunkedLogProbFunction = None` (the first step raises AttributeError); with
Triton installed (unsloth pulls it in on Linux) but no GPU, the kernel imports and the first step raises
`RuntimeError: 0 active drivers`. `ensure_fused_head()` routes the head by device: TRL's kernel for CUDA/XPU
tensors, an equivalent in ordinary torch ops (autograd does the backward) for everything else.

Where this twin is the one that runs: the standard backend (HF + PEFT) on a machine without a GPU, the test suite
included. Elsewhere something else covers it and nothing is replaced: on CUDA, TRL's own Triton kernel; on the
unsloth backend, unsloth_zoo's CPU twin (`unsloth_zoo.cpu.ops.patch_trl_fused_lm_head`, installed when unsloth is
imported first) and Unsloth's fused head on GPU. TRL 1.16 ships a torch fallback of its own, but Unsloth
2026.10.9 requires trl<=1.15.0.
"""

from __future__ import annotations

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


def ensure_fused_head() -> str:
    """Route TRL's fused head by device, once per process. Returns who serves CPU tensors: "unsloth" (unsloth_zoo's
    twin was already installed), or "torch twin" (this module's)."""
    from trl.trainer import utils

    kernel = getattr(utils, "_ChunkedLogProbFunction", None)
    if getattr(kernel, "_unsloth_cpu_dispatch", False):
        return "unsloth"
    if getattr(kernel, "_aba_dispatch", False):
        return "torch twin"

    class DeviceDispatch:
        """TRL's Triton kernel where it can run (a GPU tensor), the torch twin everywhere else."""

        _aba_dispatch = True
        triton_kernel = kernel

        @staticmethod
        def apply(hidden, *args, **kwargs):
            if kernel is not None and hidden.device.type in ("cuda", "xpu"):
                return kernel.apply(hidden, *args, **kwargs)
            return TorchChunkedLogProb.apply(hidden, *args, **kwargs)

    utils._ChunkedLogProbFunction = DeviceDispatch
    return "torch twin"
