"""What the captioning stages read images and tags from: a folder or dataset samples.

`ImageInput` hides the difference. With a folder (stages/io/folder.py) an item's data is the
image's path; with WebDataset shards or Parquet tables (stages/io/samples.py) it is a
`Sample`, whose bytes are read again by the stage's own reader (so a Ray actor can read
the items it is sent). Tags pass the same hygiene either way; image digests come from
the bytes, reused while the file (or shard) they were read from is unchanged.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..stage import Item

# [input] keys: what an item's image and tags are (declared where they change an output)
# and what its id is (operational: ids are not keys).
INPUT_IMAGE = ("input.image_column",)
INPUT_TAGS = ("input.tags_column", "input.tags_json_field")
INPUT_ALL = INPUT_IMAGE + INPUT_TAGS + ("input.key_column",)


def dataset_input(cfg) -> bool:
    """Whether `paths.images` names shards or Parquet tables (decides what stages declare)."""
    from .samples import is_dataset

    return is_dataset(cfg.paths.images)


def input_keys(cfg, image: bool, tags: bool) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(reads, operational) for a stage whose outputs depend on the image and/or the tags:
    with a dataset input those [input] keys change what an item is; otherwise none does."""
    if not dataset_input(cfg):
        return (), INPUT_ALL
    reads = (INPUT_IMAGE if image else ()) + (INPUT_TAGS if tags else ())
    return reads, tuple(k for k in INPUT_ALL if k not in reads)


class ImageInput:
    """The images a stage reads (`cfg` must answer paths.images, input.* and tags hygiene)."""

    def __init__(self, cfg, shard: tuple[int, int] = (0, 1)):
        from .samples import InputColumns, SampleReader, is_dataset

        self.cfg = cfg
        self.images: Path = cfg.paths.images
        self.shard = shard
        self.dataset = is_dataset(self.images)
        if self.dataset:
            c = cfg.input
            self.columns = InputColumns(c.image_column, c.tags_column, c.key_column,
                                        c.tags_json_field)
            self.reader = SampleReader(self.columns)

    def check(self) -> None:
        """A missing input is a configuration error, not an empty success."""
        if self.dataset:
            from .samples import shard_files, shard_units

            shard_units(shard_files(self.images, self.cfg.paths.captions), self.images)
        else:
            from .folder import check_images_folder

            check_images_folder(self.images)

    def items(self) -> Iterator[Item]:
        if self.dataset:
            from .samples import dataset_items

            return dataset_items(self.images, self.columns, self.shard, self.cfg.paths.captions)
        from .folder import image_items

        return image_items(self.images)

    def count(self) -> int | None:
        if self.dataset:
            return None               # it would read every shard's index once more
        from .folder import count_images

        return count_images(self.images)

    def tags(self, item: Item) -> list[str]:
        """The usable tags (reads tags.blacklist, tags.drop_meta and tags.drop_copyright,
        which callers declare)."""
        return self.sift(item).used

    def sift(self, item: Item, facts=None):
        """The item's tags sifted: used ones and dropped ones with reasons
        (stages/language/tagsift.py); `facts` from the tag store when known."""
        from .folder import sift_raw, sift_tag_file

        if not self.dataset:
            return sift_tag_file(item.data, self.cfg, facts)
        from ..language.tagging import parse_tag_text
        from .samples import tag_text

        raw = tag_text(item.data, self.columns)
        raw = [] if raw is None else parse_tag_text(raw) if isinstance(raw, str) else list(raw)
        return sift_raw(raw, self.cfg, facts)

    def tag_source(self, item: Item) -> str:
        """What a tag-reading failure names: the tag file, or the sample."""
        if self.dataset:
            return item.id
        from .folder import tag_file

        return tag_file(item.data).relative_to(self.images).as_posix()

    def image(self, item: Item) -> Path | bytes:
        """What load_image reads: the file, or the sample's bytes."""
        if not self.dataset:
            return item.data
        return self.reader.image_bytes(item.data)

    def stamp(self, item: Item) -> dict[str, Any]:
        """What a record keeps beside a digest so that it can be reused while this holds."""
        if not self.dataset:
            from .folder import file_stamp

            return file_stamp(item.data)
        s = item.data
        stamp = f"{s.stamp}:{s.offset}:{s.size}"
        if not s.shard.endswith(".tar"):
            stamp += f":{s.column}"                    # another column: other bytes, same row
            image = self.reader.image_file(s)
            if image is not None:                      # a path: the file, not the table, changes
                try:
                    st = os.stat(image)
                    stamp += f":{st.st_size}:{st.st_mtime_ns}:{st.st_ino}:{st.st_ctime_ns}"
                except OSError:
                    stamp += ":missing"                # reading it fails the item with why
        return {"source_stamp": stamp}

    def unchanged(self, item: Item, record: dict | None) -> bool:
        """Whether `record` was made from this very file or sample (same stamp)."""
        if not record:
            return False
        try:
            stamp = self.stamp(item)
        except OSError:
            return False
        return all(record.get(k) == v for k, v in stamp.items())

    def digest(self, item: Item, record: dict | None) -> str:
        """sha256 of the image bytes, reusing the record's while its stamp holds."""
        from ..store import sha256_bytes

        if not self.dataset:
            from .folder import image_digest

            return image_digest(item.data, record)
        if self.unchanged(item, record) and record.get("image_sha256"):
            return record["image_sha256"]
        return sha256_bytes(self.image(item))

    def where(self, item: Item) -> str:
        return str(item.data) if not self.dataset else item.data.where()
