"""Chat backend: any OpenAI-compatible server (vLLM, llama.cpp, Ollama, LM Studio, OpenAI).

One `ChatBackend` per run. Before any cache key is computed, `start()` resolves what the
server really serves: the model listed at `/v1/models` (several listed and none chosen is a
configuration error; several URLs must serve the same model), or the GGUF file's own hash
for the embedded server. That resolved id is what keys and provenance carry, so a second
server with another model at the same URL never reuses the first one's answers.

Calls are answered from the call cache when the same call was made before; identical calls
in flight at once are sent once (single-flight). Otherwise a call goes to the endpoint
with the fewest requests in flight, transient failures are retried (see retry.py), and
JSON answers fall back from `json_schema` to `json_object` to extraction from prose with one
repair turn (see jsonout.py) when `llm.structured = auto`; an explicit mode is honoured or
the item fails. The API key is read from the environment and never stored.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import CapabilityError, ConfigError, FatalError, ItemError, public_url
from ..store import CallCache, content_digest, hash_value, sha256_text
from .jsonout import STRUCTURED_MODES, next_mode, parse_structured, structured_request
from .local_server import MODEL_ALIAS, LocalServer, find_gguf
from .retry import answer_text, backoff_delay, classify

_DATA_URL = re.compile(r"^data:[^;,]+;base64,")
# Request parameters a stage may set per call (others come from [llm] only).
PARAMS = ("temperature", "top_p", "frequency_penalty", "presence_penalty", "max_tokens", "stop", "seed")


@dataclass
class CallStats:
    """What a run cost: model calls made, answered from cache (or from an identical call in
    flight), retried."""

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
    images_ok: bool = False          # it has answered a request with an image


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

    def __init__(self, cfg: Any, cache: CallCache, stats: CallStats, *,
                 cache_dir: Path, base_urls: tuple[str, ...] | None = None,
                 model: str | None = None, model_key: str = "llm.model",
                 digests: Path | None = None):
        self.cfg = cfg                       # LLMConfig or a view of it
        self.cache = cache
        self.stats = stats
        self.cache_dir = Path(cache_dir)
        self.digests = digests               # memo of model-file hashes (None: hash, keep nothing)
        self.urls = tuple(base_urls or cfg.base_url)
        self.model_setting = cfg.model if model is None else model
        self.model_key = model_key           # the setting that names the model, for errors
        self.local: LocalServer | None = None
        self.endpoints: list[_Endpoint] = []
        self._served = ""                    # the model name sent in requests
        self._model_id = ""                  # the model as keys see it (resolved by start)
        self._start_lock: asyncio.Lock | None = None
        self._ready: asyncio.Lock | None = None
        self._slots: asyncio.Semaphore | None = None     # requests in flight (llm.concurrency)
        self._inflight: dict[str, asyncio.Future] = {}

    # -- identity -------------------------------------------------------------------------
    @property
    def model_id(self) -> str:
        """The model as it enters cache keys; known once `start()` has run."""
        if not self._model_id:
            raise RuntimeError("ChatBackend.model_id read before start(): resolve the model first")
        return self._model_id

    def params(self, **overrides: Any) -> dict:
        """The sampling parameters a call sends, with a stage's overrides applied."""
        unknown = set(overrides) - set(PARAMS)
        if unknown:
            raise TypeError(f"unknown chat parameters: {sorted(unknown)}")
        cfg = self.cfg
        values = {"temperature": cfg.temperature, "top_p": cfg.top_p,
                  "frequency_penalty": cfg.frequency_penalty, "presence_penalty": cfg.presence_penalty,
                  "max_tokens": cfg.max_tokens, "stop": list(cfg.stop), "seed": cfg.seed}
        values.update({k: v for k, v in overrides.items() if v is not None})
        return values

    def identity(self, **overrides: Any) -> dict:
        """What decides an answer besides the messages: the resolved model, how JSON is asked
        for, the context size of the embedded server, and the sampling parameters."""
        ident = {"model": self.model_id, "structured": self.cfg.structured, **self.params(**overrides)}
        if self.urls == ("local",):
            ident["local_ctx"] = self.cfg.local_ctx
        return ident

    async def start(self) -> None:
        """Resolve the served model (once). Remote servers are asked at /v1/models; the
        embedded server is identified by its GGUF file and is not started until a call needs it."""
        if self._model_id:
            return
        if self._start_lock is None:
            self._start_lock = asyncio.Lock()
        async with self._start_lock:
            if self._model_id:
                return
            if self.urls == ("local",):
                gguf = find_gguf(self.model_setting, self.model_key)
                digest = await asyncio.to_thread(content_digest, gguf, self.digests)
                self._model_id = f"gguf:{gguf.name}:{digest[:16]}"
                return
            await self._connect()

    # -- public call ----------------------------------------------------------------------
    async def chat(self, messages: list[dict], *, template_hash: str, schema: dict | None = None,
                   schema_name: str = "answer", sample: int = 0, **overrides: Any) -> ChatResult:
        """One answer for `messages`, from the cache when the same call was made before.

        `sample` numbers independent samples of the same request (k candidates): each gets
        its own cache entry and its own seed. `overrides` set PARAMS for this call.
        """
        await self.start()
        params = self.params(**overrides)
        params = {**params, "frequency_penalty": params["frequency_penalty"] or None,
                  "presence_penalty": params["presence_penalty"] or None,
                  "stop": params["stop"] or None,
                  "seed": None if params["seed"] < 0 else params["seed"] + sample}
        key = hash_value({"model": self.model_id, "messages": message_key(messages),
                          "params": params, "schema": schema, "template": template_hash,
                          "structured": self.cfg.structured, "sample": sample})
        hit = self.cache.get(key)
        if hit is not None and "text" in hit:
            self.stats.cache_hits += 1
            return ChatResult(hit["text"], hit.get("data"), cached=True)
        waiting = self._inflight.get(key)
        if waiting is not None:                    # the same call is on its way: share it
            text, data = await asyncio.shield(waiting)
            self.stats.cache_hits += 1
            return ChatResult(text, data, cached=True)
        future = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        try:
            text, data = await self._answer(messages, params, schema, schema_name)
            if not text.strip():              # never cached: the next run asks again
                raise ItemError("the model returned an empty answer")
            # File creation can take a millisecond; keep it off the event loop.
            await asyncio.to_thread(self.cache.put, key, {
                "model": self.model_id, "params": params, "template": template_hash,
                "text": text, "data": data, "created": time.time()})
            future.set_result((text, data))
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()                     # retrieved: no "never retrieved" warning
            raise
        finally:
            del self._inflight[key]
        return ChatResult(text, data, cached=False)

    async def _answer(self, messages, params, schema, schema_name) -> tuple[str, Any]:
        await self._ensure_ready()
        if schema is None:
            return await self._request(messages, params, None), None
        explicit = self.cfg.structured != "auto"
        mode = self.cfg.structured if explicit else self._mode()
        while True:
            fmt, msgs = structured_request(mode, messages, schema, schema_name)
            try:
                text = await self._request(msgs, params, fmt)
                break
            except CapabilityError as exc:
                if "format" not in str(exc):
                    raise
                if explicit:
                    raise ItemError(f"the server refused structured output as {mode} (llm.structured "
                                    f"= {mode}): {exc}; set llm.structured = auto to let it fall back "
                                    "to other modes") from None
                if mode == "prompt":
                    raise
                mode = next_mode(mode)
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

    def _mode(self) -> str:
        """The structured mode to try first: what the least busy endpoint accepted last."""
        return self._pick().structured if self.endpoints else STRUCTURED_MODES[0]

    # -- endpoints ------------------------------------------------------------------------
    async def _connect(self) -> None:
        """Probe every URL, keep the live ones, and resolve the model they serve."""
        endpoints = [_Endpoint(url.rstrip("/")) for url in self.urls]
        served = await asyncio.gather(*(self._probe(ep) for ep in endpoints))
        live = [(ep, models) for ep, models in zip(endpoints, served, strict=True) if models is not False]
        if not live:
            raise FatalError(
                f"cannot reach the LLM server at {', '.join(map(public_url, self.urls))} (llm.base_url): "
                "start one (e.g. `vllm serve MODEL`, `ollama serve`, `llama-server -m "
                "MODEL.gguf`) or set llm.base_url = local to use the embedded model")
        self._served = self._model_id = resolve_model(self.model_setting, [
            (ep.url, models) for ep, models in live])
        self.endpoints = [ep for ep, _ in live]

    async def _probe(self, ep: _Endpoint) -> list[str] | None | bool:
        """The model ids the server lists; None when it has no /models; False when unreachable.

        Asked with the standard library: the openai client (about a second to import) is
        built when the first call is sent, so a run whose every item is reused never loads it.
        """
        key = os.environ.get(self.cfg.api_key_env) or "not-needed"
        models = await asyncio.to_thread(list_models, ep.url, key, min(10.0, self.cfg.timeout))
        if models == 401:
            raise FatalError(f"the server at {public_url(ep.url)} refused the API key: set the environment "
                             f"variable named by llm.api_key_env ({self.cfg.api_key_env})")
        return models

    def _client(self, ep: _Endpoint) -> Any:
        """The endpoint's openai client, built on first use."""
        if ep.client is None:
            import openai

            ep.client = openai.AsyncOpenAI(
                base_url=ep.url, api_key=os.environ.get(self.cfg.api_key_env) or "not-needed",
                timeout=self.cfg.timeout, max_retries=0)
        return ep.client

    @property
    def request_slots(self) -> int:
        """Requests in flight at once: llm.concurrency, and on the embedded server no more
        than its slots (llm.local_parallel). A request beyond them would wait in the server's
        queue with its timeout running (8 requests for 4 slots timed out under load), so it
        waits here instead, and llm.timeout measures the request's own work."""
        if self.urls == ("local",):
            return min(self.cfg.concurrency, self.cfg.local_parallel)
        return self.cfg.concurrency

    async def _ensure_ready(self) -> None:
        if self._ready is None:
            self._ready = asyncio.Lock()
            self._slots = asyncio.Semaphore(self.request_slots)
        async with self._ready:
            if self.endpoints:
                return
            if self.urls != ("local",):
                await self._connect()
                return
            import openai

            self.local = LocalServer(
                find_gguf(self.model_setting, self.model_key), parallel=self.cfg.local_parallel,
                ctx_per_slot=self.cfg.local_ctx, threads=self.cfg.local_threads,
                log_path=self.cache_dir / "llama-server.log",
                start_timeout=self.cfg.local_start_timeout)
            url = await asyncio.to_thread(self.local.start)
            self._served = MODEL_ALIAS
            self.endpoints = [_Endpoint(url, client=openai.AsyncOpenAI(
                base_url=url, api_key="not-needed", timeout=self.cfg.timeout, max_retries=0))]

    def _pick(self) -> _Endpoint:
        import random

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
                raise CapabilityError(f"image input is not supported by {public_url(ep.url)}")
            await self._slots.acquire()
            ep.outstanding += 1
            try:
                self.stats.calls += 1
                body = {"model": self._served, "messages": messages,
                        **{k: v for k, v in params.items() if v is not None}}
                if fmt is not None:
                    body["response_format"] = fmt
                # The body is plain JSON already: post it as is, skipping the client's
                # per-field request transform (milliseconds per call on long messages).
                resp = await self._client(ep).post("/chat/completions", body=body,
                                            cast_to=ChatCompletion)
                text = answer_text(resp)
                ep.failures = 0
                ep.images_ok = ep.images_ok or has_image(messages)
                return text.strip()
            except Exception as exc:  # classified below; what is not a client error propagates
                failure = classify(exc)
                if failure is None:
                    raise
            finally:
                ep.outstanding -= 1
                self._slots.release()
            if failure.capability == "format":
                if fmt is not None and self.cfg.structured == "auto":
                    ep.structured = next_mode(fmt.get("type", "json_schema"))
                raise CapabilityError(f"format: {failure.reason}")
            if failure.capability == "image":
                if ep.images_ok:              # it has seen images: this one is the problem
                    raise ItemError(f"the server refused this image: {failure.reason}")
                ep.no_images = True
                raise CapabilityError(f"image input is not supported by {public_url(ep.url)}: "
                                      f"{failure.reason}")
            last = failure.reason
            if not failure.retry:
                raise ItemError(failure.reason)
            if failure.connection:
                ep.failures += 1
                ep.down_until = time.monotonic() + min(30.0, 2.0 ** ep.failures)
            if attempt + 1 < attempts:
                self.stats.retries += 1
                await asyncio.sleep(backoff_delay(self.cfg.backoff, attempt, failure.wait))
        raise ItemError(f"gave up after {attempts} attempts: {last}")

    async def aclose(self) -> None:
        for ep in self.endpoints:
            if ep.client is not None:
                await ep.client.close()
        self.endpoints = []
        if self.local is not None:
            await asyncio.to_thread(self.local.stop)
            self.local = None


