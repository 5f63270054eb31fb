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

from .config import Config
from .errors import ItemError
from .folder import artifact, check_images_folder, count_images, image_digest, image_items, read_tags
from .stage import Declaration, Item, Stage
from .store import atomic_write_json, read_json, sha256_file


class InterrogateStage(Stage):
    name = "interrogate"

    @classmethod
    def declare(cls, cfg: Config) -> Declaration:
        asks = cfg.vision.backend != "classifier"      # the classifier reads no question
        hint = asks and cfg.interrogate.tags_hint
        return Declaration(
            config=("interrogate.template", "interrogate.tags_hint") if asks else (),
            reads=("tags.blacklist", "tags.drop_meta") if hint else (),
            backends=("vision",), operational=("interrogate.max_pixels",))

    def prepare(self) -> None:
        check_images_folder(self.cfg.paths.images)
        self.template = (self.load_template("interrogate.template", {"tags"}) if self._asks()
                         else None)
        self._records: dict[str, dict | None] = {}     # read by inputs(), reused by is_done()

    @property
    def llm_bound(self) -> bool:
        return self.ctx.cfg.vision.backend == "openai"

    @property
    def concurrency(self) -> int:
        if self.ctx.cfg.vision.backend == "openai":
            return self.cfg.llm.concurrency
        return 2     # local models run one at a time; two items overlap decoding and inference

    def vision(self):
        return self.backend("vision")

    def out(self, item: Item) -> Path:
        return artifact(self.cfg.paths.cache / "interrogate", item.id, ".json")

    def _record(self, item: Item) -> dict | None:
        try:
            record = read_json(self.out(item))
        except (FileNotFoundError, ValueError):
            return None
        return record if isinstance(record, dict) else None

    def nothing_found(self) -> str:
        return f"no images found in {self.cfg.paths.images}"

    def items(self):
        return image_items(self.cfg.paths.images)

    def count(self) -> int | None:
        return count_images(self.cfg.paths.images)

    def _asks(self) -> bool:
        return self.ctx.cfg.vision.backend != "classifier"

    def _hint(self, item: Item) -> list[str]:
        return read_tags(item.data, self.cfg) if self._asks() and self.cfg.interrogate.tags_hint else []

    def inputs(self, item: Item) -> dict:
        record = self._records[item.id] = self._record(item)
        try:
            digest = image_digest(item.data, record)
        except OSError as exc:
            raise ItemError(f"cannot read the image: {exc.strerror or exc}") from None
        return {"image": digest, "hint": self._hint(item)}

    def is_done(self, item: Item, key: str) -> bool:
        record = self._records.pop(item.id) if item.id in self._records else self._record(item)
        return bool(record) and record.get("key") == key

    async def process(self, item: Item, key: str) -> None:
        from .imageio import load_image

        st = os.stat(item.data)
        digest = await asyncio.to_thread(sha256_file, item.data)
        image = await asyncio.to_thread(load_image, item.data, self.cfg.interrogate.max_pixels)
        hint = self._hint(item)
        question = (self.template.render(tags=", ".join(hint) or "(none)")[0]["content"]
                    if self.template else "")
        answer = await self.vision().describe(image, question, hint)
        atomic_write_json(self.out(item), {
            "id": item.id, "image": str(item.data), "image_sha256": digest,
            "size": st.st_size, "mtime_ns": st.st_mtime_ns, "width": image.width,
            "height": image.height, "vision": self.vision().identity(), "answer": answer,
            "key": key, "created": time.strftime("%Y-%m-%dT%H:%M:%S")})
