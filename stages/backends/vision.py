"""Vision backends: what an image shows, as text.

`classifier` (embedded EfficientNet-Lite0 labels, offline), `blip` (transformers BLIP /
BLIP-2) and `openai` (any OpenAI-compatible server with a vision model). All answer
`await describe(image, question, hint_tags) -> str` and `identity() -> dict`.
"""

from __future__ import annotations

from typing import Any

from ..errors import CapabilityError, FatalError


class OpenAIVision:
    """A vision-language model behind an OpenAI-compatible server; the image goes inline."""

    def __init__(self, chat: Any, *, max_side: int, owns_chat: bool = False):
        self.chat = chat
        self.max_side = max_side
        self.owns_chat = owns_chat      # a chat of its own (vision.base_url/model) is closed here

    def identity(self) -> dict:
        return {"backend": "openai", "max_side": self.max_side, **self.chat.identity()}

    async def start(self) -> None:
        await self.chat.start()

    async def describe(self, image, question: str = "", hint_tags=(), template_hash: str = "") -> str:
        import asyncio

        from ..io.imageio import to_data_url

        # resize and JPEG encode off the event loop: on a large photo they take long enough
        # to stall every request in flight
        url = await asyncio.to_thread(to_data_url, image, self.max_side)
        messages = [{"role": "user", "content": [
            {"type": "text", "text": question or "Describe this image."},
            {"type": "image_url", "image_url": {"url": url}}]}]
        try:
            answer = await self.chat.chat(messages, template_hash=template_hash)
        except CapabilityError as exc:
            raise FatalError(f"vision.backend = openai: {exc}. Serve a vision model (e.g. "
                             "`vllm serve Qwen/Qwen2.5-VL-3B-Instruct`, `ollama run llava`) and "
                             "set vision.base_url, or use vision.backend = classifier") from None
        return answer.text.strip()

    async def aclose(self) -> None:
        if self.owns_chat:
            await self.chat.aclose()


def make_vision(view, ctx, v=None) -> Any:
    """The vision backend `v` describes (default: the [vision] section), reading only `view`
    (see stages/resources.py)."""
    v = v or view.vision
    if v.backend == "classifier":
        from .classifier import ClassifierVision

        return ClassifierVision(top_k=v.top_k, device=_device(v.device))
    if v.backend == "blip":
        from .blip import BlipVision

        return BlipVision(v.model, device=_device(v.device), max_new_tokens=v.max_new_tokens)
    if not v.base_url and not v.model:
        return OpenAIVision(ctx.backend("chat"), max_side=v.max_side)
    from .chat import ChatBackend

    chat = ChatBackend(view.llm, ctx.calls, ctx.stats, cache_dir=view.paths.cache,
                       base_urls=v.base_url or view.llm.base_url, model=v.model or view.llm.model)
    return OpenAIVision(chat, max_side=v.max_side, owns_chat=True)


def _device(name: str) -> str:
    if name != "auto":
        return name
    try:
        import torch
    except ImportError:
        return "cpu"
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return "mps"
    return "cpu"
