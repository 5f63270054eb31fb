"""Describe an image with a vision backend: what the Socratic loop and the evaluate stage
see in a generated image. Shared by both, so neither imports the other. The loop's
captioner is the `vision` backend; an evaluation with a captioner of its own
(evaluate.vision_backend / vision_model) uses `eval_vision`, so it reads captions the
loop's judge never saw."""

from __future__ import annotations

import asyncio
from pathlib import Path


async def describe(stage, path: Path, backend: str = "vision") -> str:
    """What `stage`'s vision backend `backend` sees in the image at `path`, asked with the
    interrogate question (the stage declares interrogate.template when that backend reads
    one). Answers of LLM backends come from the call cache on a rerun."""
    from .io.imageio import load_image

    vision = stage.backend(backend)
    kind = stage.cfg.vision.backend
    if backend == "eval_vision":
        kind = stage.cfg.evaluate.vision_backend or kind
    text = ""
    if kind != "classifier":
        question = stage.load_template("interrogate.template", {"tags"})
        text = question.render(tags="(none)")[0]["content"]
    image = await asyncio.to_thread(load_image, path, stage.cfg.interrogate.max_pixels)
    return await vision.describe(image, text, ())
