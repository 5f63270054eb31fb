"""What each booru tag says about a picture: the subject, a worn or bodily detail, a pose,
an object, the setting, the framing or the medium; and the words that name it.

The caption verifier uses this to find the main subject (the first content tag) and the
tags a caption should cover; the fallback composer uses it to order a caption from subject
to details to setting. Tags arrive normalised (stages/language/tagging.py: lower case, spaces for
underscores, emoticons kept). The word lists are small on purpose: an unknown tag is an
object, which is the safe reading for coverage and for composing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from .tagging import is_face
from .words import stem, tokens

CONTENT_ROLES = ("count", "object", "wear", "body", "pose", "setting", "time")
SUBJECT_ROLES = ("count", "object")

_COUNT = re.compile(r"^(\d+\+?|multiple|many|several)\s?(girl|boy|other)s?$")
_QUALIFIER = re.compile(r"\s*\(([^()]*)\)\s*$")
_NUMBERS = {"1": "one", "2": "two", "3": "three", "4": "four", "5": "five", "6": "six"}
_COUNT_WORDS = {
    "girl": ({"girl", "woman", "female", "lady"}, ("girl", "girls"), ("woman", "women")),
    "boy": ({"boy", "man", "male", "guy"}, ("boy", "boys"), ("man", "men")),
    "other": ({"person", "people", "figure", "character", "creature"},
              ("person", "people"), ("person", "people")),
}

FRAMING = frozenset("""
solo|solo focus|close-up|upper body|lower body|cowboy shot|full body|portrait|profile|
from above|from below|from side|from behind|from front|dutch angle|wide shot|very wide shot|
pov|depth of field|blurry|blurry background|blurry foreground|simple background|
no humans|out of frame|cropped|headshot|bokeh|motion blur|chromatic aberration|film grain|
vignetting|letterboxed|border|watermark|signature|text focus|macro|still life
""".replace("\n", "").split("|"))
MEDIUM = frozenset("""monochrome|greyscale|grayscale|sepia|realistic|photorealistic|sketch|
lineart|3d|pixel art|comic|traditional media|official art|spot color|high contrast""".replace(
    "\n", "").split("|"))
TIME = {"day": "in daylight", "daytime": "in daylight", "night": "at night",
        "evening": "in the evening", "morning": "in the morning", "sunset": "at sunset",
        "sunrise": "at sunrise", "twilight": "at twilight", "dusk": "at dusk", "dawn": "at dawn",
        "golden hour": "in golden-hour light", "outdoors": "outdoors", "indoors": "indoors"}
WEAR = frozenset("""shirt t-shirt dress skirt hat cap helmet jacket coat suit spacesuit uniform
gloves boots shoes scarf glasses sunglasses goggles necktie tie ribbon bow hoodie sweater
kimono armor armour apron mask headphones earrings necklace bracelet jeans pants trousers
shorts socks thighhighs pantyhose swimsuit bikini leotard cape cloak veil crown tiara hairband
headband hairclip collar choker vest blouse sleeves hood robe gown overalls sandals sneakers
belt watch""".split())
BODY = frozenset("""hair eyes eye fur nose ears ear tail skin mouth lips teeth tongue face cheeks
eyebrows eyelashes whiskers horns wings paws paw claws beard mustache moustache freckles hands
hand fingers arms arm legs leg feathers scales fins mane beak petals stem leaves bangs
ponytail braid twintails pupils fangs""".split())
SETTING = frozenset("""sky background scenery landscape nature city cityscape street road
beach ocean sea lake river water forest woods field grass meadow mountain mountains hill
hills snow rain room bedroom kitchen classroom space underwater horizon desert garden park
clouds cloud cloudy shore waterfall cave ruins village town countryside""".split())
POSES = {"smile": "smiling", "grin": "grinning", "teeth": "showing teeth", "blush": "blushing",
         "crying": "crying", "tears": "in tears", "laughing": "laughing", "wink": "winking",
         "looking at viewer": "looking at the viewer", "open mouth": "with an open mouth",
         "closed eyes": "with closed eyes", "sleeping": "sleeping", "frown": "frowning"}
POSE_VERBS = frozenset("""sitting standing lying kneeling walking running jumping holding eating
drinking reading sleeping crying laughing smiling waving dancing singing flying swimming
squatting leaning hugging kissing pointing reaching carrying playing riding fighting smoking
stretching looking facing turning writing cooking climbing falling floating posing""".split())
# Faces written with underscores: what each shows, in words.
EMOTICONS = {"^_^": "smiling with closed eyes", "o_o": "staring wide-eyed", "0_0": "staring wide-eyed",
             ">_<": "with eyes squeezed shut", "-_-": "with half-closed eyes", ";_;": "teary-eyed",
             "t_t": "teary-eyed", "x_x": "with crossed-out eyes", "=_=": "with tired eyes",
             "._.": "with a blank look", "u_u": "with a sleepy look", "^_^;": "smiling nervously",
             ":d": "smiling with an open mouth", ":)": "smiling", ":o": "with an open mouth",
             ":p": "sticking out the tongue", ";d": "winking with an open-mouthed smile",
             ";)": "winking", ":3": "with a cat-like smile", "xd": "laughing with eyes squeezed shut",
             ":q": "licking the lips", ":<": "frowning", ":/": "with a wry mouth"}
# Words that name the same thing as a tag, for coverage and for the subject check.
EQUIVALENT = {"outdoors": {"outdoor", "outside", "open air"}, "indoors": {"indoor", "inside"},
              "day": {"daylight", "daytime", "sunlight", "sunny"}, "night": {"nighttime"},
              "no humans": set(), "monochrome": {"black-and-white", "black and white", "greyscale"},
              "greyscale": {"black-and-white", "black and white", "monochrome", "grayscale"},
              "close-up": {"closeup", "close up"}}
MASS = frozenset("""coffee tea water milk juice wine beer grass hair fur skin architecture scenery
food foliage snow rain fire smoke sand light sunlight clothing furniture bread rice meat money
text fog mist steam ice chocolate soup cream armor armour jewelry jewellery""".split())

# Things a booru tag names in the singular that a picture almost always shows several of
# (`coin` on a pile of 27 coins, `star (sky)`, `galaxy` on a deep field). Tags do not count,
# so the composer says these count-neutrally, as bare plurals ("coins"), never "a coin".
COLLECTIVE = frozenset("""coin star galaxy petal leaf bubble bead pearl gem feather snowflake
sparkle raindrop firefly cherry berry grape pebble seashell confetti""".split())


def plural(phrase: str) -> str:
    """"coin" -> "coins", "galaxy" -> "galaxies", "leaf" -> "leaves" (the last word)."""
    head, _, last = phrase.rpartition(" ")
    if last.endswith("y") and last[-2:-1] not in tuple("aeiou"):
        last = last[:-1] + "ies"
    elif last.endswith(("s", "x", "ch", "sh")):
        last += "es"
    elif last.endswith("f") and last not in ("roof", "chief", "reef"):
        last = last[:-1] + "ves"
    elif last.endswith("fe"):
        last = last[:-2] + "ves"
    else:
        last += "s"
    return f"{head} {last}".strip()


def count_neutral(info: TagInfo) -> str:
    """A thing tag as the composer says it: bare plural for COLLECTIVE things, else with an
    article ("a cup": one thing the picture is about)."""
    if info.role in ("object", "setting") and info.words.split()[-1] in COLLECTIVE:
        return plural(info.words)
    return with_article(info.words)


@dataclass(frozen=True)
class TagInfo:
    tag: str              # the normalised tag
    role: str             # count|object|wear|body|pose|setting|time|framing|medium|emoticon
    words: str            # the tag in words: qualifier dropped ("saber (fate)" -> "saber")
    head: str             # the noun that names the thing ("coffee cup" -> "cup")


@lru_cache(maxsize=4096)
def tag_info(tag: str) -> TagInfo:
    qualifier = _QUALIFIER.search(tag)
    words = _QUALIFIER.sub("", tag).strip() if qualifier else tag
    if qualifier and qualifier.group(1).strip() == "medium":
        return TagInfo(tag, "medium", words, words)
    if is_face(tag):
        return TagInfo(tag, "emoticon", tag, tag)
    parts = words.split(" of ")[0].split()
    head = parts[-1] if parts else words
    if _COUNT.match(words):
        return TagInfo(tag, "count", words, _COUNT.match(words).group(2))
    for role, names in (("framing", FRAMING), ("medium", MEDIUM)):
        if words in names or (role == "framing" and words.endswith(" focus")):
            return TagInfo(tag, role, words, head)
    if words in TIME:
        return TagInfo(tag, "time", words, head)
    if words in POSES or (parts and parts[0] in POSE_VERBS):
        return TagInfo(tag, "pose", words, head)
    if head in WEAR:
        return TagInfo(tag, "wear", words, head)
    if head in BODY:
        return TagInfo(tag, "body", words, head)
    if head in SETTING or words.endswith((" sky", " background")):
        return TagInfo(tag, "setting", words, head)
    return TagInfo(tag, "object", words, head)


def infos(tags: list[str]) -> list[TagInfo]:
    return [tag_info(t) for t in tags]


def is_photo(tags: list[str]) -> bool:
    return any(t in ("photo (medium)", "realistic", "photorealistic") for t in tags)


def main_subject(tags: list[str]) -> TagInfo | None:
    """The first content tag that can be a subject (a count like 1girl, or a thing);
    failing that, the first content tag of any kind."""
    found = infos(tags)
    for roles in (SUBJECT_ROLES, CONTENT_ROLES):
        for info in found:
            if info.role in roles:
                return info
    return None


def content_tags(tags: list[str]) -> list[TagInfo]:
    """Tags a caption should mention: what is shown, not how it is framed or drawn."""
    return [i for i in infos(tags) if i.role in CONTENT_ROLES and tokens(i.words)]


_PLURALS = {"girl": {"girls", "women", "females", "ladies"}, "boy": {"boys", "men", "males", "guys"},
            "other": {"people", "persons", "figures", "characters", "creatures"}}


def subject_terms(info: TagInfo, synonyms: tuple[str, ...] = (), *,
                  head_names_it: bool = False) -> set[str]:
    """Words or phrases that count as naming the subject (compared by stem). The head noun
    alone ("clock" for `analog clock`) counts only when `head_names_it`: a compound's head
    is often another thing (`hot dog` is no dog, `teddy bear` no bear)."""
    if info.role == "count":
        # plurals too: stems do not join "women" to "woman" (nor "men", "people")
        return set(_COUNT_WORDS[info.head][0]) | _PLURALS[info.head]
    terms = {info.words, *synonyms} | EQUIVALENT.get(info.words, set())
    if head_names_it:
        terms.add(info.head)
    return {t for t in terms if t}


def plural_terms(info: TagInfo) -> set[str]:
    """For a count of more than one (`2girls`, `multiple boys`), the words of which a caption
    must use one (compared as written: stems would make "girl" name two girls); else none."""
    if info.role != "count" or info.words.startswith("1"):
        return set()
    return _PLURALS[info.head]


def head_names(info: TagInfo, tags: list[str], definition: str) -> bool:
    """Whether the subject's head noun alone names it: the head is itself one of the tags
    (`coffee cup` beside `cup`), or the tag's wiki says it is one ("An analog clock: a clock
    with hands")."""
    if info.head == info.words:
        return True
    return (info.head in {tag_info(t).words for t in tags}
            or stem(definition_head(definition)) == stem(info.head))


