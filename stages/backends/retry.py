"""Which failures of an OpenAI-compatible server are worth another try, and how long to wait.

Only transport and server trouble is retried: timeouts, refused or dropped connections,
429, 408 and 5xx, and bodies the client could not parse. A server saying it lacks a
feature ("unsupported response_format", "image input is not supported") is a capability
answer, never retried. Anything else (a 4xx, or an exception of our own) is final.
"""

from __future__ import annotations

import email.utils
import random
import time
from dataclasses import dataclass
from typing import Any

_FORMAT_WORDS = ("response_format", "json_schema", "json schema", "json_object", "grammar")
_IMAGE_WORDS = ("image input", "image_url", "multimodal", "vision", "mmproj", "image")


@dataclass
class Attempt:
    """Why one HTTP attempt failed, and whether it is worth trying again."""

    reason: str
    retry: bool
    wait: float | None = None
    capability: str = ""          # "format" or "image" when the server lacks the feature
    connection: bool = False


def classify(exc: Exception) -> Attempt | None:
    """Sort an exception from the openai client into retry / capability / final; None when it
    is not a client error at all (a bug of ours: it must propagate, not be retried)."""
    import json

    import openai

    if isinstance(exc, openai.APITimeoutError):
        return Attempt("request timed out", retry=True)
    if isinstance(exc, openai.APIConnectionError):
        cause = exc.__cause__ or exc
        return Attempt(f"connection failed: {type(cause).__name__}: {cause}"[:200],
                       retry=True, connection=True)
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        body = str(exc.message or "").lower()
        if status in (400, 422, 500, 501) and any(w in body for w in _FORMAT_WORDS):
            return Attempt(f"HTTP {status}: {exc.message}"[:200], retry=False, capability="format")
        if status in (400, 500) and "not supported" in body and any(w in body for w in _IMAGE_WORDS):
            return Attempt(f"HTTP {status}: {exc.message}"[:200], retry=False, capability="image")
        reason = f"HTTP {status}: {str(exc.message)[:160]}"
        if status == 401:
            return Attempt(reason + " (check the API key environment variable)", retry=False)
        if status == 429 or status >= 500 or status == 408:
            return Attempt(reason, retry=True, wait=retry_after(exc.response.headers))
        return Attempt(reason, retry=False)
    if isinstance(exc, (openai.APIResponseValidationError, json.JSONDecodeError, MalformedAnswer)):
        return Attempt(f"malformed response: {exc}"[:200], retry=True)
    return None


class MalformedAnswer(Exception):
    """A body that parsed as JSON but is not a chat completion (no choices[0].message)."""


def answer_text(resp: Any) -> str:
    """The text of a chat completion, checking its shape explicitly: a server (or a proxy in
    front of it) that answers something else is a malformed response, retried like one,
    while a real bug of ours still raises as itself."""
    choices = getattr(resp, "choices", None)
    if not isinstance(choices, list) or not choices:
        raise MalformedAnswer(f"no choices in the answer: {str(resp)[:120]}")
    message = getattr(choices[0], "message", None)
    content = getattr(message, "content", None) if message is not None else None
    if message is None or not isinstance(content, (str, type(None))):
        raise MalformedAnswer(f"choices[0] has no message text: {str(choices[0])[:120]}")
    return content or ""


def retry_after(headers: Any) -> float | None:
    """Seconds from a Retry-After header (a number or an HTTP date), or None."""
    if not headers:
        return None
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value).timestamp()
            return max(0.0, when - time.time())
        except (TypeError, ValueError):
            return None


def backoff_delay(base: float, attempt: int, retry_after_s: float | None) -> float:
    """Exponential backoff with jitter, at least what the server asked for (capped)."""
    backoff = min(base * (2 ** attempt) * (0.5 + random.random()), 60.0)
    if retry_after_s is not None:
        return min(max(retry_after_s, backoff), 120.0)
    return backoff
