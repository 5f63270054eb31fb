"""Text-to-image backends behind one interface, and PNGs that carry how they were made.

Backends: `DiffusersBackend` (diffusers pipelines: SDXL, any hub id or folder, `tiny`) and
`A1111Backend` (the Stable Diffusion web UI API). `save_png` stores the prompt, seed and
settings in PNG text chunks, including an A1111-style `parameters` chunk that other tools
(the web UI's PNG Info tab, image browsers, dataset tools) read.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Protocol

from ..store import atomic_write_bytes
from .a1111 import A1111Backend
from .diffusion import DiffusersBackend

__all__ = ["A1111Backend", "DiffusersBackend", "ImageBackend", "a1111_parameters", "read_png_metadata",
           "save_png"]


class ImageBackend(Protocol):
    def identity(self) -> dict:
        """The model and every setting that changes pixels; goes into cache keys and PNG metadata."""

    def generate(self, prompts: list[str], seeds: list[int], negative_prompt: str = "") -> list:
        """One PIL image per (prompt, seed) pair, in order; batching is the backend's business."""

    def close(self) -> None:
        """Free the model or the connection."""


def save_png(path: str | Path, image, metadata: dict[str, str | int | float]) -> None:
    """Write `image` as a PNG with one text chunk per metadata entry, atomically.

    Values that fit Latin-1 go into tEXt chunks, others into UTF-8 iTXt chunks. A
    `parameters` chunk is added (unless given) from the prompt, negative_prompt, seed,
    steps, guidance, sampler/scheduler and model entries, or from the `backend` identity
    JSON for the settings missing at the top level.
    """
    from PIL.PngImagePlugin import PngInfo

    text = {str(k): str(v) for k, v in metadata.items()}
    for key in text:
        if not 1 <= len(key) <= 79 or not key.isascii():
            raise ValueError(f"PNG text key {key!r} must be 1-79 ASCII characters")
    text.setdefault("parameters", a1111_parameters(metadata, image.size))
    info = PngInfo()
    for key, value in text.items():
        info.add_text(key, value)
    if image.mode not in ("RGB", "RGBA", "L", "LA", "I", "P", "1"):
        image = image.convert("RGB")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info)
    atomic_write_bytes(path, buffer.getvalue())


def read_png_metadata(path: str | Path) -> dict[str, str]:
    """Every text chunk (tEXt, zTXt, iTXt) of a PNG, as strings."""
    from PIL import Image

    with Image.open(path) as image:
        image.load()
        return {str(k): str(v) for k, v in getattr(image, "text", {}).items()}


def a1111_parameters(metadata: dict, size: tuple[int, int]) -> str:
    """The web UI's `parameters` text: prompt, `Negative prompt:` line, `Key: value` settings."""
    settings = dict(metadata)
    backend = metadata.get("backend")
    if isinstance(backend, str):
        try:
            backend = json.loads(backend)
        except ValueError:
            backend = None
    for key, value in (backend if isinstance(backend, dict) else {}).items():
        settings.setdefault(key, value)
    pairs = [("Steps", settings.get("steps")),
             ("Sampler", settings.get("sampler") or settings.get("scheduler")),
             ("CFG scale", settings.get("cfg_scale", settings.get("guidance"))),
             ("Seed", settings.get("seed")), ("Size", f"{size[0]}x{size[1]}"),
             ("Model", settings.get("model") or settings.get("checkpoint"))]
    lines = [str(settings.get("prompt", ""))]
    if settings.get("negative_prompt"):
        lines.append(f"Negative prompt: {settings['negative_prompt']}")
    lines.append(", ".join(f"{k}: {_plain(v)}" for k, v in pairs if v not in (None, "", "default")))
    return "\n".join(lines)


def _plain(value) -> str:
    """A settings value without the commas and newlines that would break the `Key: value` line."""
    return " ".join(str(value).replace(",", " ").split())
