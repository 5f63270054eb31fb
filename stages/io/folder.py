"""The tagged image folder: image items, their tag files and per-image artifact paths.

An item's id is the image path relative to `paths.images` without its extension, in
POSIX form (`cats/chelsea`). Ids come from names already on disk under that folder; tag
text never becomes a path. A sub-folder that cannot be listed becomes one failed item with
its reason, and a tag file that cannot be read fails its image, never the listing.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from ..errors import ConfigError, ItemError
from ..stage import Item


def check_images_folder(images: Path, key: str = "paths.images") -> None:
    """A missing or wrong input folder is a configuration error, not an empty success."""
    if not images.exists():
        raise ConfigError(f"{key} = {images}: folder not found; point {key} at the folder of "
                          "images with NAME.txt tag files beside them")
    if not images.is_dir():
        raise ConfigError(f"{key} = {images}: not a folder; point {key} at a folder of images")


def image_items(images: Path) -> Iterator[Item]:
    from .imageio import walk_images

    for path, problem in walk_images(images):
        rel = path.relative_to(images)
        if problem and path.is_dir():
            yield Item(rel.as_posix() + "/", error=problem)        # a folder that cannot be listed
        else:
            yield Item(rel.with_suffix("").as_posix(), path, error=problem)


def file_stamp(path: Path) -> dict[str, int]:
    """What says a file is still the one a digest was taken of: size and mtime, which an
    archive tool restores on another file, plus its inode and ctime, which no tool sets
    (a swapped or rewritten file has another inode or a newer ctime). Anything that only
    changes the ctime (chmod, a hard link) costs one re-hash, never a wrong reuse."""
    import os

    st = os.stat(path)
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "ino": st.st_ino,
            "ctime_ns": st.st_ctime_ns}


def image_digest(path: Path, record: dict | None) -> str:
    """sha256 of the image, reusing a record's (its `image_sha256`) while the file's stamp
    (`file_stamp`) is the one recorded with it."""
    from ..store import sha256_file

    stamp = file_stamp(path)
    if record and record.get("image_sha256") and all(record.get(k) == v for k, v in stamp.items()):
        return record["image_sha256"]
    return sha256_file(path)


def count_images(images: Path) -> int | None:
    """Count without holding names: a cheap pass that keeps the progress bar honest."""
    from .imageio import walk_images

    return sum(1 for _ in walk_images(images))


def tag_file(image: Path) -> Path:
    return image.with_suffix(".txt")


def read_tag_text(image: Path) -> str | None:
    """The text of the image's NAME.txt (UTF-8, a BOM allowed), or None when there is none.

    Anything else is the image's failure with the reason: a folder or an unreadable file
    where the tag file should be, or bytes that are not UTF-8 (never replaced silently).
    """
    path = tag_file(image)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except IsADirectoryError:
        raise ItemError(f"{path.name} is a folder, not a tag file") from None
    except OSError as exc:
        raise ItemError(f"cannot read the tag file {path.name}: {exc.strerror or exc}") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ItemError(f"the tag file {path.name} is not UTF-8 (byte 0x{data[exc.start]:02x} at "
                        f"offset {exc.start}); save it as UTF-8") from None


def read_tags(image: Path, cfg) -> list[str]:
    """The usable tags from the image's NAME.txt ([] when there is none); reads
    tags.blacklist, tags.drop_meta and tags.drop_copyright, which callers declare."""
    return sift_tag_file(image, cfg).used


def sift_tag_file(image: Path, cfg, facts=None):
    """The image's NAME.txt sifted (stages/language/tagsift.py): the tags a caption is made
    from and the dropped ones with reasons; `facts` from the tag store when known."""
    from ..language.tagging import parse_tag_text

    text = read_tag_text(image)
    return sift_raw(parse_tag_text(text) if text is not None else [], cfg, facts)


def sift_raw(raw: list[str], cfg, facts=None):
    from ..language.tagsift import sift_tags

    return sift_tags(raw, blacklist=cfg.tags.blacklist, drop_meta=cfg.tags.drop_meta,
                     drop_copyright=cfg.tags.drop_copyright, facts=facts)


def artifact(root: Path, item_id: str, suffix: str) -> Path:
    return root / (item_id + suffix)
