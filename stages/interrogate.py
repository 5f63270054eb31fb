"""Interrogate stage: ask the vision backend what each image shows.

Answers go to `cache/interrogate/NAME.json`, keyed by the image bytes, the vision model and
(for backends that read a question) the question template and tag hint. The file's size,
modification time, inode and ctime are remembered with its hash, so a rerun does not
re-read every image to know that nothing changed, and a file swapped in with the same size
and mtime is read again.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from .config import Config
from .errors import ItemError
from .io.folder import artifact
from .io.inputs import ImageInput, input_keys
from .stage import Declaration, Item, Stage
from .store import atomic_write_json, read_json, sha256_bytes


class InterrogateStage(Stage):
    name = "interrogate"

    @classmethod
    def declare(cls, cfg: Config) -> Declaration:
        asks = cfg.vision.backend != "classifier"      # the classifier reads no question
        hint = asks and cfg.interrogate.tags_hint
        reads, operational = input_keys(cfg, image=True, tags=hint)
        return Declaration(
            config=("interrogate.template", "interrogate.tags_hint") if asks else (),
            reads=(("tags.blacklist", "tags.drop_meta") if hint else ()) + reads,
            backends=("vision",), operational=("interrogate.max_pixels", "tags.drop_copyright")
            + operational)             # hints are sifted without the tag store: no categories

    def prepare(self) -> None:
        self.input = ImageInput(self.cfg, self.ctx.options.shard)
        self.input.check()
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
        return self.input.items()

    def count(self) -> int | None:
        return self.input.count()

    def _asks(self) -> bool:
        return self.ctx.cfg.vision.backend != "classifier"

    def _hint(self, item: Item) -> list[str]:
        return self.input.tags(item) if self._asks() and self.cfg.interrogate.tags_hint else []

    def inputs(self, item: Item) -> dict:
        record = self._records[item.id] = self._record(item)
        try:
            digest = self.input.digest(item, record)
        except OSError as exc:
            raise ItemError(f"cannot read the image: {exc.strerror or exc}") from None
        return {"image": digest, "hint": self._hint(item)}

    def is_done(self, item: Item, key: str) -> bool:
        record = self._records.pop(item.id) if item.id in self._records else self._record(item)
        return bool(record) and record.get("key") == key

    def precheck(self, item: Item) -> None:
        from .io.imageio import check_image

        check_image(self.input.image(item), self.cfg.interrogate.max_pixels)

    async def process(self, item: Item, key: str) -> None:
        from .io.imageio import load_image

        stamp = self.input.stamp(item)
        source = await asyncio.to_thread(self.input.image, item)
        data = source if isinstance(source, bytes) else await asyncio.to_thread(source.read_bytes)
        digest = sha256_bytes(data)
        image = await asyncio.to_thread(load_image, data, self.cfg.interrogate.max_pixels)
        hint = self._hint(item)
        question = (self.template.render(tags=", ".join(hint) or "(none)")[0]["content"]
                    if self.template else "")
        answer = await self.vision().describe(image, question, hint)
        atomic_write_json(self.out(item), {
            "id": item.id, "image": self.input.where(item), "image_sha256": digest,
            **stamp, "width": image.width,
            "height": image.height, "vision": self.vision().identity(), "answer": answer,
            "key": key, "created": time.strftime("%Y-%m-%dT%H:%M:%S")})
