"""The fallback caption: composed from the tags alone, so it cannot say what they do not.

Used when no model candidate passes the verifier. Ordered subject -> worn and bodily
details -> pose -> other objects -> setting -> framing. Booru tags do not count things, so
nothing here states a number a count tag (`1girl`, `3boys`) does not give, and things a
picture usually holds several of are bare plurals ("coins", "galaxies with stars"). Tags are
turned into words
("1girl" -> "a woman" in a photo, "brown_hair" + "short_hair" -> "short brown hair", "o_o"
-> "staring wide-eyed", "saber_(fate)" -> "saber"). Without tags it falls back to the
subject the vision answer names.
"""

from __future__ import annotations

import re

from .tagroles import (
    EMOTICONS,
    POSES,
    TIME,
    TagInfo,
    count_neutral,
    count_phrase,
    infos,
    is_person,
    is_photo,
    kinds_of,
    main_subject,
    with_article,
)

FRAMING_WORDS = {"close-up": "close-up", "upper body": "upper body", "full body": "full body",
                 "cowboy shot": "cowboy shot", "portrait": "portrait", "profile": "in profile",
                 "from above": "seen from above", "from below": "seen from below",
                 "from side": "seen from the side", "from behind": "seen from behind",
                 "blurry background": "blurred background", "depth of field": "shallow depth of field",
                 "simple background": "plain background", "bokeh": "bokeh", "macro": "macro shot",
                 "dutch angle": "tilted angle", "wide shot": "wide shot", "motion blur": "motion blur"}
SETTING_PREPOSITION = {"sky": "under", "background": "against", "lake": "by", "sea": "by",
                       "ocean": "by", "river": "by", "shore": "on", "beach": "on", "grass": "on",
                       "snow": "in", "rain": "in", "space": "in", "clouds": "with", "cloud": "with",
                       "mountains": "with", "mountain": "with", "horizon": "with"}
GENRE_SETTINGS = {"scenery", "landscape", "nature"}     # what kind of picture, not a place
_VISION_HEDGE = re.compile(
    r"^(?:(?:most|very|quite)?\s*likely|probably|perhaps|possibly|maybe|it is|it's|this is|"
    r"there is|there are|(?:the|this) (?:image|picture|photo|photograph) (?:shows|depicts)|"
    r"(?:an? )?(?:image|picture|photo|photograph) of)\s+", re.IGNORECASE)
_VISION_CUT = re.compile(r"[,;.:!?(]| or | and | with | that | which | possibly ", re.IGNORECASE)


def vision_subject(answer: str) -> str:
    """The thing a vision answer names first, without hedges: "most likely an espresso,
    possibly a cup" -> "an espresso"; "" when it names nothing."""
    text = " ".join(answer.split())
    while True:
        stripped = _VISION_HEDGE.sub("", text, count=1)
        if stripped == text:
            break
        text = stripped
    phrase = _VISION_CUT.split(text, maxsplit=1)[0].strip()
    if not phrase or phrase.lower().startswith(("nothing", "no ", "unknown")):
        return ""
    return phrase


def _refined(info: TagInfo, others: list[TagInfo]) -> TagInfo:
    """The most specific tag that ends with the same words: cat -> tabby cat."""
    best = info
    for other in others:
        if other.words.endswith(" " + best.words) and other.role == info.role:
            best = other
    return best


def _subsumed(info: TagInfo, others: list[TagInfo]) -> bool:
    return any(o is not info and o.words.endswith(" " + info.words) for o in others)


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _merge_heads(found: list[TagInfo]) -> list[str]:
    """short hair + brown hair -> short brown hair (same head noun, modifiers in tag order)."""
    groups: dict[str, list[str]] = {}
    for info in found:
        modifier = info.words[: -len(info.head)].strip() if info.words.endswith(info.head) else ""
        groups.setdefault(info.head, [])
        if modifier and modifier not in groups[info.head]:
            groups[info.head].append(modifier)
    return [" ".join(mods + [head]) for head, mods in groups.items()]


def _setting(found: list[TagInfo]) -> list[str]:
    out = []
    for info in found:
        if info.words in GENRE_SETTINGS:
            continue
        prep = SETTING_PREPOSITION.get(info.head, "in")
        if prep == "with" or info.head in ("grass", "snow", "rain", "space"):
            noun = info.words
        elif info.head in ("lake", "sea", "ocean", "river", "beach", "shore") or info.words == "sky":
            noun = "the " + info.words
        else:
            noun = with_article(info.words)
        out.append(f"{prep} {noun}")
    return out


def _prefix(tags: list[str]) -> str:
    tags_set = set(tags)
    mono = "black-and-white " if tags_set & {"monochrome", "greyscale", "grayscale"} else ""
    for info in infos(tags):
        if info.role == "medium" and info.tag.endswith("(medium)"):
            kind = "photo" if info.words in ("photo", "photograph") else info.words
            return with_article(mono + kind) + " of "
    if "sketch" in tags_set:
        return with_article(mono + "sketch") + " of "
    if "3d" in tags_set:
        return "a 3D render of "
    if "pixel art" in tags_set:
        return "pixel art of "
    if mono:
        return with_article(mono + "picture") + " of "
    return ""


