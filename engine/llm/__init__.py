"""LLM backends behind one small interface: vertex, vertex-batch, openai, local, offline."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from engine.config import LLMConfig
from engine.config.sections import LLMBackendName
from engine.llm.base import LLMBackend, LLMError, LLMRequest, LLMResult
from engine.llm.limits import LimitedBackend, RetryPolicy

__all__ = ["LLMBackend", "LLMError", "LLMRequest", "LLMResult", "LimitedBackend", "make_backend", "make_limited"]


OfflineJudge = Callable[[list[dict], str, str], str]  # (turns, reasoning, answer) -> the judge's reply text


def make_backend(cfg: LLMConfig, ctx: Any = None, offline_judge: OfflineJudge | None = None) -> LLMBackend:
    """The backend `cfg.backend` names. `offline_judge` answers judge requests on the offline backend (the judging
    wing passes its heuristic judge; this wing knows no judge)."""
    if cfg.backend == LLMBackendName.OFFLINE:
        from engine.llm.offline import OfflineBackend

        return OfflineBackend(cfg.model, judge=offline_judge)
    if cfg.backend == LLMBackendName.OPENAI:
        from engine.llm.openai_compat import OpenAIBackend

        return OpenAIBackend(cfg.model, cfg.base_url, cfg.api_key_env, cfg.timeout_s)
    if cfg.backend in (LLMBackendName.VERTEX, LLMBackendName.VERTEX_BATCH):
        from engine.llm.vertex import VertexBackend

        return VertexBackend(cfg.model, cfg.project, cfg.location)
    if cfg.backend == LLMBackendName.LOCAL:
        from engine.llm.local import LocalBackend

        model = cfg.model
        if ctx is not None and model.startswith("demo:"):
            from engine.models.loading import base_path

            model = base_path(ctx.cfg, ctx.run_dir)
        return LocalBackend(model)
    raise ValueError(f"unknown backend {cfg.backend!r}")  # the config validator stops this first


def make_limited(cfg: LLMConfig, ctx: Any = None, seed: int = 0, offline_judge: OfflineJudge | None = None) -> LimitedBackend:
    backend = make_backend(cfg, ctx, offline_judge)
    if backend.labelled_offline:
        # Rate limits protect remote services; the offline backend has none to protect.
        return LimitedBackend(backend, cfg.concurrency, 10**9, 10**12, RetryPolicy(0), seed=seed)
    return LimitedBackend(backend, cfg.concurrency, cfg.rpm, cfg.tpm, RetryPolicy(cfg.max_retries, cfg.backoff_s), seed=seed)
