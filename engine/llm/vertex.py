"""Gemini on Vertex AI through the google-genai client (vertexai=True), with Application Default Credentials only.

Request building and reply parsing are plain functions over the REST shapes, so they are tested on recorded
payloads; the same parser reads batch-prediction result lines.
"""

from __future__ import annotations

import os
from typing import Any

from engine.errors import UserError
from engine.llm.base import LLMBackend, LLMError, LLMRequest, LLMResult


def build_request(req: LLMRequest) -> dict[str, Any]:
    """A generateContent request body (REST field names), as sent and as written to batch files."""
    contents = [
        {"role": "model" if m["role"] == "assistant" else "user", "parts": [{"text": m["content"]}]} for m in req.messages
    ]
    gen: dict[str, Any] = {"temperature": req.temperature, "maxOutputTokens": req.max_tokens}
    if req.thinking:
        gen["thinkingConfig"] = {"thinkingLevel": req.thinking.upper(), "includeThoughts": True}
    if req.json_schema:
        gen["responseMimeType"] = "application/json"
        gen["responseJsonSchema"] = req.json_schema
    body: dict[str, Any] = {"contents": contents, "generationConfig": gen}
    if req.system:
        body["systemInstruction"] = {"parts": [{"text": req.system}]}
    return body


def _get(d: dict, *names: str, default: Any = None) -> Any:
    for n in names:
        if n in d and d[n] is not None:
            return d[n]
    return default


def parse_response(payload: dict[str, Any], model: str = "") -> LLMResult:
    """Text, thought summary and token counts from a generateContent reply (camelCase REST or snake_case SDK dump)."""
    candidates = _get(payload, "candidates", default=[])
    if not candidates:
        feedback = _get(payload, "promptFeedback", "prompt_feedback", default={})
        reason = _get(feedback, "blockReason", "block_reason", default="no candidates")
        raise LLMError(f"Gemini returned no answer ({reason})", retriable=False)
    cand = candidates[0]
    finish = _get(cand, "finishReason", "finish_reason", default="")
    parts = _get(_get(cand, "content", default={}) or {}, "parts", default=[]) or []
    thoughts = [p.get("text", "") for p in parts if p.get("thought")]
    texts = [p.get("text", "") for p in parts if not p.get("thought") and p.get("text")]
    if not texts and str(finish) in ("SAFETY", "PROHIBITED_CONTENT", "BLOCKLIST", "FinishReason.SAFETY"):
        raise LLMError(f"Gemini blocked the answer (finishReason {finish})", retriable=False)
    usage = _get(payload, "usageMetadata", "usage_metadata", default={}) or {}
    tokens_out = int(_get(usage, "candidatesTokenCount", "candidates_token_count", default=0)) + int(
        _get(usage, "thoughtsTokenCount", "thoughts_token_count", default=0)
    )
    return LLMResult(
        text="".join(texts), reasoning="\n".join(t for t in thoughts if t),
        tokens_in=int(_get(usage, "promptTokenCount", "prompt_token_count", default=0)), tokens_out=tokens_out,
        model=_get(payload, "modelVersion", "model_version", default=model), raw=None,
    )


def require_google(module: str, package: str) -> None:
    """The Google clients are the `vertex` extra (the demo and the panel do without): one line when one is missing."""
    import importlib.util
    import sys

    parts = module.split(".")
    # A package blocked in sys.modules (None) hides everything under it, even a submodule imported before.
    blocked = any(".".join(parts[:i]) in sys.modules and sys.modules[".".join(parts[:i])] is None
                  for i in range(1, len(parts) + 1))
    try:
        found = not blocked and importlib.util.find_spec(module) is not None
    except ImportError:  # no `google` namespace at all
        found = False
    if not found:
        raise UserError(f"the vertex backends need {package}, which is not installed: pip install -e \".[vertex]\" "
                        "-c requirements/lock.txt")


def _to_sdk_config(body: dict[str, Any]):
    from google.genai import types

    gen = body["generationConfig"]
    kwargs: dict[str, Any] = {"temperature": gen["temperature"], "max_output_tokens": gen["maxOutputTokens"]}
    if "thinkingConfig" in gen:
        kwargs["thinking_config"] = types.ThinkingConfig(
            thinking_level=gen["thinkingConfig"]["thinkingLevel"], include_thoughts=True
        )
    if "responseJsonSchema" in gen:
        kwargs["response_mime_type"] = "application/json"
        kwargs["response_json_schema"] = gen["responseJsonSchema"]
    if "systemInstruction" in body:
        kwargs["system_instruction"] = body["systemInstruction"]["parts"][0]["text"]
    return types.GenerateContentConfig(**kwargs)


class VertexBackend(LLMBackend):
    name = "vertex"

    def __init__(self, model: str, project: str = "", location: str = "", client: Any = None):
        super().__init__(model)
        self.project = project or os.environ.get("GOOGLE_CLOUD_PROJECT", "")
        self.location = location or os.environ.get("GOOGLE_CLOUD_LOCATION", "global")
        if not self.project:
            raise UserError("vertex backend: no project (set llm.project in the config or GOOGLE_CLOUD_PROJECT)")
        if client is None:
            require_google("google.genai", "google-genai")
        self._client = client  # a ready genai.Client (tests hand in one on a fake transport)

    def client(self):
        if self._client is None:
            from google import genai

            # Credentials come from Application Default Credentials only (gcloud auth application-default login).
            # The client's own retries stay off (its default): LimitedBackend retries, under the rate limit.
            self._client = genai.Client(vertexai=True, project=self.project, location=self.location)
        return self._client

    def generate(self, request: LLMRequest) -> LLMResult:
        from engine.llm.vertex_errors import classify

        body = build_request(request)
        try:
            resp = self.client().models.generate_content(
                model=self.model, contents=body["contents"], config=_to_sdk_config(body)
            )
        except Exception as err:  # google-genai, httpx and google-auth errors; anything else is a bug and re-raised
            classified = classify(err, self.project, self.location, self.model)
            if classified is None:
                raise
            raise classified from None
        return parse_response(resp.model_dump(mode="json", exclude_none=True), self.model)
