"""BLIP and BLIP-2 captioners through transformers, from a hub id or a local folder.

The class is chosen from the saved config's `model_type` (`blip` or `blip-2`). Nothing is
downloaded when the hub cannot be reached: the error names the model and the fix. BLIP
models caption, they do not follow instructions, so the interrogate question is not sent;
an optional text `prompt` (e.g. "a photograph of") starts the caption instead.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

from ..errors import FatalError
from .hub import folder_fingerprint, load_pretrained

KEY = "vision.model"


def from_pretrained(loader, source: str, what: str) -> Any:
    return load_pretrained(loader, source, key=KEY, what=what)


def _image_processor_class(transformers):
    """The PIL image processor: the default one wants torchvision, which may not import."""
    return getattr(transformers, "BlipImageProcessorPil", None) or transformers.BlipImageProcessor


class _Loaded:
    """A loaded model with its processor and how to call it."""

    def __init__(self, model, processor, kind: str):
        self.model, self.processor, self.kind = model, processor, kind


class BlipVision:
    """Captions from BLIP (`BlipForConditionalGeneration`) or BLIP-2 (`Blip2ForConditionalGeneration`)."""

    def __init__(self, model: str, device: str = "cpu", max_new_tokens: int = 40,
                 prompt: str | None = None):
        if not model:
            raise FatalError(f"{KEY} is empty: the blip backend needs a hub id or a local folder, "
                             "e.g. Salesforce/blip-image-captioning-base")
        self.model = model
        self.device = device
        self.max_new_tokens = max_new_tokens
        self.prompt = prompt or None
        self._loaded: _Loaded | None = None
        self._lock = threading.Lock()

    def identity(self) -> dict:
        """What decides the answer (for cache keys); a local folder adds a content fingerprint."""
        ident = {"backend": "blip", "model": self.model, "max_new_tokens": self.max_new_tokens,
                 "prompt": self.prompt, "decoding": "greedy",
                 "dtype": "float16" if self.device.startswith("cuda") else "float32"}
        folder = Path(self.model).expanduser()
        if folder.is_dir():
            ident["fingerprint"] = folder_fingerprint(folder)
        return ident

    def load(self) -> _Loaded:
        """Load once (thread-safe); later calls return the same model."""
        with self._lock:
            if self._loaded is None:
                self._loaded = self._build()
        return self._loaded

    def _build(self) -> _Loaded:
        import torch
        import transformers

        from .scoring import quiet_loading  # transformers bars only (hub's imports diffusers)

        config = from_pretrained(transformers.AutoConfig.from_pretrained, self.model, "BLIP model")
        kind = getattr(config, "model_type", "")
        if kind not in ("blip", "blip-2"):
            raise FatalError(f"{KEY} = {self.model} is a {kind or 'unknown'} model, not BLIP or "
                             "BLIP-2; use vision.backend = openai for other vision-language models")
        blip2 = kind == "blip-2"
        model_class = (transformers.Blip2ForConditionalGeneration if blip2
                       else transformers.BlipForConditionalGeneration)
        dtype = torch.float16 if self.device.startswith("cuda") else torch.float32
        with quiet_loading():
            images = from_pretrained(_image_processor_class(transformers).from_pretrained,
                                     self.model, "BLIP image processor")
            tokenizer = from_pretrained(transformers.AutoTokenizer.from_pretrained, self.model,
                                        "BLIP tokenizer")
            model = from_pretrained(lambda src, **kw: model_class.from_pretrained(src, dtype=dtype, **kw),
                                    self.model, "BLIP model")
        if blip2:
            # prompts must start with num_query_tokens image tokens when the config has one
            queries = config.num_query_tokens if getattr(config, "image_token_index", None) is not None \
                else None
            processor = transformers.Blip2Processor(images, tokenizer, num_query_tokens=queries)
        else:
            processor = transformers.BlipProcessor(images, tokenizer)
        return _Loaded(model.eval().to(self.device), processor, kind)

    def caption(self, image) -> str:
        """The model's caption for one PIL image (greedy, so the same image gives the same text)."""
        import torch

        loaded = self.load()
        inputs = loaded.processor(images=image.convert("RGB"), text=self.prompt, return_tensors="pt")
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(loaded.model.dtype)
        with self._lock, torch.inference_mode():
            out = loaded.model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False,
                                        num_beams=1)
        text = " ".join(loaded.processor.decode(out[0], skip_special_tokens=True).split())
        if self.prompt and text.lower().startswith(self.prompt.lower().strip()):
            text = text[len(self.prompt.strip()):].strip()
        return text

    def describe_sync(self, image) -> tuple[str, list[tuple[str, float]]]:
        """The caption, and no labels (the classifier's second value, kept for one shape)."""
        return self.caption(image), []

    async def describe(self, image, question: str = "", hint_tags=()) -> str:
        """The caption, computed in a worker thread; the question and tags are not sent."""
        return await asyncio.to_thread(self.caption, image)

    async def aclose(self) -> None:
        self._loaded = None
