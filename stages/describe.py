"""Describe an image with a vision backend, and the scorers that look at images.

Shared by the Socratic loop (captions each round, picks the best image) and the evaluate
stage (captions and scores every image), so neither imports the other. The loop's captioner
is the [vision] section; the evaluation's is `evaluate.vision_backend` / `vision_model`
(empty: the same), so an evaluation can read captions the loop's judge never saw.
"""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path


def make_clip_scorer(ctx, model: str = ""):
    """The CLIP named `model` (default: evaluate.clip_model), built once per run."""
    model = model or ctx.cfg.evaluate.clip_model

    def build():
        from .backends.scoring import ClipScorer

        return ClipScorer(model, cache_dir=ctx.cfg.paths.cache)
    return ctx.resource(f"clip:{model}", build)


def make_text_embedder(ctx):
    def build():
        from .backends.scoring import TextEmbedder

        return TextEmbedder(ctx.cfg.evaluate.text_model)
    return ctx.resource("text-embedder", build)


def evaluation_vision_config(cfg):
    """The [vision] settings with evaluate.vision_backend / vision_model applied."""
    e = cfg.evaluate
    if not e.vision_backend and not e.vision_model:
        return cfg.vision
    backend = e.vision_backend or cfg.vision.backend
    model = e.vision_model or (cfg.vision.model if backend == cfg.vision.backend else "")
    return dataclasses.replace(cfg.vision, backend=backend, model=model)


def make_vision(ctx, evaluation: bool = False):
    """The loop's captioner, or with `evaluation` the evaluation's (the same object when
    the settings are the same)."""
    from .backends.vision import make_vision as build

    v = evaluation_vision_config(ctx.cfg) if evaluation else ctx.cfg.vision
    return ctx.resource(f"vision:{v.backend}:{v.model}", lambda: build(ctx, v))


async def describe(ctx, path: Path, evaluation: bool = False) -> str:
    """What a vision backend sees in a generated image (its answer is cached by the chat
    cache for LLM backends; local backends are fast)."""
    from .imageio import load_image

    question = ctx.template(ctx.cfg.interrogate.template, "interrogate.template", {"tags"})
    text = question.render(tags="(none)")[0]["content"]
    image = await asyncio.to_thread(load_image, path, ctx.cfg.interrogate.max_pixels)
    return await make_vision(ctx, evaluation).describe(image, text, ())
