"""Which input a captions folder belongs to, and where a new input's captions go.

A captions folder records its input in `CAPTIONS/.tagcap-input.json` (written atomically
the first time a run writes there): the input's resolved path (or pattern, and which of
the two it is: a folder `photos [1]` that is gone reads like a pattern), and the content
digests of up to `SAMPLED` of its first images. A later run may use the folder when its input is

- the same path (the images in it may have changed: that is what keys are for), or a part
  of it named from the same folder (`shards/00001.tar` or `shards/{00001,00005}.tar` for
  `shards/`: ids are taken under that folder either way, so they cannot clash), or
- the same images elsewhere: a copy or a move. Every recorded image that the new input
  has under the same id has the same bytes, and at least half of them are there. A move
  (the recorded path is gone) rewrites the marker: the folder then belongs to the new path,
  and whatever is later made at the old path is another input.

Anything else (another folder whose `cup.jpg` is another picture, or other names
altogether) stops the run with one line, exit 2, before anything is written, unless
`--adopt-captions` says that this input takes the folder over (the marker is rewritten;
captions whose images differ are then remade, the rest are reused by key at no cost).
A folder without a marker (made before markers existed) is taken as it is. A folder that
holds a marker is never read as input: `caption.py photos/sub` writes photos/sub-captions/
(thumbnails included), and a later `caption.py photos` passes over it.

Where captions go (`caption.py FOLDER_OR_SHARDS`): into `paths.captions` when the input is
`paths.images` of the config, else beside the input, as `NAME-captions/` (NAME: the
folder's name; for a shard pattern, the folder before its first wildcard; for one shard or
table file, its name without the extension). Beside the input, because two inputs with the
same folder name (`/a/photos`, `/b/photos`) then never share a captions folder, and the
captions travel with the images they describe.
"""

from __future__ import annotations

import shlex
import time
from pathlib import Path

from ..errors import ConfigError
from ..store import atomic_write_json, read_json
from .imageio import CAPTIONS_MARKER, is_captions_folder
from .samples import _is_pattern, shard_root

MARKER = CAPTIONS_MARKER          # a folder holding it is never read as input (imageio.py)
SAMPLED = 8
ADOPT_FLAG = "--adopt-captions"


def captions_for(images: Path) -> Path:
    """The captions folder of an input named on the command line (see the module docstring)."""
    text = str(images)
    if _is_pattern(text):
        root = shard_root(images).resolve()
        return root.parent / f"{root.name}-captions"
    images = images.resolve()
    name = images.name if images.is_dir() else images.stem
    return images.parent / f"{name}-captions"


def _sample(cfg) -> list[list[str]]:
    """[id, sha256] of up to SAMPLED of the input's first readable images."""
    from .inputs import ImageInput

    source = ImageInput(cfg)
    found: list[list[str]] = []
    for item in source.items():
        if len(found) >= SAMPLED:
            break
        if item.error:
            continue
        try:
            found.append([item.id, source.digest(item, None)])
        except Exception:  # noqa: BLE001 - an unreadable image is not evidence either way
            continue
    return found


def _same_images(cfg, recorded: list) -> bool:
    """Whether the input holds the recorded images (a copy or a move of the owner)."""
    if not recorded:
        return False
    from .inputs import ImageInput

    source = ImageInput(cfg)
    wanted = {str(i): str(d) for i, d in recorded}
    matched = 0
    for item in source.items():
        if item.id not in wanted or item.error:
            continue
        try:
            if source.digest(item, None) != wanted[item.id]:
                return False
        except Exception:  # noqa: BLE001 - unreadable now: not a match
            return False
        matched += 1
        if matched == len(wanted):
            break
    return matched * 2 >= len(wanted)


def _same_root(here: str, owner: str) -> bool:
    """Whether inputs `here` and `owner` (as recorded) take their ids under the same folder:
    a folder itself, or the folder before a pattern's first wildcard or of one shard file."""
    return shard_root(Path(here)) == shard_root(Path(owner))


def _identity(images: Path) -> str:
    return str(images) if _is_pattern(str(images)) else str(images.resolve())


def claim_captions(cfg, *, adopt: bool = False, write: bool = True) -> str:
    """Check that `cfg.paths.captions` belongs to `cfg.paths.images` (ConfigError if not)
    and, with `write`, record it there. Returns what the run's last lines say."""
    from .inputs import ImageInput

    ImageInput(cfg).check()                       # a missing input is refused before any marker
    captions, images = cfg.paths.captions, cfg.paths.images
    if images.is_dir() and not _is_pattern(str(images)):
        if captions.resolve() == images.resolve():
            raise ConfigError(f"paths.captions = paths.images = {images}: captions need a folder "
                              "of their own (NAME.json, thumbnails, index.html); for NAME.txt "
                              "beside the images, set interpret.write_beside_images = true")
        if is_captions_folder(images):            # never read as input: naming it is a slip
            try:
                of = f" of {read_json(images / MARKER).get('input')}"
            except (OSError, ValueError, AttributeError):
                of = ""
            raise ConfigError(f"paths.images = {images} is a captions folder{of} (see {MARKER} "
                              "there), not images: point it at the images")
    marker = captions / MARKER
    here = _identity(images)
    try:
        owner = read_json(marker)
    except FileNotFoundError:
        owner = None
    except ValueError:
        owner = None                              # unreadable: rewritten below
    if isinstance(owner, dict) and owner.get("input") != here and not adopt:
        if _same_root(here, str(owner.get("input"))):
            return f"captions: {captions} (belongs to {owner.get('input')}, of which this is a part)"
        if not _same_images(cfg, owner.get("images") or []):
            own = captions_for(images)            # its own folder, unless that is this one
            into = (f"--set {shlex.quote(f'paths.captions={own}')}" if own != captions.resolve()
                    else "--set paths.captions=DIR (a new folder)")
            raise ConfigError(
                f"paths.captions = {captions} holds the captions of {owner.get('input')} (see "
                f"{MARKER} there), not of {here}: caption it into its own folder with "
                f"{into}, or pass {ADOPT_FLAG} to let this input take the folder over")
        was = str(owner.get("input"))
        was_pattern = owner.get("pattern", _is_pattern(was))    # markers before "pattern": guess
        if write and not was_pattern and not Path(was).exists():
            # a move: the folder now belongs here, so that a new input made later at the old
            # path is another input (refused), not the owner by its path
            atomic_write_json(marker, {"input": here, "images": _sample(cfg), "moved_from": was,
                                       "pattern": _is_pattern(str(images)),
                                       "claimed": time.strftime("%Y-%m-%dT%H:%M:%S")})
            return f"captions: {captions} (belongs to {here}, moved from {was}; recorded in {MARKER})"
        return f"captions: {captions} (a copy of {was}, same images)"
    if not isinstance(owner, dict) or owner.get("input") != here:
        if not write:
            return f"captions: {captions} (would be recorded as {here}'s in {MARKER})"
        atomic_write_json(marker, {"input": here, "images": _sample(cfg),
                                   "pattern": _is_pattern(str(images)),
                                   "claimed": time.strftime("%Y-%m-%dT%H:%M:%S")})
    return f"captions: {captions} (belongs to {here}; recorded in {MARKER})"
