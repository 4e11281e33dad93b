"""Seed 003: a commitment vector added to the residual stream, and the self-consistency probe that tests it.

The llama.cpp patch of the seed adds `W_c z*` after the second residual connection of each transformer block.
Here a forward hook on each chosen decoder layer adds `lambda * W_c z` to the layer's output hidden state, which
is that same point, for any HF causal LM whose decoder layers are `model.model.layers`.
"""

from __future__ import annotations

import math
import re
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from engine.errors import UserError
from engine.jsonl import read_jsonl
from engine.text import split_think
def decoder_layers(model) -> torch.nn.ModuleList:
    """The decoder layers of a (possibly PEFT-wrapped) causal LM, or a clear error."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    layers = getattr(getattr(inner, "model", None), "layers", None)
    if not isinstance(layers, torch.nn.ModuleList):
        raise UserError(
            f"commitment: {type(inner).__name__} has no model.model.layers; the injection supports decoder-only "
            "HF models (Qwen3, Qwen2, Llama, Mistral...)"
        )
    return layers


def parse_layers(spec: str, n_layers: int) -> list[int]:
    """'all', 'last:N' or 'START:END' (end exclusive), checked against the model's layer count."""
    if spec == "all":
        return list(range(n_layers))
    m = re.fullmatch(r"last:(\d+)", spec)
    if m:
        k = int(m.group(1))
        if not 1 <= k <= n_layers:
            raise UserError(f"layer range {spec!r}: the model has {n_layers} layers (use last:1..last:{n_layers})")
        return list(range(n_layers - k, n_layers))
    m = re.fullmatch(r"(\d+):(\d+)", spec)
    if m:
        a, b = int(m.group(1)), int(m.group(2))
        if not 0 <= a < b <= n_layers:
            raise UserError(f"layer range {spec!r}: the model has {n_layers} layers (need 0 <= start < end <= {n_layers})")
        return list(range(a, b))
    raise UserError(f"layer range {spec!r}: use 'all', 'last:N' or 'START:END'")


@dataclass
class CommitmentVector:
    """z* ~ N(0, 1/k) drawn once with the run's seed; W_c (hidden x k) Xavier-initialised; v = W_c z*."""

    z: torch.Tensor
    w_c: torch.Tensor

    @classmethod
    def draw(cls, k: int, hidden: int, seed: int) -> CommitmentVector:
        g = torch.Generator().manual_seed(seed)
        z = torch.randn(k, generator=g) / math.sqrt(k)
        w_c = torch.empty(hidden, k)
        bound = math.sqrt(6.0 / (hidden + k))  # Xavier (Glorot) uniform
        w_c.uniform_(-bound, bound, generator=g)
        return cls(z, w_c)

    @property
    def vector(self) -> torch.Tensor:
        return self.w_c @ self.z


class Injector:
    """Forward hooks adding `lam * vector` to the output of chosen decoder layers. `vector` is (hidden,) or
    (batch, hidden); it can be swapped between calls (the entangled head sets a new one per batch)."""

    def __init__(self, model, layers: list[int], lam: float):
        self.blocks = decoder_layers(model)
        self.layers = layers
        self.lam = lam
        self.vector: torch.Tensor | None = None
        self._handles: list[Any] = []

    def _hook(self, module, args, output):
        if self.vector is None or self.lam == 0:
            return output
        hidden = output[0] if isinstance(output, tuple) else output
        v = self.vector.to(hidden.dtype).to(hidden.device)
        add = self.lam * (v[:, None, :] if v.dim() == 2 else v)
        hidden = hidden + add
        return (hidden, *output[1:]) if isinstance(output, tuple) else hidden

    def __enter__(self) -> Injector:
        for i in self.layers:
            self._handles.append(self.blocks[i].register_forward_hook(self._hook))
        return self

    def __exit__(self, *exc: object) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()


@contextmanager
def injected(model, vector: torch.Tensor, lam: float, layers: list[int]):
    inj = Injector(model, layers, lam)
    inj.vector = vector
    with inj:
        yield inj


# -- the consistency probe ------------------------------------------------------------------


@dataclass(frozen=True)
class Probe:
    id: str
    first: str
    filler: str
    followup: str
    candidates: list[str]


def load_probes(path: Path) -> list[Probe]:
    probes = []
    for n, row in read_jsonl(path, "probes"):
        try:
            probes.append(Probe(row["id"], row["first"], row["filler"], row["followup"], list(row.get("candidates", []))))
        except (KeyError, TypeError) as err:
            raise UserError(f"{path}:{n}: probe needs id, first, filler and followup ({err})") from None
    if not probes:
        raise UserError(f"{path}: no probes")
    return probes


