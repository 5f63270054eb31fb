"""The tagged image folder: image items, their tag files and per-image artifact paths.

An item's id is the image path relative to `paths.images` without its extension, in
POSIX form (`cats/chelsea`). Ids come from names already on disk under that folder; tag
text never becomes a path.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from .config import Config
from .stage import Item


def image_items(images: Path) -> Iterator[Item]:
    from .imageio import iter_images

    if not images.is_dir():
        return
    for path in iter_images(images):
        rel = path.relative_to(images).with_suffix("")
        yield Item(rel.as_posix(), path)


def count_images(images: Path) -> int | None:
    """Count without holding names: a cheap pass that keeps the progress bar honest."""
    from .imageio import iter_images

    if not images.is_dir():
        return 0
    return sum(1 for _ in iter_images(images))


def tag_file(image: Path) -> Path:
    return image.with_suffix(".txt")


def read_tags(image: Path, cfg: Config) -> list[str]:
    """Cleaned tags from the image's NAME.txt, or [] when there is none."""
    from .tagging import DEFAULT_META_TAGS, clean_tags, parse_tag_text

    path = tag_file(image)
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return []
    drop = DEFAULT_META_TAGS if cfg.tags.drop_meta else ()
    return clean_tags(parse_tag_text(text), blacklist=cfg.tags.blacklist, drop=drop)


def artifact(root: Path, item_id: str, suffix: str) -> Path:
    return root / (item_id + suffix)