def mentions(text_stems: list[str], phrase: str) -> bool:
    """Whether the phrase's words occur as a run in the stemmed text."""
    target = [stem(w) for w in tokens(phrase)]
    if not target:
        return False
    n = len(target)
    return any(text_stems[i:i + n] == target for i in range(len(text_stems) - n + 1))


def covered(text_stems: list[str], info: TagInfo) -> bool:
    """Whether a caption mentions a tag: all of its words, or an equivalent word."""
    if info.role == "count":
        return any(mentions(text_stems, t) for t in subject_terms(info))
    if any(mentions(text_stems, t) for t in EQUIVALENT.get(info.words, ())):
        return True
    have = set(text_stems)
    return all(stem(w) in have for w in tokens(info.words))


def count_phrase(info: TagInfo, photo: bool) -> str:
    """1girl -> "a girl" (or "a woman" in a photo), 2boys -> "two boys", 6+girls -> "six or
    more girls", multiple girls -> "several girls"."""
    match = _COUNT.match(info.words)
    number, kind = match.group(1), match.group(2)
    _, young, adult = _COUNT_WORDS[kind]
    singular, plural = adult if photo else young
    if number == "1":
        return ("an " if singular[0] in "aeiou" else "a ") + singular
    if number in ("multiple", "many", "several"):
        return "several " + plural
    plus = number.endswith("+")
    word = _NUMBERS.get(number.rstrip("+"), number.rstrip("+"))
    return f"{word} or more {plural}" if plus else f"{word} {plural}"


