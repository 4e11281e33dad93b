"""LLM backends behind one small interface: vertex, vertex-batch, openai, local, offline."""

from __future__ import annotations

from typing import Any

from engine.config import LLMConfig
from engine.llm.base import LLMBackend, LLMError, LLMRequest, LLMResult
from engine.llm.limits import LimitedBackend, RetryPolicy

__all__ = ["LLMBackend", "LLMError", "LLMRequest", "LLMResult", "LimitedBackend", "make_backend", "make_limited"]


def make_backend(cfg: LLMConfig, ctx: Any = None) -> LLMBackend:
    if cfg.backend == "offline":
        from engine.llm.offline import OfflineBackend

        return OfflineBackend(cfg.model)
    if cfg.backend == "openai":
        from engine.llm.openai_compat import OpenAIBackend

        return OpenAIBackend(cfg.model, cfg.base_url, cfg.api_key_env, cfg.timeout_s)
    if cfg.backend in ("vertex", "vertex-batch"):
        from engine.llm.vertex import VertexBackend

        return VertexBackend(cfg.model, cfg.project, cfg.location)
    if cfg.backend == "local":
        from engine.llm.local import LocalBackend

        model = cfg.model
        if ctx is not None and model.startswith("demo:"):
            from engine.training.models import base_path

            model = base_path(ctx.cfg, ctx.run_dir)
        return LocalBackend(model)
    raise ValueError(f"unknown backend {cfg.backend!r}")  # the config validator stops this first


def make_limited(cfg: LLMConfig, ctx: Any = None, seed: int = 0) -> LimitedBackend:
    backend = make_backend(cfg, ctx)
    if backend.labelled_offline:
        # Rate limits protect remote services; the offline backend has none to protect.
        return LimitedBackend(backend, cfg.concurrency, 10**9, 10**12, RetryPolicy(0), seed=seed)
    return LimitedBackend(backend, cfg.concurrency, cfg.rpm, cfg.tpm, RetryPolicy(cfg.max_retries, cfg.backoff_s), seed=seed)
