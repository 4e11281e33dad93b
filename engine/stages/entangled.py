"""Seed 003 phase 2 (`train_entangled.py`): a variational head over the context's hidden states gives a mean and a
log-variance; z is reparameterised, projected by a trained W_c and injected as in phase 1. Head, W_c and LoRA train
together on LM + beta * KL(q || N(0, 1/k)); inference uses the mean. QLoRA 4-bit where CUDA exists."""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any

import torch

from engine.context import StageContext, StageFailed

ROOT = Path(__file__).resolve().parent.parent.parent


class VariationalHead(torch.nn.Module):
    """Mean-pooled context hidden states -> (mu, logvar) of z, and W_c: z -> hidden (Xavier-initialised)."""

    def __init__(self, hidden: int, k: int):
        super().__init__()
        self.k = k
        self.net = torch.nn.Sequential(torch.nn.Linear(hidden, hidden), torch.nn.Tanh())
        self.mu = torch.nn.Linear(hidden, k)
        self.logvar = torch.nn.Linear(hidden, k)
        self.w_c = torch.nn.Linear(k, hidden, bias=False)
        torch.nn.init.xavier_uniform_(self.w_c.weight)
        torch.nn.init.zeros_(self.logvar.weight)
        torch.nn.init.constant_(self.logvar.bias, -math.log(k))  # start at the prior's variance 1/k

    def forward(self, pooled: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.net(pooled)
        return self.mu(h), self.logvar(h).clamp(-12, 6)

    def kl_to_prior(self, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        """KL(N(mu, sigma^2) || N(0, 1/k)), summed over z, averaged over the batch."""
        prior_var = 1.0 / self.k
        kl = 0.5 * ((logvar.exp() + mu.pow(2)) / prior_var - 1 - logvar + math.log(prior_var))
        return kl.sum(-1).mean()


def context_pool(model, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean of the last layer's hidden states over the context tokens (no injection, no gradient into the LM)."""
    with torch.no_grad():
        out = model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True)
    h = out.hidden_states[-1].float()
    m = attention_mask[..., None].float()
    return (h * m).sum(1) / m.sum(1).clamp(min=1)


def _examples(ctx: StageContext, tok, max_len: int) -> list[dict[str, Any]]:
    """(context ids, full ids, labels) from the SFT data: the context is the prompt, the target the reply."""
    from engine.training import data as traindata

    rows = traindata.sft_rows(ctx.store, ctx.cfg.grpo.reward_weights, 0.0, ctx.log, traindata.demo_data_reason(ctx.cfg, ctx.name))
    out = []
    for r in rows:
        ctx_ids = tok.apply_chat_template(r["prompt"], add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"]
        full_ids = tok.apply_chat_template(r["prompt"] + r["completion"], tokenize=True, return_dict=True)["input_ids"]
        full_ids = full_ids[:max_len]
        labels = [-100] * min(len(ctx_ids), len(full_ids)) + full_ids[len(ctx_ids):]
        if any(lab != -100 for lab in labels):
            out.append({"ctx": ctx_ids[:max_len], "ids": full_ids, "labels": labels})
    if not out:
        raise StageFailed("entangled: no training examples (no chosen traces)")
    return out


def _pad(seqs: list[list[int]], pad: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(map(len, seqs))
    ids = torch.full((len(seqs), width), pad, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):  # right padding: positions stay aligned with the labels
        ids[i, : len(s)] = torch.tensor(s)
        mask[i, : len(s)] = 1
    return ids.to(device), mask.to(device)


def _save(folder: Path, model, head, opt, step: int, rng_state: Any) -> None:
    tmp = folder / "checkpoint.tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(tmp / "adapter"))
    torch.save({"head": head.state_dict(), "opt": opt.state_dict(), "step": step, "rng": rng_state}, tmp / "state.pt")
    final = folder / "checkpoint"
    if final.exists():
        import shutil

        shutil.rmtree(final)
    tmp.replace(final)


def run(ctx: StageContext) -> None:
    from peft import get_peft_model, set_peft_model_state_dict
    from peft.utils import load_peft_weights

    from engine.evaluation import commitment as cm
    from engine.evaluation import answers as ev
    from engine.models import loading as models

    e = ctx.cfg.entangled
    ref = ev.resolve_model(ctx, e.model, "entangled.model")
    backend = models.pick_backend(ctx.cfg)
    ctx.event("backend", f"backend: {backend.reason}", backend=backend.name)
    start = ref.base
    if ref.adapter is not None:  # merged on the CPU into 16-bit files first: never into 4-bit weights
        from engine.models.merging import merge_adapter

        start = str(merge_adapter(ctx.cfg, ref.base, ref.adapter, ctx.folder / f"merged-{ref.name}", ctx.log))
    base = models.load_plain(ctx.cfg, backend, start)
    tok = models.load_tokenizer(ctx.cfg.model.base if ctx.cfg.model.base.startswith("demo:") else ref.base)
    model = get_peft_model(base, models.lora_config(ctx.cfg))
    layers = cm.parse_layers(e.layer_range, len(cm.decoder_layers(model)))
    device = next(model.parameters()).device
    head = VariationalHead(model.config.hidden_size, e.k).to(device)
    params = [p for p in model.parameters() if p.requires_grad] + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=e.learning_rate)
    rng = random.Random(ctx.cfg.run.seed)
    torch.manual_seed(ctx.cfg.run.seed)
    start = 0
    ckpt = ctx.folder / "checkpoint"
    if (ckpt / "state.pt").exists():
        try:
            state = torch.load(ckpt / "state.pt", weights_only=False)
            set_peft_model_state_dict(model, load_peft_weights(str(ckpt / "adapter")))
        except Exception as err:  # a damaged checkpoint is reported, not trained over silently
            raise StageFailed(f"{ckpt}: cannot resume from this checkpoint ({type(err).__name__}: {err})") from None
        head.load_state_dict(state["head"])
        opt.load_state_dict(state["opt"])
        rng.setstate(state["rng"])
        start = state["step"]
        ctx.log(f"resuming from step {start}")
    examples = _examples(ctx, tok, e.max_seq_length)
    probes = cm.load_probes(Path(ctx.cfg.commitment.probes) if Path(ctx.cfg.commitment.probes).is_absolute()
                            else ROOT / ctx.cfg.commitment.probes)
    injector = cm.Injector(model, layers, e.lam)
    ctx.log(f"entangled: k={e.k}, beta={e.beta}, lambda={e.lam}, layers {e.layer_range} ({len(layers)}), "
            f"{len(examples)} examples, {sum(p.numel() for p in params):,} trainable parameters")
    model.train()
    for step in range(start + 1, e.max_steps + 1):
        if ctx.should_stop():
            _save(ctx.folder, model, head, opt, step - 1, rng.getstate())
            ctx.log(f"checkpoint at step {step - 1}")
            return
        ctx.fault(step)
        batch = [examples[rng.randrange(len(examples))] for _ in range(e.batch_size)]
        c_ids, c_mask = _pad([b["ctx"] for b in batch], tok.pad_token_id, device)
        with model.disable_adapter():
            pooled = context_pool(model, c_ids, c_mask)
        mu, logvar = head(pooled)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
        ids, mask = _pad([b["ids"] for b in batch], tok.pad_token_id, device)
        labels = torch.full_like(ids, -100)
        for i, b in enumerate(batch):
            labels[i, : len(b["labels"])] = torch.tensor(b["labels"], device=device)
        injector.vector = head.w_c(z)
        with injector:
            lm_loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        kl = head.kl_to_prior(mu, logvar)
        loss = lm_loss + e.beta * kl
        opt.zero_grad()
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        ctx.metrics(step, {"loss": float(loss), "lm_loss": float(lm_loss), "kl": float(kl), "kl_loss": float(e.beta * kl),
                           "grad_norm": float(grad_norm), "z_norm": float(mu.norm(dim=-1).mean()), "learning_rate": e.learning_rate})
        ctx.progress(step, e.max_steps, f"step {step}")
        if step % ctx.cfg.run.checkpoint_steps == 0:
            _save(ctx.folder, model, head, opt, step, rng.getstate())
        if step % e.probe_every == 0 or step == e.max_steps:
            model.eval()
            summary = _probe(model, tok, head, injector, probes, e.probe_max_new_tokens, device)
            model.train()
            ctx.metrics(step, {f"probe/{k}": v for k, v in summary.items()})
            ctx.log(f"step {step}: loss {float(loss):.3f}, probe consistency {summary['consistency']:.2f}, "
                    f"perplexity {summary['perplexity']:.1f}")
    out = ctx.folder / "adapter"
    model.save_pretrained(str(out))
    torch.save(head.state_dict(), ctx.folder / "head.pt")
    ctx.artifact("adapter", out, k=e.k, layers=e.layer_range)
    ctx.artifact("head", ctx.folder / "head.pt")


def _probe(model, tok, head, injector, probes, max_new_tokens: int, device) -> dict[str, float]:
    """The consistency probe with the injection from the head's mean (no sampling at inference)."""
    from contextlib import contextmanager

    from engine.evaluation import commitment as cm

    @contextmanager
    def inject(turns):
        enc = tok.apply_chat_template(turns, add_generation_prompt=True, return_tensors="pt", return_dict=True).to(device)
        with model.disable_adapter():
            pooled = context_pool(model, enc["input_ids"], enc["attention_mask"])
        with torch.no_grad():
            mu, _ = head(pooled)
            injector.vector = head.w_c(mu)
        with injector:
            yield

    with torch.no_grad():
        results = [cm.run_probe(model, tok, p, max_new_tokens, inject) for p in probes]
    return cm.summarize(results)
