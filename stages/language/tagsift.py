"""Which of an image's tags a caption may be made from, and why each other one is left out.

Runs before anything is made from tags: the composer, the prompt, the verifier's evidence
and the keys all see the tags it keeps (`Sifted.used`); the caption's record lists the rest
with their reasons (`Sifted.dropped`). Dropped, in this order:
  - junk: no letters, markup (`<script>`), file paths and names (`../../etc/passwd`,
    `x.exe`), URLs and e-mail addresses, code (`${...}`), invisible formatting characters;
  - blacklisted tags and meta tags (about the post, not the picture: `absurdres`,
    `animated`), and with the tag source's categories, copyright (series) and meta tags;
  - emoticons (`:d`, `^_^`) unless a person or an animal is tagged (a count tag, a person or
    animal word, or a tag the source calls a character; on a cup they are no face), and
    faces we have no words for;
  - translated duplicates: a tag in another script beside tags in Latin script. Captions are
    written in English, so such a tag can only reach one through a translation the model
    would have to guess; in booru tag files it is almost always the same tag again (the
    source's other names say which) or a name. A file whose tags are all in another script
    keeps them;
  - a broader tag implied by a narrower one that is present (`money` beside `coin`):
    implications from the tag source where it has them, else stages/data/tag_implications.txt.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from .tagging import DEFAULT_META_TAGS, MAX_TAG_LENGTH, _listed, _pattern, is_face, normalise
from .tagroles import EMOTICONS, tag_info

IMPLICATIONS_FILE = Path(__file__).resolve().parent.parent / "data" / "tag_implications.txt"

JUNK = "junk"
IMPLIED = "implied by"
_MARKUP = re.compile(r"<\s*/?\s*[a-z!?][^>]*>?|\[/?(?:url|img|b|i|u|s|section|code|quote)\b|"
                     r"&(?:[a-z]+|#\d+);|\bjavascript:|\{\{|\}\}", re.IGNORECASE)
_PATH = re.compile(r"(?:^|/)\.\.?/|^[/~]|\\|^[a-z]:[\\/]|/[\w.-]+\.\w{1,4}$", re.IGNORECASE)
_URL = re.compile(r"\b[a-z][a-z0-9+.-]*://|^(?:mailto|data|javascript|vbscript|file|tel):|\bwww\.|"
                  r"\b[\w-]+\.(?:com|net|org|io|jp|html?|php)\b|^[\w-]+(?:\.[\w-]+)+/|[\w.+-]+@[\w-]+\.[a-z]{2,}",
                  re.IGNORECASE)
# A file name (`x.exe`, `readme.md`), a system path without a leading slash (`etc/passwd`),
# percent-encoding (`%2e%2e%2f`), or shell and template expansion (`${jndi:...}`, `$(...)`).
_FILE = re.compile(r"\.(?:exe|bat|cmd|sh|ps1|py|js|php|asp|dll|so|bin|md|txt|json|xml|ini|cfg|"
                   r"conf|log|zip|jpe?g|png|gif|webp)$|(?:^|/)(?:etc|usr|bin|var|home|tmp|proc|"
                   r"windows|system32)/|%[0-9a-f]{2}", re.IGNORECASE)
_CODE = re.compile(r"\$[{(]|`|^\[[\d;]*m")           # the last: a terminal colour code's remnant
_LETTER = re.compile(r"[^\W\d_]")
PEOPLE = frozenset("""person people woman women man men girl girls boy boys child children baby
human humans astronaut soldier knight maid nurse student teacher""".split())
ANIMALS = frozenset("""animal animals cat cats kitten dog dogs puppy bird birds fox wolf horse pony
rabbit bunny bear deer cow pig sheep goat mouse rat hamster squirrel lion tiger leopard panda
monkey owl penguin duck chicken fish dolphin whale shark snake lizard frog turtle dragon
butterfly bee insect""".split())


@dataclass(frozen=True)
class TagFacts:
    """What the tag source says about tags beyond their wiki text (normalised tag names)."""

    category: Mapping[str, str] = field(default_factory=dict)     # general|copyright|meta|...
    implies: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    other_names: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class Sifted:
    used: list[str]
    dropped: list[tuple[str, str]]          # (tag, reason), in tag-file order

    def dropped_records(self) -> list[dict[str, str]]:
        return [{"tag": tag, "reason": reason} for tag, reason in self.dropped]


def junk_reason(tag: str) -> str:
    """Why a normalised tag is no tag at all ("" when it is one)."""
    if not _LETTER.search(tag):
        return f"{JUNK}: no letters"
    if _MARKUP.search(tag):
        return f"{JUNK}: markup"
    if _URL.search(tag):
        return f"{JUNK}: a URL"
    if _PATH.search(tag) or _FILE.search(tag):
        return f"{JUNK}: a file path"
    if _CODE.search(tag):
        return f"{JUNK}: code"
    if any(unicodedata.category(ch) == "Cf" for ch in tag):
        return f"{JUNK}: invisible formatting characters"
    return ""


def has_living_subject(tags: Iterable[str]) -> bool:
    """A person or an animal is tagged: `1girl`, `astronaut`, `tabby cat`, `tiger (animal)`."""
    for tag in tags:
        info = tag_info(tag)
        if info.role == "count" or info.tag.endswith("(animal)"):
            return True
        if info.words in PEOPLE or info.words in ANIMALS or info.head in ANIMALS | PEOPLE:
            return True
    return False


def is_latin(tag: str) -> bool | None:
    """Whether a tag's letters are Latin ones; None when it has none."""
    letters = _LETTER.findall(tag)
    if not letters:
        return None
    return all(ch.isascii() or unicodedata.name(ch, "").startswith("LATIN") for ch in letters)


