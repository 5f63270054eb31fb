"""Booru tag hygiene: parse tag files and normalise tags the way training captions need.

Tags are data, never paths or markup: nothing here touches the file system.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache

# Meta and rating tags that describe the post, not the picture. Patterns end with '*'.
DEFAULT_META_TAGS = (
    "rating:*", "rating *", "score *", "source *", "highres", "absurdres", "incredibly absurdres",
    "lowres", "commentary*", "translated", "translation request", "bad id", "bad pixiv id",
    "bad twitter id", "md5 mismatch", "duplicate", "tagme", "check *", "revision", "jpeg artifacts",
    "official art", "artist request", "character request", "copyright request", "general",
    "sensitive", "questionable", "explicit", "safe",
)

_SPACES = re.compile(r"\s+")
_LETTERS = re.compile(r"[^\W\d_]", re.UNICODE)
_FACE = re.compile(r"^[\W\d]?[a-z0-9]?[\W\d]?_[\W\d]?[a-z0-9]?[\W\d]?$")


def parse_tag_text(text: str) -> list[str]:
    """Tags from a tag file: comma- and/or newline-separated."""
    return [part for line in text.splitlines() for part in line.split(",")]


def is_emoticon(tag: str) -> bool:
    """`^_^`, `>_<`, `o_o`, `0_0`, `x_x`, `;_;`, `-_-`, `t_t`... keep their underscores.

    A tag is a face when it is short, contains an underscore, and is either free of letters
    or made of single characters around the underscore (`o_o`, `u_u`, `t_t`).
    """
    if "_" not in tag or len(tag) > 7 or " " in tag:
        return False
    if not _LETTERS.search(tag):
        return True
    left, _, right = tag.partition("_")
    return len(left) <= 2 and len(right) <= 2 and bool(_FACE.match(tag))


def normalise(tag: str) -> str:
    tag = tag.strip().lower()
    if not is_emoticon(tag):
        tag = tag.replace("_", " ")
    return _SPACES.sub(" ", tag).strip()


@lru_cache(maxsize=16)
def _matcher(patterns: tuple[str, ...]) -> tuple[frozenset[str], tuple[str, ...]]:
    """Exact names and prefixes (patterns ending in '*'), normalised once."""
    norm = [normalise(p) for p in patterns]
    return (frozenset(p for p in norm if not p.endswith("*")),
            tuple(p[:-1] for p in norm if p.endswith("*")))


def _matches(tag: str, matcher: tuple[frozenset[str], tuple[str, ...]]) -> bool:
    exact, prefixes = matcher
    return tag in exact or (bool(prefixes) and tag.startswith(prefixes))


def clean_tags(tags: Iterable[str], *, blacklist: Iterable[str] = (),
               drop: Iterable[str] = ()) -> list[str]:
    """Trimmed, lower-cased, deduplicated (first kept) tags without blacklisted or meta ones."""
    blacklist = _matcher(tuple(blacklist))
    drop = _matcher(tuple(drop))
    seen: set[str] = set()
    out = []
    for raw in tags:
        tag = normalise(raw)
        if not tag or tag in seen:
            continue
        seen.add(tag)
        if _matches(tag, blacklist) or _matches(tag, drop):
            continue
        out.append(tag)
    return out
