"""Interrogate stage: ask the vision backend what each image shows.

Answers go to `cache/interrogate/NAME.json`, keyed by the image bytes, the vision model and
(for backends that read a question) the question template and tag hint. The file's size
and modification time are remembered with its hash, so a rerun does not re-read every
image to know that nothing changed.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from .describe import make_vision
from .folder import artifact, count_images, image_items, read_tags
from .stage import Item, Stage
from .store import atomic_write_json, hash_value, read_json, sha256_file


def image_digest(path: Path, record: dict | None) -> str:
    """sha256 of the image, reusing the recorded one when size and mtime are unchanged."""
    st = os.stat(path)
    if record and record.get("size") == st.st_size and record.get("mtime_ns") == st.st_mtime_ns:
        return record["image_sha256"]
    return sha256_file(path)


class InterrogateStage(Stage):
    name = "interrogate"

    def prepare(self) -> None:
        self.template = self.ctx.template(self.cfg.interrogate.template, "interrogate.template",
                                          {"tags"})
        self._records: dict[str, dict | None] = {}     # read by key(), reused by is_done()

    @property
    def llm_bound(self) -> bool:
        return self.cfg.vision.backend == "openai"

    @property
    def concurrency(self) -> int:
        if self.cfg.vision.backend == "openai":
            return self.cfg.llm.concurrency
        return 2     # local models run one at a time; two items overlap decoding and inference

    def vision(self):
        return make_vision(self.ctx)

    def out(self, item: Item) -> Path:
        return artifact(self.cfg.paths.cache / "interrogate", item.id, ".json")

    def _record(self, item: Item) -> dict | None:
        try:
            return read_json(self.out(item))
        except (FileNotFoundError, ValueError):
            return None

    def items(self):
        return image_items(self.cfg.paths.images)

    def count(self) -> int | None:
        return count_images(self.cfg.paths.images)

    def _asks(self) -> bool:
        return self.cfg.vision.backend != "classifier"

    def _hint(self, item: Item) -> list[str]:
        return read_tags(item.data, self.cfg) if self._asks() and self.cfg.interrogate.tags_hint else []

    def key(self, item: Item) -> str:
        try:
            record = self._records[item.id] = self._record(item)
            digest = image_digest(item.data, record)
        except OSError as exc:
            digest = f"unreadable: {exc}"
        return hash_value({"image": digest, "vision": self.vision().identity(),
                           "template": self.template.hash if self._asks() else None,
                           "hint": self._hint(item)})

    def is_done(self, item: Item, key: str) -> bool:
        record = self._records.pop(item.id) if item.id in self._records else self._record(item)
        return bool(record) and record.get("key") == key

    async def process(self, item: Item, key: str) -> None:
        from .imageio import load_image

        st = os.stat(item.data)
        digest = await asyncio.to_thread(sha256_file, item.data)
        image = await asyncio.to_thread(load_image, item.data, self.cfg.interrogate.max_pixels)
        hint = self._hint(item)
        question = self.template.render(tags=", ".join(hint) or "(none)")[0]["content"]
        answer = await self.vision().describe(image, question, hint)
        atomic_write_json(self.out(item), {
            "id": item.id, "image": str(item.data), "image_sha256": digest,
            "size": st.st_size, "mtime_ns": st.st_mtime_ns, "width": image.width,
            "height": image.height, "vision": self.vision().identity(), "answer": answer,
            "key": key, "created": time.strftime("%Y-%m-%dT%H:%M:%S")})
