"""Booru tag hygiene: parse tag files and normalise tags the way training captions need.

Tags are data, never paths or markup: nothing here touches the file system. A tag like
`../../etc/passwd` or `<script>` is an odd string here; stages/language/tagsift.py drops it
(with the other tags no caption should be made from) and says why.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache

# Tags about the post rather than the picture (ratings, scores, resolution, translation and
# bookkeeping). Written as on the boorus; matched after normalisation; '*' matches any run.
DEFAULT_META_TAGS = (
    "rating:*", "rating_*", "general", "sensitive", "questionable", "explicit", "safe",
    "score_*", "source_*", "highres", "absurdres", "incredibly_absurdres", "lowres",
    "commentary", "commentary_*", "*_commentary", "translated", "*_translated", "translation_*",
    "check_*", "bad_id", "bad_*_id", "md5_mismatch", "duplicate", "tagme", "revision",
    "jpeg_artifacts", "official_art", "artist_request", "character_request",
    "copyright_request", "image_sample", "third-party_edit", "variant_set", "photoshop_(medium)",
    "animated", "animated_gif", "animated_png", "video", "sound", "has_audio", "looping_animation",
    "webm", "mp4", "flash", "ai-generated", "ai-assisted", "paid_reward", "patreon_reward",
    "bad_link", "pixiv_id_*", "user_request", "resolution_mismatch", "upscaled", "cropped_image",
)

MAX_TAG_LENGTH = 200            # longer is not a tag but pasted text; it is dropped, not cut

_SPACES = re.compile(r"\s+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_LETTER = re.compile(r"[^\W\d_]")


def parse_tag_text(text: str) -> list[str]:
    """Raw tags from a tag file's text: separated by commas, newlines or both."""
    text = text.lstrip("\ufeff")
    return [part for line in text.splitlines() for part in line.split(",")]


def is_emoticon(tag: str) -> bool:
    """Whether a lower-cased tag is a face whose underscores are part of the picture.

    The rule: a single word (no spaces) of at most 7 characters that has an underscore
    inside it (not at either end), and either
      - contains no letter at all (`^_^`, `>_<`, `0_0`, `-_-`, `;_;`, `=_=`, `._.`, `^_^;`), or
      - splits at its underscores into parts of at most 2 characters with at most one letter
        each, the letters being Latin ones or all the same (`o_o`, `x_x`, `u_u`, `t_t`, `>_o`,
        `x_x;`, `ಠ_ಠ`).
    So `no_u`, `cat_ears`, `猫_耳` or `tiger_(animal)` are ordinary tags whose underscores
    are spaces.
    """
    if len(tag) > 7 or " " in tag or "_" not in tag[1:-1] or tag[0] == "_" or tag[-1] == "_":
        return False
    if not _LETTER.search(tag):
        return True
    parts = tag.split("_")
    if any(len(part) > 2 or len(_LETTER.findall(part)) > 1 for part in parts):
        return False
    letters = set(_LETTER.findall(tag))
    return len(letters) == 1 or all(letter.isascii() for letter in letters)


# Faces written without underscores (`:d`, `;)`, `:3`, `xd`): eyes, then a mouth of one or
# two signs, or the mouth first (`d:`).
_FACE = re.compile(r"^(?:[:;=]['-]?[\w()<>\[\]/\\|*@#$&]{1,2}|[\w()<>\[\]/\\|]{1,2}['-]?[:;=]|xd)$")


def is_face(tag: str) -> bool:
    """An emoticon: one with underscores (is_emoticon: `^_^`, `o_o`) or without (`:d`)."""
    return is_emoticon(tag) or _FACE.match(tag) is not None


def normalise(tag: str) -> str:
    """One tag in caption form: trimmed, lower case, spaces for underscores (faces kept)."""
    tag = _CONTROL.sub(" ", tag).strip().lower()
    tag = tag.replace("\\(", "(").replace("\\)", ")")   # prompt-style escapes in some tag files
    if not is_emoticon(tag):
        tag = tag.replace("_", " ")
    return _SPACES.sub(" ", tag).strip()


@lru_cache(maxsize=32)
def _pattern(patterns: tuple[str, ...]) -> re.Pattern | None:
    """One regex for a list of tag names; '*' in a name matches any run of characters."""
    names = {normalise(p) for p in patterns} - {""}
    if not names:
        return None
    alternatives = (".*".join(re.escape(piece) for piece in name.split("*")) for name in sorted(names))
    return re.compile("|".join(f"(?:{alt})" for alt in alternatives))


def _listed(tag: str, pattern: re.Pattern | None) -> bool:
    return pattern is not None and pattern.fullmatch(tag) is not None


def clean_tags(tags: Iterable[str], *, blacklist: Iterable[str] = (),
               drop: Iterable[str] = ()) -> list[str]:
    """Normalised tags in their first-seen order, each once, without blacklisted or `drop`
    (e.g. DEFAULT_META_TAGS) ones, empty ones or ones over MAX_TAG_LENGTH characters."""
    unwanted = _pattern(tuple(blacklist) + tuple(drop))
    seen: set[str] = set()
    out = []
    for raw in tags:
        tag = normalise(raw)
        if not tag or tag in seen or len(tag) > MAX_TAG_LENGTH:
            continue
        seen.add(tag)
        if not _listed(tag, unwanted):
            out.append(tag)
    return out