def tag_phrases(tags: list[str]) -> list[str]:
    """Every phrase the composer may use for these tags (the verifier counts their words as
    grounded: saying "in daylight" for `day` is not a hallucination)."""
    phrases = []
    photo = is_photo(tags)
    for info in infos(tags):
        if info.role == "count":
            phrases.append(count_phrase(info, photo))
        phrases.append(POSES.get(info.words, "") or EMOTICONS.get(info.tag, "")
                       or TIME.get(info.words, "") or FRAMING_WORDS.get(info.words, ""))
    phrases += _setting([i for i in infos(tags) if i.role == "setting"])
    phrases.append(_prefix(tags))
    return [p for p in phrases if p]


def _subject(info: TagInfo, found: list[TagInfo], tags: list[str],
             definitions: dict[str, str]) -> tuple[str, list[TagInfo]]:
    """The subject phrase and the tags it used up: "a woman astronaut" (1girl + a tag whose
    wiki says it is a person), "an orange dahlia" (flower + orange flower + a tag whose wiki
    says it is a flower)."""
    if info.role == "count":
        phrase = count_phrase(info, is_photo(tags))
        person = next((i for i in found if i.role == "object"
                       and is_person(definitions.get(i.tag, ""))), None)
        if person is None or not info.words.startswith("1"):
            return phrase, []
        if info.head == "other":
            return with_article(person.words), [person]
        return f"{phrase} {person.words}", [person]
    refined = _refined(info, found)
    used = [refined] if refined is not info else []
    kind = next((k for k in kinds_of(info, tags, definitions)
                 if not k.words.endswith(info.words)), None)
    words = refined.words
    if kind is not None:
        words = (refined.words[: -len(info.words)] + kind.words).strip()
        used.append(kind)
    return count_neutral(TagInfo(refined.tag, refined.role, words, words.split()[-1])), used


def _pose(info: TagInfo) -> str:
    if info.words in POSES:
        return POSES[info.words]
    verb, _, rest = info.words.partition(" ")
    if verb in ("holding", "carrying", "wearing", "riding") and rest and not rest.startswith(
            ("a ", "an ", "the ")):
        return f"{verb} {with_article(rest)}"
    return info.words


def compose(tags: list[str], vision: str = "", *, definitions: dict[str, str] | None = None,
            max_details: int = 12) -> str:
    """One caption line from the tags (or, without tags, from the vision answer's subject).

    `definitions` (tag -> wiki definition) let the subject absorb tags the wiki says are a
    kind of it. `max_details` caps how many details follow the subject; lower it to fit a
    token limit. Returns "" when there is nothing to say.
    """
    definitions = definitions or {}
    subject_info = main_subject(tags)
    if subject_info is None:
        phrase = vision_subject(vision)
        return _sentence(phrase) if phrase else ""
    found = [i for i in infos(tags) if i is not subject_info]
    subject, used = _subject(subject_info, found, tags, definitions)
    found = [i for i in found if i not in used]
    kept = [i for i in found if i.role == "body" or not _subsumed(i, found + [subject_info] + used)]
    if subject_info.role != "count" and not is_person(definitions.get(subject_info.tag, "")):
        kept = [TagInfo(i.tag, "object", i.words, i.head) if i.role == "wear" else i for i in kept]
    by_role: dict[str, list[TagInfo]] = {}
    for info in kept:
        by_role.setdefault(info.role, []).append(info)
    photo = is_photo(tags)
    times = sorted(by_role.get("time", []), key=lambda i: i.words not in ("outdoors", "indoors"))
    details: list[tuple[str, str]] = []          # (group, phrase), in priority order
    details += [("wear", with_article(i.words)) for i in by_role.get("wear", [])]
    details += [("body", with_article(p)) for p in _merge_heads(by_role.get("body", []))]
    details += [("pose", _pose(i)) for i in by_role.get("pose", [])]
    details += [("pose", EMOTICONS[i.tag]) for i in by_role.get("emoticon", []) if i.tag in EMOTICONS]
    details += [("object", count_phrase(i, photo)) for i in by_role.get("count", [])]
    details += [("object", count_neutral(i)) for i in by_role.get("object", [])]
    details += [("setting", p) for p in _setting(by_role.get("setting", []))]
    details += [("time", TIME[i.words]) for i in times]
    details += [("framing", FRAMING_WORDS[i.words]) for i in by_role.get("framing", [])
                if i.words in FRAMING_WORDS]
    details = details[:max_details]
    group = {g: [p for k, p in details if k == g] for g in
             ("wear", "body", "pose", "object", "setting", "time", "framing")}
    text = _prefix(tags) + subject
    if group["wear"]:
        text += " wearing " + _join(group["wear"])
    if group["body"]:
        text += (", with " if group["wear"] else " with ") + _join(group["body"])
    if group["pose"]:
        text += ", " + _join(group["pose"])
    if group["object"]:
        text += (", with " if group["body"] or group["wear"] or group["pose"] else " with ") \
            + _join(group["object"])
    place = group["setting"] + group["time"]
    if place:
        text += ", " + " ".join(place)
    if group["framing"]:
        text += ", " + ", ".join(group["framing"])
    return _sentence(text)


def _sentence(text: str) -> str:
    text = " ".join(text.split()).rstrip(" ,.")
    return text[:1].upper() + text[1:] + "." if text else ""
