"""Any OpenAI-compatible chat server: LM Studio, vLLM, llama.cpp server, Ollama. Plain HTTP, no SDK."""

from __future__ import annotations

import http.client
import json
import os
import socket
import urllib.error
import urllib.request
from typing import Any

from engine.text import split_think
from engine.llm.base import LLMBackend, LLMError, LLMRequest, LLMResult, retriable_status


def build_body(model: str, req: LLMRequest) -> dict[str, Any]:
    messages = ([{"role": "system", "content": req.system}] if req.system else []) + list(req.messages)
    body: dict[str, Any] = {"model": model, "messages": messages, "temperature": req.temperature, "max_tokens": req.max_tokens}
    if req.thinking:
        body["reasoning_effort"] = req.thinking  # honoured by servers that know it, ignored by the rest
    if req.json_schema:
        body["response_format"] = {"type": "json_schema", "json_schema": {"name": "scores", "schema": req.json_schema, "strict": True}}
    return body


def parse_body(payload: Any, model: str) -> LLMResult:
    """The reply text, its reasoning (reasoning_content, or a <think> block in the text) and token counts."""
    try:
        choice = payload["choices"][0]
        message = choice["message"]
        text = message.get("content") or ""
    except (KeyError, IndexError, TypeError):
        raise LLMError(f"malformed reply: no choices[0].message ({str(payload)[:200]})", retriable=True) from None
    reasoning = message.get("reasoning_content") or message.get("reasoning") or ""
    if not reasoning and "<think>" in text:
        reasoning, text = split_think(text)
    usage = payload.get("usage") or {}
    return LLMResult(text=text, reasoning=reasoning, tokens_in=int(usage.get("prompt_tokens") or 0),
                     tokens_out=int(usage.get("completion_tokens") or 0), model=payload.get("model", model))


def _retry_after(headers: Any) -> float | None:
    value = headers.get("Retry-After") if headers else None
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        return None  # an HTTP date: fall back to backoff


class OpenAIBackend(LLMBackend):
    name = "openai"

    def __init__(self, model: str, base_url: str, api_key_env: str = "OPENAI_API_KEY", timeout_s: float = 120.0):
        super().__init__(model)
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.api_key_env = api_key_env
        self.timeout_s = timeout_s
        self._schema_ok = True

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(self.api_key_env, "")  # read per call, never stored
        if key:
            headers["Authorization"] = f"Bearer {key}"
        return headers

    def generate(self, request: LLMRequest) -> LLMResult:
        if not self._schema_ok and request.json_schema:
            request = LLMRequest(**{**request.__dict__, "json_schema": None})
        body = json.dumps(build_body(self.model, request)).encode()
        req = urllib.request.Request(self.url, data=body, headers=self._headers(), method="POST")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as err:
            detail = err.read()[:300].decode("utf-8", "replace")
            if err.code == 400 and request.json_schema and "response_format" in detail:
                self._schema_ok = False  # this server has no structured output; ask without a schema
                raise LLMError("server rejected response_format; retrying without a schema", status=400, retriable=True) from None
            if err.code in (401, 403, 404):  # wrong key, no access, unknown model or URL: every call fails alike
                raise LLMError(f"HTTP {err.code} from {self.url} (model {self.model}): {' '.join(detail.split())[:200]}",
                               status=err.code, fatal=True) from None
            raise LLMError(f"HTTP {err.code} from {self.url}: {detail}", status=err.code,
                           retriable=retriable_status(err.code), retry_after=_retry_after(err.headers)) from None
        except (TimeoutError, socket.timeout) as err:
            raise LLMError(f"timed out after {self.timeout_s:g} s ({err})", status=408, retriable=True) from None
        except (urllib.error.URLError, http.client.HTTPException, ConnectionError, OSError) as err:
            reason = getattr(err, "reason", err)
            if isinstance(reason, (TimeoutError, socket.timeout)):
                raise LLMError(f"timed out after {self.timeout_s:g} s", status=408, retriable=True) from None
            raise LLMError(f"connection to {self.url} failed: {reason}", retriable=True) from None
        try:
            payload = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise LLMError(f"reply is not JSON: {raw[:120]!r}", retriable=True) from None
        return parse_body(payload, self.model)