@lru_cache(maxsize=4)
def shipped_implications(path: Path = IMPLICATIONS_FILE) -> dict[str, tuple[str, ...]]:
    """narrow -> broader tags, from the shipped table (normalised)."""
    table: dict[str, tuple[str, ...]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        narrow, _, broad = line.partition(":")
        table[normalise(narrow)] = tuple(normalise(b) for b in broad.split(",") if b.strip())
    return table


def broader(tag: str, facts: TagFacts) -> set[str]:
    """Every tag `tag` implies, followed transitively: the source's implications where it
    gives them for a tag, else the shipped table's."""
    table = shipped_implications()
    found: set[str] = set()
    todo = [tag]
    while todo:
        current = todo.pop()
        nexts = facts.implies.get(current)
        for b in (nexts if nexts is not None else table.get(current, ())):
            if b not in found and b != tag:
                found.add(b)
                todo.append(b)
    return found


def sift_tags(raw: Iterable[str], *, blacklist: Iterable[str] = (), drop_meta: bool = True,
              drop_copyright: bool = True, facts: TagFacts | None = None) -> Sifted:
    """The tags a caption is made from, in tag-file order, and the others with reasons.
    `facts` (from the tag store) adds the source's categories, implications and other names;
    without them (before the tags stage has looked the tags up) only the shipped table is used."""
    facts = facts or TagFacts()
    raw = list(raw)
    listed = _pattern(tuple(blacklist))
    meta = _pattern(DEFAULT_META_TAGS) if drop_meta else None
    kept: list[str] = []
    dropped: list[tuple[str, str]] = []
    seen: set[str] = set()
    for item in raw:
        tag = normalise(item)
        if not tag or tag in seen:
            continue
        seen.add(tag)
        category = facts.category.get(tag, "")
        reason = ("too long to be a tag" if len(tag) > MAX_TAG_LENGTH
                  else "" if is_face(tag) else junk_reason(tag))
        if not reason and _listed(tag, listed):
            reason = "blacklisted (tags.blacklist)"
        if not reason and drop_meta and (_listed(tag, meta) or category == "meta"):
            reason = "meta: about the post, not the picture"
        if not reason and drop_copyright and category == "copyright":
            reason = "copyright: names a series, not what is shown"
        if reason:
            dropped.append((tag, reason))
        else:
            kept.append(tag)
    gone: dict[str, str] = {}
    living = (has_living_subject(t for t in kept if not is_face(t))
              or any(facts.category.get(t) == "character" for t in kept))     # `saber (fate)`
    for tag in kept:
        if is_face(tag) and not living:
            gone[tag] = "emoticon: no person or animal is tagged"
        elif is_face(tag) and tag not in EMOTICONS:
            gone[tag] = "emoticon we have no words for"
    latin = [t for t in kept if is_latin(t)]
    for tag in kept:
        if tag in gone or is_latin(tag) is not False or not latin:
            continue
        source = next((t for t in latin if tag in facts.other_names.get(t, ())), None)
        gone[tag] = (f"translated duplicate of {source}" if source else
                     "translated duplicate: another script beside English tags")
    for tag in kept:
        if tag in gone:
            continue
        narrower = next((t for t in kept if t != tag and t not in gone
                         and tag in broader(t, facts)), None)
        if narrower is not None:
            gone[tag] = f"{IMPLIED} {narrower}"
    dropped += [(t, gone[t]) for t in kept if t in gone]
    order = {t: i for i, t in enumerate(dict.fromkeys(normalise(r) for r in raw))}
    dropped.sort(key=lambda d: order.get(d[0], len(order)))
    return Sifted([t for t in kept if t not in gone], dropped)
