"""In-process vLLM (`llm.backend = vllm`): batched generation on a local GPU.

Same interface, cache and structured-output handling as the HTTP chat backend; only the
transport differs. Requests that arrive while the engine is busy are gathered and sent
to `vllm.LLM.chat` as one batch, which is how vLLM reaches its throughput. JSON answers
use vLLM's guided decoding with the schema. Needs `pip install vllm` and a GPU; `llm.model`
is a hub id or a local folder.
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

    async def start(self) -> None:
        """The model is what `llm.model` names (a hub id or folder); nothing to ask a server."""
        if not self.model_setting:
            raise FatalError("llm.backend = vllm needs llm.model (a hub id or local folder)")
        self._model_id = "vllm:" + self.model_setting
        folder = Path(self.model_setting).expanduser()
        if folder.is_dir():                   # a local folder: by its content, not its path
            from .hub import folder_fingerprint

            digest = await asyncio.to_thread(folder_fingerprint, folder, self.digests)
            self._model_id += ":" + digest[:16]

    def identity(self, **overrides) -> dict:
        return {"model": self.model_id, "structured": self.cfg.structured, **self.params(**overrides)}

    async def _ensure_ready(self) -> None:
        if self.engine is not None:
            return
        if not self.model_setting:
            raise FatalError("llm.backend = vllm needs llm.model (a hub id or local folder)")
        try:
            import vllm
        except ImportError:
            raise FatalError("llm.backend = vllm needs vLLM on a GPU machine: pip install vllm; "
                             "or serve the model with `vllm serve` and use llm.backend = openai") from None
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
            try:
                texts = await asyncio.to_thread(self._generate, batch)
            except Exception as exc:  # the whole batch fails together; each item records it
                for p in batch:
                    p.future.set_exception(exc)
                continue
            for p, text in zip(batch, texts, strict=True):
                p.future.set_result(text)

    def _generate(self, batch: list[_Pending]) -> list[str]:
        outputs = self.engine.chat([p.messages for p in batch],
                                   [sampling_params(p.params, p.fmt) for p in batch],
                                   use_tqdm=False)
        return [out.outputs[0].text.strip() for out in outputs]

    async def aclose(self) -> None:
        if self.worker is not None:
            self.worker.cancel()
        self.engine = None


def sampling_params(params: dict, fmt: dict | None):
    """vLLM SamplingParams from our request parameters, with JSON-schema guided decoding."""
    import vllm

    kwargs = {k: v for k, v in params.items() if v is not None}
    schema = (fmt or {}).get("json_schema", {}).get("schema")
    if schema is not None:
        try:
            from vllm.sampling_params import StructuredOutputsParams

            kwargs["structured_outputs"] = StructuredOutputsParams(json=schema)
        except ImportError:                       # vLLM < 0.11
            from vllm.sampling_params import GuidedDecodingParams

            kwargs["guided_decoding"] = GuidedDecodingParams(json=schema)
    return vllm.SamplingParams(**kwargs)
