"""Model loading and streaming generation inside the chat worker: the run's base loaded once with its adapters
switched by PEFT, other model folders on transformers, GGUF files on llama.cpp. Heavy imports inside functions."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.config import Config
from engine.errors import UserError
from engine.playground.settings import ChatSettings, cut_left
from engine.playground.specs import ModelSpec

OnText = Callable[[str], None]


@dataclass
class Generation:
    text: str
    status: str  # "done", "cancelled", "length" (hit max new tokens)
    note: str
    prompt_tokens: int
    new_tokens: int
    ttft_s: float | None
    tokens_per_s: float | None
    total_s: float

    def stats(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("status", "note", "prompt_tokens", "new_tokens", "ttft_s",
                                              "tokens_per_s", "total_s")}


def _rates(start: float, first: float | None, end: float, n: int) -> tuple[float | None, float | None]:
    ttft = None if first is None else first - start
    decode = end - (first if first is not None else start)
    return ttft, ((n - 1) / decode if n > 1 and decode > 0 else None)


class RunModels:
    """The run's base model, loaded once; the stage adapters loaded onto it as named PEFT adapters and switched."""

    def __init__(self, cfg: Config, run_dir: Path, log: Callable[[str], None]):
        self.cfg, self.run_dir, self.log = cfg, run_dir, log
        self.model = None  # the base, then a PeftModel once an adapter is loaded
        self.tok = None
        self.adapters: set[str] = set()
        self.lock = threading.Lock()

    def _load_base(self) -> None:
        from engine.models import loading as models

        backend = models.pick_backend(self.cfg)
        base = models.base_path(self.cfg, self.run_dir, self.log)
        t0 = time.perf_counter()
        model = models.load_plain(self.cfg, backend, base, quantize=backend.quantized)
        model.eval()
        self.model = model
        self.tok = models.load_tokenizer(self.cfg.model.base if self.cfg.model.base.startswith(models.DEMO_PREFIX) else base)
        self.log(f"base {base} loaded in {time.perf_counter() - t0:.1f} s ({backend.reason})")

    def prepare(self, spec: ModelSpec) -> None:
        """Load the base (once) and the spec's adapters (once each); a missing or damaged adapter is one line."""
        if self.model is None:
            self._load_base()
        for name, folder in spec.adapters:
            if name not in self.adapters:
                self._load_adapter(name, Path(folder))

    def _load_adapter(self, name: str, folder: Path) -> None:
        from peft import PeftModel

        from engine.models import loading as models

        models.check_adapter(folder)
        try:
            if isinstance(self.model, PeftModel):
                self.model.load_adapter(str(folder), adapter_name=name)
            else:
                self.model = PeftModel.from_pretrained(self.model, str(folder), adapter_name=name)
        except Exception as err:  # bad safetensors, shape mismatch, another base's adapter: all a damaged folder
            from peft import PeftModel as _P

            if isinstance(self.model, _P) and name in self.model.peft_config:
                self.model.delete_adapter(name)  # half-loaded: gone, so a fixed folder can be loaded later
            first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
            raise UserError(f"{folder}: damaged adapter, cannot load it ({type(err).__name__}: {first})") from None
        self.model.eval()
        self.adapters.add(name)
        self.log(f"adapter {name} loaded from {folder}")

    def _activate(self, spec: ModelSpec):
        """A context manager under which the model answers as `spec`."""
        import contextlib

        from peft import PeftModel

        if not isinstance(self.model, PeftModel):
            return contextlib.nullcontext()
        if not spec.adapters:
            return self.model.disable_adapter()
        names = [n for n, _ in spec.adapters]
        # PeftModel.set_adapter takes one name; the LoRA layer beneath takes a list and sums their deltas.
        self.model.base_model.set_adapter(names if len(names) > 1 else names[0])
        return contextlib.nullcontext()

    def generate(self, spec: ModelSpec, messages: list[dict], s: ChatSettings, cancel: threading.Event,
                 on_text: OnText) -> Generation:
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

        self.prepare(spec)
        tok = self.tok
        text = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False, enable_thinking=s.thinking)
        ids = tok(text, add_special_tokens=False)["input_ids"]
        limit = int(getattr(self.model.config, "max_position_embeddings", 0) or 4096)
        context = min(limit, s.context) if s.context else limit
        ids, note = cut_left(ids, max(1, context - s.max_new_tokens))

        class Cancelled(StoppingCriteria):
            def __call__(self, input_ids, scores, **kwargs):
                return cancel.is_set()

        streamer = TextIteratorStreamer(tok, skip_prompt=True, skip_special_tokens=True)
        inputs = torch.tensor([ids], device=self.model.device)
        kwargs: dict[str, Any] = dict(
            input_ids=inputs, attention_mask=torch.ones_like(inputs), max_new_tokens=s.max_new_tokens,
            streamer=streamer, stopping_criteria=StoppingCriteriaList([Cancelled()]), pad_token_id=tok.pad_token_id,
        )
        if s.greedy:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        else:
            kwargs.update(do_sample=True, temperature=s.temperature, top_p=s.top_p, top_k=0)
        out: dict[str, Any] = {}

        def run() -> None:
            try:
                with self._activate(spec), torch.no_grad():
                    out["ids"] = self.model.generate(**kwargs)
            except BaseException as err:  # handed to the caller's thread
                out["error"] = err
                streamer.end()

        start = time.perf_counter()
        first = None
        parts: list[str] = []
        with self.lock:
            thread = threading.Thread(target=run, name="generate", daemon=True)
            thread.start()
            for piece in streamer:
                if piece:
                    if first is None:
                        first = time.perf_counter()
                    parts.append(piece)
                    on_text(piece)
            thread.join()
        end = time.perf_counter()
        if "error" in out:
            raise out["error"]
        n = int(out["ids"].shape[1] - len(ids))
        ttft, rate = _rates(start, first, end, n)
        status = "cancelled" if cancel.is_set() else "length" if n >= s.max_new_tokens else "done"
        return Generation("".join(parts), status, note, len(ids), n, ttft, rate, end - start)