def with_article(phrase: str) -> str:
    """"a pink nose", "an orange flower", "whiskers", "brown fur"."""
    words = phrase.split()
    last = words[-1] if words else phrase
    if (not words or last in MASS or words[0] in _NUMBERS.values() or words[0] in ("no", "without")
            or (last.endswith("s") and not last.endswith(("ss", "us", "is")))):
        return phrase
    vowel = phrase[:1] in "aeiou" and not phrase.startswith(("uni", "eu", "one", "use"))
    return ("an " if vowel or phrase.startswith("hour") else "a ") + phrase


_NP_END = re.compile(r"[.;:()]|\s(?:with|whose|that|who|which|of|for|made|used|worn|in|on|from|"
                     r"by|at|to|is|are|was|were|has|have|can|may|and|or|driven|set|shown|seen|"
                     r"where|when|such)\b", re.IGNORECASE)
_PERSON = frozenset("person woman man girl boy child people character human someone".split())


def definition_head(definition: str) -> str:
    """The noun a definition says the tag is: "A garden flower with ..." -> "flower".
    Only for definitions that open with an article and a short noun phrase; else ""."""
    words = definition.strip().split(None, 1)
    if len(words) < 2 or words[0].lower() not in ("a", "an", "the"):
        return ""
    phrase = tokens(_NP_END.split(" " + words[1], maxsplit=1)[0])
    return phrase[-1] if 0 < len(phrase) <= 4 else ""


def is_person(definition: str) -> bool:
    """Whether a tag's definition says it is a kind of person ("A person who ...")."""
    return stem(definition_head(definition)) in {stem(w) for w in _PERSON}


def kinds_of(subject: TagInfo, tags: list[str], definitions: dict[str, str]) -> list[TagInfo]:
    """Other tags whose definitions say they are a kind of the subject (dahlia: "A garden
    flower ..." is a kind of flower), in tag order."""
    want = stem(subject.head)
    return [i for i in infos(tags) if i.tag != subject.tag and i.role in SUBJECT_ROLES
            and stem(definition_head(definitions.get(i.tag, ""))) == want]
