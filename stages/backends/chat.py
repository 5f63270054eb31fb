"""Chat backend: any OpenAI-compatible server (vLLM, llama.cpp, Ollama, LM Studio, OpenAI).

One `ChatBackend` per run. It answers from the call cache when it can; otherwise it picks
the endpoint with the fewest requests in flight, retries transient failures (429 with
Retry-After, 5xx, timeouts, refused or dropped connections) with exponential backoff and
jitter, and falls back from `json_schema` to `json_object` to plain text + extraction (with
one repair turn) when a server does not support structured output. Capability answers
("unsupported response_format", "image input is not supported") are remembered per
endpoint, never retried. The API key is read from the environment and never stored.
"""

from __future__ import annotations

import asyncio
import email.utils
import functools
import os
import random
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import LLMConfig
from ..errors import CapabilityError, FatalError, ItemError
from ..store import CallCache, hash_value, sha256_text
from .jsonout import parse_structured
from .local_server import MODEL_ALIAS, LocalServer, find_gguf

STRUCTURED_MODES = ("json_schema", "json_object", "prompt")
_DATA_URL = re.compile(r"^data:[^;,]+;base64,")
_FORMAT_WORDS = ("response_format", "json_schema", "json schema", "json_object", "grammar")
_IMAGE_WORDS = ("image input", "image_url", "multimodal", "vision", "mmproj", "image")


@dataclass
class CallStats:
    """What a run cost: model calls made, answered from cache, retried."""

    calls: int = 0
    cache_hits: int = 0
    retries: int = 0

    def as_dict(self) -> dict[str, int]:
        return {"calls": self.calls, "cache_hits": self.cache_hits, "retries": self.retries}


@dataclass
class ChatResult:
    text: str
    data: Any = None
    cached: bool = False


@dataclass
class _Endpoint:
    url: str
    client: Any = None
    outstanding: int = 0
    failures: int = 0
    down_until: float = 0.0
    structured: str = "json_schema"
    no_images: bool = False


@dataclass
class _Attempt:
    """Why one HTTP attempt failed, and whether it is worth trying again."""

    reason: str
    retry: bool
    wait: float | None = None
    capability: str = ""          # "format" or "image" when the server lacks the feature
    connection: bool = False


def message_key(messages: list[dict]) -> list[dict]:
    """Messages with every inline image replaced by the hash of its bytes (for cache keys)."""
    out = []
    for msg in messages:
        content = msg.get("content")
        if isinstance(content, list):
            parts = []
            for part in content:
                if part.get("type") == "image_url":
                    url = part["image_url"]["url"]
                    digest = sha256_text(_DATA_URL.sub("", url)) if _DATA_URL.match(url) else url
                    parts.append({"type": "image", "sha256": digest})
                else:
                    parts.append(part)
            content = parts
        out.append({"role": msg["role"], "content": content})
    return out


def has_image(messages: list[dict]) -> bool:
    return any(isinstance(m.get("content"), list) and
               any(p.get("type") == "image_url" for p in m["content"]) for m in messages)