def mentioned(text: str, candidates: list[str]) -> list[str]:
    low = text.lower()
    found = [(low.find(c), c) for c in candidates if re.search(rf"(?<![a-z0-9+#]){re.escape(c)}(?![a-z0-9+#])", low)]
    return [c for _, c in sorted(found)]


_WORD = re.compile(r"[a-z0-9+#']+")


def consistent(first: str, second: str, candidates: list[str]) -> bool:
    """The follow-up names what the first answer named: its first-mentioned candidate; with no candidate in the
    first answer, half or more of its content words come back."""
    a1, a2 = split_think(first)[1] or first, split_think(second)[1] or second
    named = mentioned(a1, candidates)
    if named:
        return named[0] in mentioned(a2, candidates)
    w1 = {w for w in _WORD.findall(a1.lower()) if len(w) > 3}
    w2 = set(_WORD.findall(a2.lower()))
    return bool(w1) and len(w1 & w2) / len(w1) >= 0.5


def distinct_2(text: str) -> float:
    words = _WORD.findall(text.lower())
    pairs = list(zip(words, words[1:]))
    return len(set(pairs)) / len(pairs) if pairs else 0.0


def repetition_rate(text: str, n: int = 3) -> float:
    """Share of word n-grams that repeat an earlier one (0: none repeat)."""
    words = _WORD.findall(text.lower())
    grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    return 1 - len(set(grams)) / len(grams) if grams else 0.0


def perplexity(model, tok, context: list[dict], text: str) -> float:
    """Perplexity of `text` as the assistant's reply to `context`, under the model as it is (hooks off)."""
    prompt = tok.apply_chat_template(context, add_generation_prompt=True, tokenize=False)
    p_ids = tok(prompt, add_special_tokens=False)["input_ids"]
    t_ids = tok(text, add_special_tokens=False)["input_ids"]
    if not t_ids:
        return float("nan")
    ids = torch.tensor([p_ids + t_ids], device=model.device)
    labels = ids.clone()
    labels[:, : len(p_ids)] = -100
    with torch.no_grad():
        loss = model(input_ids=ids, labels=labels).loss
    return float(torch.exp(loss))


def generate(model, tok, turns: list[dict], max_new_tokens: int) -> str:
    enc = tok.apply_chat_template(turns, add_generation_prompt=True, return_tensors="pt", return_dict=True).to(model.device)
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tok.pad_token_id)
    return tok.decode(out[0][enc["input_ids"].shape[1]:], skip_special_tokens=True).strip()


def run_probe(model, tok, probe: Probe, max_new_tokens: int, inject=None, judge=None) -> dict[str, Any]:
    """The seed's test: state something, talk about something else, then ask what was stated.

    `inject(turns)` returns a context manager active while the model generates (None: no injection);
    `judge(first, second)` may add an LLM verdict of consistency. Perplexity is always under the plain model."""
    def gen(turns):
        if inject is None:
            return generate(model, tok, turns, max_new_tokens)
        with inject(turns):
            return generate(model, tok, turns, max_new_tokens)

    t1 = [{"role": "user", "content": probe.first}]
    a1 = gen(t1)
    t2 = t1 + [{"role": "assistant", "content": a1}, {"role": "user", "content": probe.filler}]
    a_fill = gen(t2)
    t3 = t2 + [{"role": "assistant", "content": a_fill}, {"role": "user", "content": probe.followup}]
    a2 = gen(t3)
    text = f"{a1}\n{a_fill}\n{a2}"
    result = {
        "probe": probe.id, "first": a1, "second": a2, "consistent": consistent(a1, a2, probe.candidates),
        "perplexity": (perplexity(model, tok, t1, a1) + perplexity(model, tok, t3, a2)) / 2,
        "distinct2": distinct_2(text), "repetition": repetition_rate(text),
    }
    if judge is not None:
        result["judge_consistent"] = judge(a1, a2)
    return result


def summarize(results: list[dict[str, Any]]) -> dict[str, float]:
    def mean(key: str) -> float:
        vals = [float(r[key]) for r in results if r.get(key) is not None and r[key] == r[key]]
        return sum(vals) / len(vals) if vals else float("nan")

    out = {k: mean(k) for k in ("consistent", "perplexity", "distinct2", "repetition")}
    out["consistency"] = out.pop("consistent")
    if any("judge_consistent" in r for r in results):
        out["judge_consistency"] = mean("judge_consistent")
    return out
