"""Describe an image with the vision backend: what the Socratic loop and the evaluate stage
see in a generated image. Shared by both, so neither imports the other."""

from __future__ import annotations

import asyncio
from pathlib import Path


async def describe(stage, path: Path) -> str:
    """What `stage`'s vision backend sees in the image at `path`, asked with the interrogate
    question (the stage declares interrogate.template when its vision backend reads one).
    Answers of LLM backends come from the call cache on a rerun."""
    from .imageio import load_image

    vision = stage.backend("vision")
    text = ""
    if stage.cfg.vision.backend != "classifier":
        question = stage.load_template("interrogate.template", {"tags"})
        text = question.render(tags="(none)")[0]["content"]
    image = await asyncio.to_thread(load_image, path, stage.cfg.interrogate.max_pixels)
    return await vision.describe(image, text, ())
