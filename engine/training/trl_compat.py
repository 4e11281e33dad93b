"""TRL's fused LM head needs Triton kernels, which CPU builds of torch do not ship. Give it a plain-torch twin.

TRL >= 1.x always patches the model forward with a chunked log-prob kernel (trl.kernels, Triton). Without Triton
the import fails, TRL leaves `_ChunkedLogProbFunction = None`, and the first training step raises AttributeError.
`ensure_fused_head()` installs an equivalent computed with ordinary torch ops (autograd does the backward), so the
same TRL trainers run on a laptop. On CUDA with Triton present nothing is replaced.
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


class _ByDevice:
    """Triton's kernel for CUDA tensors, the torch twin for the rest: a venv with Triton installed (Unsloth brings
    it) imports TRL's kernels fine, but on a CPU tensor they fail with "0 active drivers"."""

    triton = None

    @classmethod
    def apply(cls, hidden, *args, **kwargs):
        return (cls.triton if hidden.is_cuda else TorchChunkedLogProb).apply(hidden, *args, **kwargs)


def ensure_fused_head() -> bool:
    """Install the torch twin where TRL's Triton kernels cannot run. Returns True when it was needed."""
    from trl.trainer import utils

    found = getattr(utils, "_ChunkedLogProbFunction", object())
    if found is None:
        utils._ChunkedLogProbFunction = TorchChunkedLogProb
        return True
    if found is TorchChunkedLogProb or found is _ByDevice or not hasattr(found, "apply"):
        return False
    _ByDevice.triton = found
    utils._ChunkedLogProbFunction = _ByDevice
    return True
