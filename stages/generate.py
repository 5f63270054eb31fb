"""Generate stage: images for the original and the upsampled prompt, with the same seeds.

`runs/RUN/images/ID/VARIANT-sSEED.png`, with the prompt, seed, model and settings in the
PNG's text chunks. Each image carries its own key, so an interrupted run resumes at the
next missing image, and a changed model or setting redoes only what it affects.
"""

from __future__ import annotations

import asyncio
import json

from .config import Config
from .errors import ItemError
from .io.runfiles import PromptsStage, image_path
from .stage import Declaration, Item, Stage, StageReport
from .store import hash_value

KEY_CHUNK = "tagcap_key"


def image_key(backend, text: str, seed: int, negative: str) -> str:
    return hash_value({"prompt": text, "seed": seed, "negative": negative,
                       "backend": backend.identity()})


def png_key(path) -> str | None:
    """The key stored in an image we wrote, or None when missing or unreadable."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            return img.text.get(KEY_CHUNK) if hasattr(img, "text") else None
    except (OSError, SyntaxError, ValueError):
        return None


async def render_images(stage, jobs: list[tuple[str, int, object, dict]]) -> None:
    """Generate and save `(text, seed, path, metadata)` jobs in batches of generate.batch_size
    with the stage's image backend (the stage declares generate.negative_prompt)."""
    from .backends.images import save_png

    g = stage.cfg.generate
    backend = stage.backend("images")
    for start in range(0, len(jobs), g.batch_size):
        batch = jobs[start:start + g.batch_size]
        images = await asyncio.to_thread(backend.generate, [j[0] for j in batch],
                                         [j[1] for j in batch], g.negative_prompt)
        if len(images) != len(batch):
            raise ItemError(f"backend returned {len(images)} images for {len(batch)} requests")
        for (text, seed, path, meta), image in zip(batch, images, strict=True):
            key = image_key(backend, text, seed, g.negative_prompt)
            save_png(path, image, {**meta, "prompt": text, "seed": seed,
                                   "negative_prompt": g.negative_prompt,
                                   "backend": json.dumps(backend.identity(), sort_keys=True),
                                   KEY_CHUNK: key})


class GenerateStage(PromptsStage, Stage):
    name = "generate"
    concurrency = 1          # one pipeline; batching happens inside an item

    @classmethod
    def declare(cls, cfg: Config) -> Declaration:
        return Declaration(config=("generate.negative_prompt", "generate.seeds"), backends=("images",),
                           operational=("generate.batch_size",))

    def prepare(self) -> None:
        self.load_rows()

    def missing_inputs(self) -> str:
        if not (self.ctx.run_dir / "images").exists():
            return "no images yet: the socratic and evaluate stages need them"
        return ""

    def variants(self, row: dict) -> list[tuple[str, str]]:
        out = [("original", row["prompt"])]
        if row["id"] in self.up:
            out.append(("upsampled", self.up[row["id"]]["upsampled"]))
        return out

    def jobs(self, item: Item) -> list[tuple[str, int, object, dict, str]]:
        backend = self.backend("images")
        out = []
        for variant, text in self.variants(item.data):
            for seed in self.cfg.generate.seeds:
                path = image_path(self.ctx.run_dir, item.id, variant, seed)
                key = image_key(backend, text, seed, self.cfg.generate.negative_prompt)
                out.append((text, seed, path, {"id": item.id, "variant": variant}, key))
        return out

    def inputs(self, item: Item) -> dict:
        return {"variants": self.variants(item.data)}

    def is_done(self, item: Item, key: str) -> bool:
        return all(png_key(job[2]) == job[4] for job in self.jobs(item))

    async def process(self, item: Item, key: str) -> None:
        todo = [job[:4] for job in self.jobs(item) if png_key(job[2]) != job[4]]
        await render_images(self, todo)

    def finish(self, report: StageReport) -> None:
        if not self.rows:
            return                          # the runner says why (nothing_found)
        from .report.page import write_compare_html

        path = write_compare_html(self.ctx.run_dir)
        report.note = f"side by side: {path}"
