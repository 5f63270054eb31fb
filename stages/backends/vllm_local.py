"""In-process vLLM (`llm.backend = vllm`): batched generation on a local GPU.

Same interface, cache and structured-output handling as the HTTP chat backend; only the
transport differs. Requests that arrive while the engine is busy are gathered and sent
to `vllm.LLM.chat` as one batch, which is how vLLM reaches its throughput. A batch that
vLLM refuses as a whole is retried item by item, so one bad request fails only itself.

There is no server and so no endpoint list: every `llm.structured` mode maps onto vLLM's
own structured outputs, so `auto` starts (and stays) at `json_schema`. JSON answers use
`StructuredOutputsParams` (vLLM >= 0.11) or `GuidedDecodingParams` (older): `json` with the
schema for json_schema, `json_object` for json_object; `prompt` sends no constraint and
parses the answer. Needs `pip install vllm` and a GPU; `llm.model` is a hub id or a local
folder. tests/test_vllm.py checks these calls against a stand-in with vLLM's signatures.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import FatalError
from .chat import ChatBackend

BATCH_WINDOW_S = 0.01


@dataclass
class _Pending:
    messages: list[dict]
    params: dict
    fmt: dict | None
    future: asyncio.Future = field(default=None)


class VllmChat(ChatBackend):
    """ChatBackend whose requests run on an in-process `vllm.LLM`."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.engine = None
        self.queue: asyncio.Queue | None = None
        self.worker: asyncio.Task | None = None
        self._engine_lock: asyncio.Lock | None = None

    async def start(self) -> None:
        """The model is what `llm.model` names (a hub id or folder); nothing to ask a server."""
        if self._model_id:
            return
        if not self.model_setting:
            raise FatalError("llm.backend = vllm needs llm.model (a hub id or local folder)")
        model_id = "vllm:" + self.model_setting
        folder = Path(self.model_setting).expanduser()
        if folder.is_dir():                   # a local folder: by its content, not its path
            from .hub import folder_fingerprint

            digest = await asyncio.to_thread(folder_fingerprint, folder, self.digests)
            model_id += ":" + digest[:16]
        self._model_id = model_id

    def identity(self, **overrides) -> dict:
        return {"model": self.model_id, "structured": self.cfg.structured, **self.params(**overrides)}

    def _mode(self) -> str:
        """vLLM constrains decoding to a schema itself: `auto` always starts at json_schema
        (the HTTP backend asks its endpoints, which this backend does not have)."""
        return "json_schema"

    async def _ensure_ready(self) -> None:
        """Load the engine once, however many requests arrive together."""
        if self._engine_lock is None:
            self._engine_lock = asyncio.Lock()
        async with self._engine_lock:
            if self.engine is not None:
                return
            if not self.model_setting:
                raise FatalError("llm.backend = vllm needs llm.model (a hub id or local folder)")
            try:
                import vllm
            except ImportError:
                raise FatalError("llm.backend = vllm needs vLLM on a GPU machine: pip install vllm; or serve "
                                 "the model with `vllm serve` and use llm.backend = openai") from None
            self.engine = await asyncio.to_thread(vllm.LLM, model=self.model_setting,
                                                  seed=max(self.cfg.seed, 0))
            self.queue = asyncio.Queue()
            self.worker = asyncio.create_task(self._serve())

    async def _request(self, messages: list[dict], params: dict, fmt: dict | None) -> str:
        await self._ensure_ready()
        pending = _Pending(messages, params, fmt, asyncio.get_running_loop().create_future())
        self.stats.calls += 1
        await self.queue.put(pending)
        return await pending.future

    async def _serve(self) -> None:
        while True:
            batch = [await self.queue.get()]
            await asyncio.sleep(BATCH_WINDOW_S)
            while not self.queue.empty():
                batch.append(self.queue.get_nowait())
            for p, outcome in zip(batch, await self._run(batch), strict=True):
                if p.future.done():               # its caller was cancelled meanwhile
                    continue
                if isinstance(outcome, Exception):
                    p.future.set_exception(outcome)
                else:
                    p.future.set_result(outcome)

    async def _run(self, batch: list[_Pending]) -> list[str | Exception]:
        """Each request's answer or error. vLLM checks every request of a call before it
        runs any, so a batch refused as a whole is run again one request at a time."""
        try:
            return await asyncio.to_thread(self._generate, batch)
        except Exception as exc:  # noqa: BLE001 (recorded as the item's failure)
            if len(batch) == 1:
                return [exc]
        return [(await self._run([p]))[0] for p in batch]

    def _generate(self, batch: list[_Pending]) -> list[str]:
        outputs = self.engine.chat([p.messages for p in batch],
                                   [sampling_params(p.params, p.fmt) for p in batch],
                                   use_tqdm=False)
        if len(outputs) != len(batch):
            raise RuntimeError(f"vLLM returned {len(outputs)} outputs for {len(batch)} requests")
        return [out.outputs[0].text.strip() for out in outputs]

    async def aclose(self) -> None:
        if self.worker is not None:
            self.worker.cancel()
            self.worker = None
        self.engine = None


def sampling_params(params: dict, fmt: dict | None):
    """vLLM SamplingParams from our request parameters, with the structured-output
    constraint `fmt` asks for (a JSON schema, any JSON object, or none)."""
    import vllm

    kwargs = {k: v for k, v in params.items() if v is not None}
    kind = (fmt or {}).get("type")
    if kind == "json_schema":
        constraint = {"json": fmt["json_schema"]["schema"]}
    elif kind == "json_object":
        constraint = {"json_object": True}
    elif kind is None:
        constraint = None
    else:
        raise ValueError(f"unknown structured-output format {kind!r}")
    if constraint is not None:
        try:
            from vllm.sampling_params import StructuredOutputsParams
        except ImportError:                       # vLLM < 0.11
            from vllm.sampling_params import GuidedDecodingParams

            kwargs["guided_decoding"] = GuidedDecodingParams(**constraint)
        else:
            kwargs["structured_outputs"] = StructuredOutputsParams(**constraint)
    return vllm.SamplingParams(**kwargs)