class FolderModel(RunModels):
    """Any local transformers model folder (a baseline such as a raw base or Dolphin), loaded on its own."""

    def __init__(self, cfg: Config, run_dir: Path, log: Callable[[str], None], path: str):
        super().__init__(cfg, run_dir, log)
        self.path = path

    def _load_base(self) -> None:
        from engine.models import loading as models

        backend = models.pick_backend(self.cfg)
        t0 = time.perf_counter()
        self.model = models.load_plain(self.cfg, backend, self.path, quantize=backend.quantized)
        self.model.eval()
        try:
            self.tok = models.load_tokenizer(self.path)
        except (OSError, ValueError) as err:
            raise UserError(f"model {self.path!r}: no usable tokenizer ({str(err).splitlines()[0][:160]})") from None
        self.log(f"{self.path} loaded in {time.perf_counter() - t0:.1f} s")


class GGUFModel:
    """A GGUF file run by llama.cpp (what LM Studio loads), with the chat template it carries."""

    def __init__(self, path: str, log: Callable[[str], None], fallback_template: str | None = None):
        self.path = path
        self.log = log
        self.llm = None
        self.fallback_template = fallback_template

    def _open(self, n_ctx: int):
        # The export's llama.cpp loader: llama.cpp's extra CPU buffer types (the AMX Q8_0 path) crash on some CPUs,
        # it turns them off; the chat worker is its own process, so that touches no one else.
        from engine.evaluation.llama_check import _llama, available

        if not available():
            raise UserError(f"GGUF {self.path}: llama-cpp-python is not installed (pip install llama-cpp-python)")
        if not Path(self.path).is_file():
            raise UserError(f"GGUF {self.path}: no such file")
        try:
            return _llama(self.path, n_ctx)
        except (ValueError, RuntimeError, OSError) as err:
            first = (str(err).strip().splitlines() or ["unknown error"])[0][:160]
            raise UserError(f"GGUF {self.path}: llama.cpp cannot open it ({first})") from None

    def prepare(self, spec: ModelSpec, n_ctx: int = 4096) -> None:
        if self.llm is None:
            t0 = time.perf_counter()
            self.llm = self._open(n_ctx)
            self.log(f"GGUF {self.path} opened by llama.cpp in {time.perf_counter() - t0:.1f} s "
                     f"(context {self.llm.n_ctx()})")

    def _prompt(self, messages: list[dict], thinking: bool) -> str:
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        template = self.llm.metadata.get("tokenizer.chat_template") or self.fallback_template
        if not template:
            raise UserError(f"GGUF {self.path}: carries no chat template")
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        env.globals["raise_exception"] = lambda msg: (_ for _ in ()).throw(UserError(f"chat template: {msg}"))
        vocab = self.llm
        return env.from_string(template).render(
            messages=messages, add_generation_prompt=True, enable_thinking=thinking,
            bos_token=vocab.detokenize([vocab.token_bos()]).decode("utf-8", "replace") if vocab.token_bos() >= 0 else "",
            eos_token=vocab.detokenize([vocab.token_eos()]).decode("utf-8", "replace"),
        )

    def generate(self, spec: ModelSpec, messages: list[dict], s: ChatSettings, cancel: threading.Event,
                 on_text: OnText) -> Generation:
        self.prepare(spec, max(512, s.context or 4096))
        llm = self.llm
        ids = llm.tokenize(self._prompt(messages, s.thinking).encode("utf-8"), add_bos=False, special=True)
        context = min(llm.n_ctx(), s.context) if s.context else llm.n_ctx()
        ids, note = cut_left(list(ids), max(1, context - s.max_new_tokens))
        start = time.perf_counter()
        first = None
        parts: list[str] = []
        n = 0
        finish = None
        stream = llm.create_completion(ids, max_tokens=s.max_new_tokens, temperature=s.temperature if not s.greedy else 0.0,
                                       top_p=s.top_p, top_k=0 if not s.greedy else 1, min_p=0.0, repeat_penalty=1.0,
                                       stream=True, seed=0)
        for chunk in stream:
            if cancel.is_set():
                break
            choice = chunk["choices"][0]
            piece = choice.get("text") or ""
            if choice.get("finish_reason") is None:  # the closing chunk carries no token of its own
                n += 1
            if piece:
                if first is None:
                    first = time.perf_counter()
                parts.append(piece)
                on_text(piece)
            finish = choice.get("finish_reason") or finish
        stream.close()
        end = time.perf_counter()
        ttft, rate = _rates(start, first, end, n)
        status = "cancelled" if cancel.is_set() else "length" if finish == "length" else "done"
        return Generation("".join(parts), status, note, len(ids), n, ttft, rate, end - start)