def list_models(url: str, api_key: str, timeout: float) -> list[str] | None | bool | int:
    """GET URL/models: the ids listed; None when the server answers without a usable list;
    False when it cannot be reached; 401 when it refuses the key."""
    import http.client
    import json
    import ssl
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url.rstrip("/") + "/models", headers={
        "Authorization": f"Bearer {api_key}", "Accept": "application/json"})
    context = None
    if url.startswith("https:"):
        try:
            import certifi  # the CA bundle the openai client uses

            context = ssl.create_default_context(cafile=certifi.where())
        except ImportError:
            context = ssl.create_default_context()
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as resp:
            body = json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        return 401 if exc.code == 401 else None
    except (urllib.error.URLError, OSError, http.client.HTTPException):
        return False                            # refused, unresolvable, timed out, dropped
    except ValueError:
        return None                             # not JSON
    data = body.get("data") if isinstance(body, dict) else None
    if not isinstance(data, list):
        return None
    return [str(m["id"]) for m in data if isinstance(m, dict) and "id" in m]


def resolve_model(setting: str, served: list[tuple[str, list[str] | None]]) -> str:
    """The model id every server agrees it serves, or a ConfigError that names them.

    `served` holds (url, model ids listed at /v1/models, or None when it has no such list).
    """
    if setting:
        for url, models in served:
            if models is not None and models and setting not in models:
                raise ConfigError(f"llm.model = {setting!r} is not served at {public_url(url)}; it serves: "
                                  + ", ".join(models[:10]))
        return setting
    names = []
    for url, models in served:
        if not models:
            raise ConfigError(f"llm.model is empty and {public_url(url)} does not list its models "
                              "(/v1/models): set llm.model to the model name the server expects")
        if len(models) > 1:
            raise ConfigError(f"llm.model is empty but {public_url(url)} serves several models ("
                              + ", ".join(models[:10]) + "): set llm.model to one of them")
        names.append((url, models[0]))
    if len({name for _, name in names}) > 1:
        raise ConfigError("the servers in llm.base_url serve different models ("
                          + "; ".join(f"{public_url(url)}: {name}" for url, name in names)
                          + "): give URLs that serve the same model, or set llm.model")
    return names[0][1]