class ChatBackend:
    """Cached, retrying, load-spreading chat completions."""

    def __init__(self, cfg: LLMConfig, cache: CallCache, stats: CallStats, *,
                 cache_dir: Path, base_urls: tuple[str, ...] | None = None,
                 model: str | None = None):
        self.cfg = cfg
        self.cache = cache
        self.stats = stats
        self.cache_dir = Path(cache_dir)
        self.urls = tuple(base_urls or cfg.base_url)
        self.model_setting = cfg.model if model is None else model
        self.local: LocalServer | None = None
        self.endpoints: list[_Endpoint] = []
        self._model_name = ""
        self._ready: asyncio.Lock | None = None
        self._slots: asyncio.Semaphore | None = None     # requests in flight (llm.concurrency)

    # -- identity -------------------------------------------------------------------------
    @functools.cached_property
    def model_id(self) -> str:
        """The model as it enters cache keys: the GGUF file name for the embedded server."""
        if self.urls == ("local",):
            return "gguf:" + find_gguf(self.model_setting).name
        return self.model_setting or "(server default)"

    def identity(self) -> dict:
        return {"model": self.model_id, "temperature": self.cfg.temperature,
                "top_p": self.cfg.top_p, "max_tokens": self.cfg.max_tokens,
                "frequency_penalty": self.cfg.frequency_penalty,
                "presence_penalty": self.cfg.presence_penalty,
                "seed": self.cfg.seed, "stop": list(self.cfg.stop)}

    # -- public call ----------------------------------------------------------------------
    async def chat(self, messages: list[dict], *, template_hash: str, schema: dict | None = None,
                   schema_name: str = "answer", temperature: float | None = None,
                   max_tokens: int | None = None, sample: int = 0) -> ChatResult:
        """One answer for `messages`, from the cache when the same call was made before.

        `sample` numbers independent samples of the same request (k candidates): each
        gets its own cache entry and its own seed.
        """
        params = {
            "temperature": self.cfg.temperature if temperature is None else temperature,
            "top_p": self.cfg.top_p,
            "frequency_penalty": self.cfg.frequency_penalty or None,
            "presence_penalty": self.cfg.presence_penalty or None,
            "max_tokens": self.cfg.max_tokens if max_tokens is None else max_tokens,
            "stop": list(self.cfg.stop) or None,
            "seed": None if self.cfg.seed < 0 else self.cfg.seed + sample,
        }
        key = hash_value({"model": self.model_id, "messages": message_key(messages),
                          "params": params, "schema": schema, "template": template_hash,
                          "sample": sample})
        hit = self.cache.get(key)
        if hit is not None and "text" in hit:
            self.stats.cache_hits += 1
            return ChatResult(hit["text"], hit.get("data"), cached=True)
        text, data = await self._answer(messages, params, schema, schema_name)
        # File creation can take a millisecond; keep it off the event loop.
        await asyncio.to_thread(self.cache.put, key, {
            "model": self.model_id, "params": params, "template": template_hash,
            "text": text, "data": data, "created": time.time()})
        return ChatResult(text, data, cached=False)

    async def _answer(self, messages, params, schema, schema_name) -> tuple[str, Any]:
        await self._ensure_ready()
        if schema is None:
            return await self._request(messages, params, None), None
        ep_mode = self._pick().structured if self.cfg.structured == "auto" else self.cfg.structured
        mode = ep_mode
        while True:
            fmt, msgs = _structured_request(mode, messages, schema, schema_name)
            try:
                text = await self._request(msgs, params, fmt)
                break
            except CapabilityError as exc:
                if "format" not in str(exc) or mode == "prompt":
                    raise
                mode = STRUCTURED_MODES[STRUCTURED_MODES.index(mode) + 1]
        try:
            return text, parse_structured(text, schema)
        except ValueError as problem:
            repair = msgs + [
                {"role": "assistant", "content": text},
                {"role": "user", "content": f"That answer is not usable ({problem}). Reply with "
                 "only one JSON object that follows the schema, and nothing else."}]
            text2 = await self._request(repair, params, fmt)
            try:
                return text2, parse_structured(text2, schema)
            except ValueError as problem2:
                raise ItemError(f"model answer is not valid JSON for the schema after one "
                                f"repair: {problem2}") from None

    # -- endpoints ------------------------------------------------------------------------
    async def _ensure_ready(self) -> None:
        if self._ready is None:
            self._ready = asyncio.Lock()
            self._slots = asyncio.Semaphore(self.cfg.concurrency)
        async with self._ready:
            if self.endpoints:
                return
            urls = list(self.urls)
            if urls == ["local"]:
                self.local = LocalServer(
                    find_gguf(self.model_setting), parallel=self.cfg.local_parallel,
                    ctx_per_slot=self.cfg.local_ctx, threads=self.cfg.local_threads,
                    log_path=self.cache_dir / "llama-server.log",
                    start_timeout=self.cfg.local_start_timeout)
                urls = [await asyncio.to_thread(self.local.start)]
                self._model_name = MODEL_ALIAS
            else:
                self._model_name = self.model_setting
            endpoints = [_Endpoint(url.rstrip("/")) for url in urls]
            reachable = await asyncio.gather(*(self._probe(ep) for ep in endpoints))
            live = [ep for ep, ok in zip(endpoints, reachable, strict=False) if ok]
            if not live:
                raise FatalError(
                    f"cannot reach the LLM server at {', '.join(urls)} (llm.base_url): "
                    "start one (e.g. `vllm serve MODEL`, `ollama serve`, `llama-server -m "
                    "MODEL.gguf`) or set llm.base_url = local to use the embedded model")
            self.endpoints = live

    async def _probe(self, ep: _Endpoint) -> bool:
        import openai

        ep.client = openai.AsyncOpenAI(
            base_url=ep.url, api_key=os.environ.get(self.cfg.api_key_env) or "not-needed",
            timeout=self.cfg.timeout, max_retries=0)
        try:
            page = await ep.client.models.list(timeout=min(10.0, self.cfg.timeout))
            if not self._model_name and page.data:
                self._model_name = page.data[0].id
            return True
        except (openai.APIConnectionError, openai.APITimeoutError):
            return False
        except openai.AuthenticationError:
            raise FatalError(f"the server at {ep.url} refused the API key: set the environment "
                             f"variable named by llm.api_key_env ({self.cfg.api_key_env})") from None
        except openai.APIError:
            return True   # reachable; some servers have no /models

    def _pick(self) -> _Endpoint:
        now = time.monotonic()
        up = [ep for ep in self.endpoints if ep.down_until <= now] or self.endpoints
        return min(up, key=lambda ep: (ep.outstanding, ep.down_until, random.random()))

    async def _request(self, messages: list[dict], params: dict, fmt: dict | None) -> str:
        from openai.types.chat import ChatCompletion

        attempts = self.cfg.retries + 1
        last = "no attempt made"
        for attempt in range(attempts):
            ep = self._pick()
            if ep.no_images and has_image(messages):
                raise CapabilityError(f"image input is not supported by {ep.url}")
            await self._slots.acquire()
            ep.outstanding += 1
            try:
                self.stats.calls += 1
                body = {"model": self._model_name or MODEL_ALIAS, "messages": messages,
                        **{k: v for k, v in params.items() if v is not None}}
                if fmt is not None:
                    body["response_format"] = fmt
                # The body is plain JSON already: post it as is, skipping the client's
                # per-field request transform (milliseconds per call on long messages).
                resp = await ep.client.post("/chat/completions", body=body,
                                            cast_to=ChatCompletion)
                text = (resp.choices[0].message.content or "") if resp.choices else ""
                ep.failures = 0
                return text.strip()
            except Exception as exc:  # classified below; unknown errors fail the item
                failure = _classify(exc)
                if failure is None:
                    raise
            finally:
                ep.outstanding -= 1
                self._slots.release()
            if failure.capability == "format":
                if fmt is not None and self.cfg.structured == "auto":
                    ep.structured = _next_mode(fmt)
                raise CapabilityError(f"format: {failure.reason}")
            if failure.capability == "image":
                ep.no_images = True
                raise CapabilityError(f"image input is not supported by {ep.url}: "
                                      f"{failure.reason}")
            last = failure.reason
            if not failure.retry:
                raise ItemError(failure.reason)
            if failure.connection:
                ep.failures += 1
                ep.down_until = time.monotonic() + min(30.0, 2.0 ** ep.failures)
            if attempt + 1 < attempts:
                self.stats.retries += 1
                await asyncio.sleep(self._delay(attempt, failure.wait))
        raise ItemError(f"gave up after {attempts} attempts: {last}")

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        backoff = min(self.cfg.backoff * (2 ** attempt) * (0.5 + random.random()), 60.0)
        if retry_after is not None:
            return min(max(retry_after, backoff), 120.0)
        return backoff

    async def aclose(self) -> None:
        for ep in self.endpoints:
            if ep.client is not None:
                await ep.client.close()
        self.endpoints = []
        if self.local is not None:
            await asyncio.to_thread(self.local.stop)
            self.local = None


