"""A transformers model in the worker process, as a generator or judge (greedy unless temperature > 0)."""

from __future__ import annotations

from engine.text import split_think
from engine.llm.base import LLMBackend, LLMRequest, LLMResult


class LocalBackend(LLMBackend):
    name = "local"

    def __init__(self, model: str):
        super().__init__(model)
        self._model = None
        self._tok = None

    def _load(self):
        if self._model is None:
            import torch
            from transformers import AutoModelForCausalLM

            from engine.models.loading import load_tokenizer

            self._tok = load_tokenizer(self.model)
            self._model = AutoModelForCausalLM.from_pretrained(
                self.model, dtype=torch.bfloat16 if torch.cuda.is_available() else torch.float32,
                device_map={"": 0} if torch.cuda.is_available() else None,
            ).eval()
        return self._model, self._tok

    def generate(self, request: LLMRequest) -> LLMResult:
        import torch

        model, tok = self._load()
        messages = ([{"role": "system", "content": request.system}] if request.system else []) + request.messages
        enc = tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True).to(model.device)
        kwargs = {"max_new_tokens": request.max_tokens, "do_sample": request.temperature > 0, "pad_token_id": tok.pad_token_id}
        if request.temperature > 0:
            kwargs["temperature"] = request.temperature
        with torch.no_grad():
            out = model.generate(**enc, **kwargs)
        new = out[0][enc["input_ids"].shape[1]:]
        text = tok.decode(new, skip_special_tokens=True)
        reasoning, answer = split_think(text)
        return LLMResult(text=answer, reasoning=reasoning, tokens_in=int(enc["input_ids"].shape[1]),
                         tokens_out=int(new.shape[0]), model=self.model)
