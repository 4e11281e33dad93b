"""What a failed Vertex AI call means: google-genai's APIError codes, httpx transport errors, google-auth errors."""

from __future__ import annotations

import re

from engine.llm.base import LLMError, retriable_status

# Status codes that will fail the same way on every call until the config or the account changes.
FATAL = {400: "bad request", 401: "not authenticated", 403: "permission denied", 404: "model or location not found"}


def _one_line(text: str, limit: int = 240) -> str:
    """A server's message as one printable line (no newlines, no control sequences)."""
    flat = re.sub(r"\s+", " ", text or "").strip()
    return "".join(ch for ch in flat if ch.isprintable())[:limit]


def _retry_after(response) -> float | None:
    headers = getattr(response, "headers", None)
    value = headers.get("Retry-After") if headers is not None else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None  # an HTTP date: fall back to backoff


def classify(err: BaseException, project: str, location: str, model: str) -> LLMError | None:
    """An LLMError for a Vertex failure (retriable or not, fatal or not), or None for an error that is a bug."""
    import httpx
    from google.auth import exceptions as auth_errors
    from google.genai import errors

    where = f"project {project}, location {location}, model {model}"
    if isinstance(err, errors.APIError):
        code = int(err.code or 0)
        message = _one_line(err.message or str(err))
        if code in FATAL:
            return LLMError(f"Vertex AI {code} {err.status or FATAL[code]} ({where}): {message}", status=code,
                            retriable=False, fatal=True)
        return LLMError(f"Vertex AI {code} {err.status or ''} ({where}): {message}", status=code,
                        retriable=retriable_status(code),
                        retry_after=_retry_after(err.response))
    if isinstance(err, httpx.TimeoutException):
        return LLMError(f"Vertex AI timed out ({type(err).__name__}; {where})", status=408, retriable=True)
    if isinstance(err, (httpx.NetworkError, httpx.RemoteProtocolError, httpx.ProxyError)):
        return LLMError(f"Vertex AI connection failed ({type(err).__name__}: {_one_line(str(err), 120)}; {where})",
                        retriable=True)
    if isinstance(err, auth_errors.DefaultCredentialsError):
        return LLMError(f"Vertex AI: no Application Default Credentials ({where}); run `gcloud auth "
                        "application-default login`", retriable=False, fatal=True)
    if isinstance(err, auth_errors.TransportError):
        return LLMError(f"Vertex AI: could not reach the token service ({where}): {_one_line(str(err), 120)}",
                        retriable=True)
    if isinstance(err, auth_errors.RefreshError):
        return LLMError(f"Vertex AI: credentials could not be refreshed ({where}); run `gcloud auth "
                        f"application-default login` ({_one_line(str(err), 120)})", retriable=False, fatal=True)
    if isinstance(err, (TimeoutError, ConnectionError)):
        return LLMError(f"Vertex AI connection: {_one_line(str(err), 120)} ({where})", retriable=True)
    return None
