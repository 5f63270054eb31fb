"""Describe an image with the vision backend, and the scorers that look at images.

Shared by the Socratic loop (captions each round, picks the best image) and the evaluate
stage (captions and scores every image), so neither imports the other.
"""

from __future__ import annotations

import asyncio
from pathlib import Path


def make_clip_scorer(ctx):
    def build():
        from .backends.scoring import ClipScorer

        return ClipScorer(ctx.cfg.evaluate.clip_model, cache_dir=ctx.cfg.paths.cache)
    return ctx.resource("clip", build)


def make_text_embedder(ctx):
    def build():
        from .backends.scoring import TextEmbedder

        return TextEmbedder(ctx.cfg.evaluate.text_model)
    return ctx.resource("text-embedder", build)


def make_vision(ctx):
    from .backends.vision import make_vision as build

    return ctx.resource("vision", lambda: build(ctx))


async def describe(ctx, path: Path) -> str:
    """What the vision backend sees in a generated image (its answer is cached by the chat
    cache for LLM backends; local backends are fast)."""
    from .imageio import load_image

    question = ctx.template(ctx.cfg.interrogate.template, "interrogate.template", {"tags"})
    text = question.render(tags="(none)")[0]["content"]
    image = await asyncio.to_thread(load_image, path, ctx.cfg.interrogate.max_pixels)
    return await make_vision(ctx).describe(image, text, ())