def _next_mode(fmt: dict) -> str:
    current = fmt.get("type", "json_schema")
    i = STRUCTURED_MODES.index(current) if current in STRUCTURED_MODES else 0
    return STRUCTURED_MODES[min(i + 1, len(STRUCTURED_MODES) - 1)]


def _structured_request(mode: str, messages: list[dict], schema: dict,
                        name: str) -> tuple[dict | None, list[dict]]:
    """response_format and messages for one structured-output mode."""
    if mode == "json_schema":
        return {"type": "json_schema",
                "json_schema": {"name": name, "schema": schema, "strict": True}}, messages
    import json

    note = ("Answer with one JSON object only, no prose, matching this JSON Schema:\n"
            + json.dumps(schema, ensure_ascii=False))
    msgs = [dict(m) for m in messages]
    if msgs and msgs[0]["role"] == "system" and isinstance(msgs[0]["content"], str):
        msgs[0]["content"] = msgs[0]["content"].rstrip() + "\n\n" + note
    else:
        msgs.insert(0, {"role": "system", "content": note})
    if mode == "json_object":
        return {"type": "json_object"}, msgs
    return None, msgs


def _retry_after(headers: Any) -> float | None:
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


def _classify(exc: Exception) -> _Attempt | None:
    """Sort an exception from the openai client into retry / capability / final."""
    import json

    import openai

    if isinstance(exc, openai.APITimeoutError):
        return _Attempt("request timed out", retry=True)
    if isinstance(exc, openai.APIConnectionError):
        cause = exc.__cause__ or exc
        return _Attempt(f"connection failed: {type(cause).__name__}: {cause}"[:200],
                        retry=True, connection=True)
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        body = str(exc.message or "").lower()
        if status in (400, 422, 500, 501) and any(w in body for w in _FORMAT_WORDS):
            return _Attempt(f"HTTP {status}: {exc.message}"[:200], retry=False, capability="format")
        if status in (400, 500) and "not supported" in body and any(w in body for w in _IMAGE_WORDS):
            return _Attempt(f"HTTP {status}: {exc.message}"[:200], retry=False, capability="image")
        reason = f"HTTP {status}: {str(exc.message)[:160]}"
        if status == 401:
            return _Attempt(reason + " (check the API key environment variable)", retry=False)
        if status == 429 or status >= 500 or status == 408:
            return _Attempt(reason, retry=True, wait=_retry_after(exc.response.headers))
        return _Attempt(reason, retry=False)
    if isinstance(exc, (openai.APIResponseValidationError, json.JSONDecodeError)):
        return _Attempt(f"malformed response: {exc}"[:200], retry=True)
    if isinstance(exc, (IndexError, AttributeError, TypeError, ValueError)):
        return _Attempt(f"malformed response: {type(exc).__name__}: {exc}"[:200], retry=True)
    return None
