"""The caption verifier: does a candidate caption say what its evidence says, and only that?

Model-agnostic: it reads the caption and the evidence it was made from (tags, tag wiki
definitions and summaries, the vision answer, trigger words, the stage's templates), never
the model. A candidate fails when it
  - makes a claim nothing grounds: a noun, colour, number or action that no tag, trigger
    word or vision answer states. A tag's wiki definition (and the shipped synonym table)
    grounds nouns only, never colours, actions or counts ("a blue spacesuit" because the
    wiki says spacesuits are "often white or orange", "lifts off" from the launch pad's);
    a classifier's labels ground nouns only, a vision-language model's answer grounds all,
  - negates or contradicts a tag ("no cup", a person on `no_humans`, "3 girls" on `1girl`,
    a digit or "one" included),
  - has no sentence shape (word salad), repeats itself or says nothing ("X is X"),
  - copies a run of RUN_WORDS words of the templates that holds a word the evidence lacks,
    talks about the pipeline or hedges (likely, perhaps), or uses tag jargon,
  - does not name the main subject (the first content tag, a kind of it, a synonym from
    its wiki or the shipped table; without tags, what the vision answer names).
Spelling variants ("black and white"), plurals of count-free tags ("coins") and synonyms
of the subject pass. Every objection names the words it doubts (`Verdict.doubted`), so the
review page can mark them. Passing candidates are ranked by how well they cover the
*salient* tags (subject weighted double, attributes, objects, setting; tags for a broader
kind such as `motor_vehicle` count for nothing and cost a little when named), so listing
tags does not win.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field

from .compose import tag_phrases, vision_subject
from .tagroles import (
    _PLURALS,
    EQUIVALENT,
    content_tags,
    count_phrase,
    covered,
    head_names,
    is_photo,
    kinds_of,
    main_subject,
    mentions,
    plural_terms,
    subject_terms,
    tag_info,
)
from .tagsift import has_living_subject
from .words import META, STOP, content_words, ngrams, runs, stem, stems, tokens

RUN_WORDS = 5                     # a copied run this long is template text, not a caption
SUMMARY_RUN_WORDS = 8             # a run this long copied from a tag summary defines the tag
MIN_COVERAGE = 0.25               # a caption must mention at least this share of content tags
GENERIC_PENALTY = 0.1             # score lost per broader-kind tag the caption names
# Words that only relate or place things the evidence names ("a woman wearing a helmet",
# "a cup rests on a saucer", "a close-up shot"): they claim nothing of their own.
RELATIONS = frozenset("""wearing wears worn dressed made covered filled surrounded including
includes containing contains placed set front top bottom left right middle centre center side
background foreground edge corner sits rests resting stands lies served shot closeup
close-up close""".split())
# Claims a caption must never make up: a wrong colour or count is a wrong caption.
COLOURS = frozenset("""red orange yellow green blue purple violet pink brown black white grey gray
silver gold golden beige cyan magenta teal turquoise maroon navy blonde blond dark pale bright
colourful colorful""".split())
NUMBERS = {"one": 1, "single": 1, "lone": 1, "two": 2, "pair": 2, "couple": 2, "both": 2,
           "twin": 2, "twins": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
           "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "dozen": 12,
           "dozens": 24, "hundred": 100, "hundreds": 200}
# Details a definition's prose may hold that are claims about this picture, as colours are:
# weather, size, shape, age, material, texture ("a clear sky" because the wiki says skies are
# "clear, cloudy or at dusk").
DETAILS = frozenset("""clear cloudy sunny overcast stormy foggy misty rainy snowy bright dim
tall short long small large big tiny huge giant little old new young ancient modern wet dry
empty full round square flat shiny glossy wooden metal metallic plastic stone striped spotted
fluffy soft hard smooth rough hot cold warm frozen broken open closed busy quiet calm crowded
heavy light thin thick wide narrow deep shallow""".split())
# Actions and states a caption must not invent (compared by stem; "-ing" and "-ed" forms
# outside NOT_ACTIONS count too).
ACTIONS = frozenset(stem(w) for w in """hold carry lift fly explode burn drink eat sit walk run
jump chase play smile laugh cry look stare ride drive swim sleep read write cook climb fall
float pose dance sing fight hug kiss reach lean kneel squat throw catch kick pull push crash
launch soar shine glow hover grow bloom blossom pour stir sip bite chew bark roar howl purr
fire shoot spill melt leak drip blow spin roll crawl dive leap hunt graze perch peck
carried carries holds drinks eats plays takes rises flies lifts""".split())
NOT_ACTIONS = frozenset("""building buildings painting paintings clothing ceiling evening morning
ring rings king string wing wings thing things something nothing lighting bedding railing
pudding icing frosting stocking stockings earring earrings sibling awning ceiling herring
bed red shed seed speed sled need feed""".split())
# Everyday names the tags do not use for the same thing: they name (and ground) a tag's
# thing as nouns only. The wiki's own "also known as" names count too (wiki_synonyms).
SYNONYMS = {"coffee": ("espresso", "latte", "cappuccino", "americano", "mocha"),
            "cup": ("mug", "teacup"), "motorcycle": ("motorbike", "bike"),
            "bicycle": ("bike",), "car": ("automobile",), "dog": ("puppy", "hound"),
            "cat": ("feline", "kitty"), "money": ("cash", "currency"), "table": ("tabletop",),
            "space": ("deep field", "cosmos", "outer space", "universe"),
            "galaxy": ("deep field",), "star (sky)": ("starfield", "starry"),
            "twilight": ("dusk",), "sunset": ("dusk",), "sunrise": ("dawn",),
            "architecture": ("building", "buildings"), "sea": ("ocean",), "ocean": ("sea",),
            "photo (medium)": ("photograph", "photo")}
# A drink in a vessel: naming the drink names the vessel subject ("an espresso" for a cup).
VESSELS = frozenset("cup mug glass bowl teacup bottle jar".split())
DRINKS = frozenset("coffee tea milk juice wine beer water cocoa espresso soup".split())
# Heads of tags for a broader kind of thing (`motor_vehicle` beside `motorcycle`): not
# salient, and naming them only lists tags.
GENERIC = frozenset("""vehicle animal creature object thing item food drink beverage device
machine money container tableware utensil furniture clothing accessory structure""".split())
PERSONS = frozenset("""person persons people human humans man men woman women girl girls boy boys
child children kid kids lady ladies guy guys someone somebody crowd rider driver pilot
astronaut astronauts figure figures mechanic worker player players keeper""".split())
ANIMALS = frozenset("""cat dog bird horse cow fox wolf bear rabbit mouse animal fish tiger lion
deer duck owl""".split())
# Stop words that, standing for a noun, claim more things than the caption names ("a girl
# and others", "several more"): "1girl" says one, and no tag says what the others are.
UNNAMED = frozenset("others another several many more few".split())
NEGATORS = frozenset("no not without lacking missing none nor never".split())
# Post bookkeeping, not picture content: never evidence, even when left in the tags.
META_TAGS = frozenset("""animated absurdres highres lowres commentary translated
tagme""".split())
_TOKEN = re.compile(r"[^\W_]+(?:['’-][^\W_]+)*|[,.;:!?()\[\]\"]")
_HEDGED = re.compile(r"(?:^|(?<=[,;.]))\s*(?:\w+\s+)?(?:perhaps|possibly|maybe|might|may be|could be|"
                     r"or)\b[^,;.]*", re.IGNORECASE)
_PERCENT = re.compile(r"%|\bper\s+cent\b", re.IGNORECASE)
_COPULA = re.compile(r"\b(?:is|are|was|were)\b", re.IGNORECASE)
JARGON = frozenset(("no humans", "solo", "solo focus", "animal focus", "food focus", "male focus",
                    "text focus", "still life", "simple background", "cowboy shot"))
_SYNONYM = re.compile(r"\b(?:also (?:known as|called|spelled)|short for|abbreviated (?:as|to)|"
                      r"a\.k\.a\.?|aka|sometimes called|often called|commonly called)\s+"
                      r"([^.;:()]+)", re.IGNORECASE)
VLM_BACKENDS = frozenset(("openai", "blip", "vlm"))


def wiki_synonyms(definition: str) -> tuple[str, ...]:
    """Names the wiki gives as the same thing: "..., also known as a lily pad or pad" ->
    ("lily pad", "pad")."""
    found = []
    for match in _SYNONYM.finditer(definition):
        for part in re.split(r",|\bor\b|\band\b", match.group(1)):
            words = [w for w in tokens(part) if w not in ("a", "an", "the")]
            if 0 < len(words) <= 3:
                found.append(" ".join(words))
    return tuple(dict.fromkeys(found))


def confident_vision(answer: str) -> str:
    """The vision answer without its guesses ("perhaps a palace, possibly a bell cote" -> "";
    "most likely an espresso, possibly a cup" -> "most likely an espresso")."""
    return _HEDGED.sub("", answer).strip(" ,;")


def affirmed(text: str) -> str:
    """The text without its negators and the words they govern ("There are no people" ->
    "there are")."""
    marked = _marked(text)
    negated = _negated(marked)
    return " ".join(w for i, w in enumerate(marked)
                    if i not in negated and w not in NEGATORS and not w.endswith("n't"))


def _parts(word: str) -> list[str]:
    """A hyphenated word and its parts ("black-and-white" -> itself, black, and, white)."""
    return [word, *word.split("-")] if "-" in word else [word]


def _stems(texts) -> set[str]:
    return {stem(p) for text in texts for w in tokens(text) for p in _parts(w)}


def is_action(word: str) -> bool:
    if word in NOT_ACTIONS or word in RELATIONS:
        return False
    return (stem(word) in ACTIONS or (word.endswith("ing") and len(word) > 5)
            or (word.endswith("ed") and len(word) > 4 and not word.endswith("eed")))


def number_of(word: str) -> int | None:
    """The count a word states: digits of any script ("3", "３", "③") or a number word."""
    if word.isdecimal():
        return int(word)
    if word.isnumeric():
        try:
            return int(sum(unicodedata.numeric(c) for c in word))
        except ValueError:
            return None
    return NUMBERS.get(word)


@dataclass(frozen=True)
class Evidence:
    """Everything a caption may draw on."""

    tags: tuple[str, ...] = ()
    summaries: tuple[tuple[str, str], ...] = ()       # (tag, summary)
    definitions: tuple[tuple[str, str], ...] = ()     # (tag, wiki definition)
    vision: str = ""
    trigger: tuple[str, ...] = ()
    templates: tuple[str, ...] = ()                   # the stage's literal template text
    vision_backend: str = ""     # the interrogate record's backend: a VLM's answer grounds all

    @property
    def vision_only(self) -> bool:
        return not self.tags

    @property
    def vision_is_vlm(self) -> bool:
        return self.vision_backend in VLM_BACKENDS

    def content(self) -> tuple[str, ...]:
        """The tags that can ground a claim: not post bookkeeping, and an emoticon only when
        a person or an animal is tagged (a smiling cup is made up)."""
        alive = has_living_subject(t for t in self.tags if tag_info(t).role != "emoticon") or any(
            tag_info(t).head in ANIMALS or tag_info(t).head in PERSONS for t in self.tags)
        return tuple(t for t in self.tags if t not in META_TAGS
                     and (alive or tag_info(t).role != "emoticon"))

    def subject(self) -> tuple[str, set[str]]:
        """The subject in words and the terms that name it; ("", set()) when unknown."""
        tags = list(self.content())
        info = main_subject(tags)
        if info is None:
            phrase = vision_subject(self.vision) if self.vision_only else ""
            phrase = re.split(r"\s+(?:without|with no|no|not)\s+", phrase, maxsplit=1)[0]
            words = [w for w in tokens(phrase) if w not in ("a", "an", "the")]
            if not words:
                return phrase, set()
            # the whole phrase or its head noun ("tiger cat" or "cat"), never a modifier alone
            return phrase, {" ".join(words), tag_info(" ".join(words)).head}
        definitions = dict(self.definitions)
        definition = definitions.get(info.tag, "")
        terms = subject_terms(info, wiki_synonyms(definition) + SYNONYMS.get(info.tag, ()),
                              head_names_it=head_names(info, tags, definition))
        terms |= {k.words for k in kinds_of(info, tags, definitions)}
        if info.head in VESSELS:
            for drink in (t for t in tags if tag_info(t).head in DRINKS):
                terms |= {drink, *SYNONYMS.get(drink, ())}
        if info.role == "count":
            return count_phrase(info, is_photo(tags)), terms
        return info.words, terms

    def grounded_summaries(self) -> list[str]:
        """Each tag summary's words that its wiki definition or its tag contains. The summary
        check tolerates a word from nowhere (one in five; for a tag without wiki, words from
        the model alone): such a word is evidence for nothing in a caption."""
        definitions = dict(self.definitions)
        out = []
        for tag, summary in self.summaries:
            known = stems(tokens(definitions.get(tag, "")) + tokens(tag))
            out.append(" ".join(w for w in tokens(summary) if stem(w) in known))
        return out

    def vision_text(self) -> str:
        """What the vision answer affirms: without its guesses (a classifier's) and without
        what it says is absent ("no people", "without wheels" ground nothing)."""
        text = self.vision if self.vision_only or self.vision_is_vlm else confident_vision(self.vision)
        return affirmed(text)

    def sources(self) -> list[str]:
        """Texts that ground any claim: tags, their phrases, equivalents, trigger words, the
        subject's names and a vision-language model's answer."""
        tags = list(self.content())
        equivalents = [e for t in tags for e in EQUIVALENT.get(tag_info(t).words, ())]
        return [", ".join(tags), *equivalents, ", ".join(self.trigger), *tag_phrases(tags),
                *self.subject()[1], self.vision_text() if self.vision_is_vlm else ""]

    def noun_sources(self) -> list[str]:
        """Texts that ground nouns only: the definitions and grounded summaries of content
        tags (a framing or medium tag's wiki is about cameras and lenses, not this
        picture's things), synonyms and a classifier's labels."""
        tags = {i.tag for i in content_tags(list(self.content()))}
        summaries = [s for (t, _), s in zip(self.summaries, self.grounded_summaries(), strict=True)
                     if t in tags]
        return [*(d for t, d in self.definitions if t in tags), *summaries,
                *(s for t in tags for s in SYNONYMS.get(t, ())),
                *(s for _, d in self.definitions for s in wiki_synonyms(d)),
                "" if self.vision_is_vlm else self.vision_text()]


@dataclass
class Verdict:
    caption: str
    passed: bool
    score: float
    subject: str                       # the subject the caption had to name
    coverage: float                    # weighted share of salient tags the caption mentions
    ungrounded: list[str] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    doubted: list[str] = field(default_factory=list)   # the words or phrases objected to

    def as_dict(self) -> dict:
        return {"caption": self.caption, "passed": self.passed, "score": round(self.score, 3),
                "reasons": self.reasons, "doubted": self.doubted, "subject": self.subject,
                "coverage": round(self.coverage, 3), "ungrounded": self.ungrounded}


def template_runs(texts: tuple[str, ...], n: int = RUN_WORDS) -> set[tuple[str, ...]]:
    found: set[tuple[str, ...]] = set()
    for text in texts:
        found |= runs(text, n)
    return found


def jargon(caption: str, tags: tuple[str, ...]) -> str:
    """A booru tag copied in its tag form ("no humans", "photo (medium)", "animal focus"):
    tag-speak about the picture rather than a description of it."""
    text = " " + " ".join(tokens(caption)) + " "
    for tag in tags:
        info = tag_info(tag)
        tagspeak = info.tag != info.words or info.words in JARGON or info.words.endswith(" focus")
        if info.role in ("framing", "medium") and tagspeak and f" {' '.join(tokens(tag))} " in text:
            return tag
    return ""


def copied_summary(caption: str, evidence: Evidence) -> str:
    """A run of SUMMARY_RUN_WORDS words copied from a tag summary: the caption is explaining
    what a tag means, not describing this picture."""
    words = ngrams(tokens(caption), SUMMARY_RUN_WORDS)
    for tag, summary in evidence.summaries:
        if words & ngrams(tokens(summary), SUMMARY_RUN_WORDS):
            return tag
    return ""


def copied_run(caption: str, evidence: Evidence) -> str:
    """A run of RUN_WORDS words the caption shares with the templates but not the evidence,
    holding a word the evidence does not contain (a run of everyday words the tags also
    use, "on a harbour wall in", is no copy)."""
    found = template_runs(evidence.templates)
    if not found:
        return ""
    allowed = template_runs(tuple(evidence.sources() + evidence.noun_sources()))
    known = _stems(evidence.sources() + evidence.noun_sources())
    for run in sorted(ngrams(tokens(caption), RUN_WORDS)):
        if run in found and run not in allowed and any(
                stem(w) not in known for w in run if w not in STOP):
            return " ".join(run)
    return ""


@dataclass
class _Findings:
    reasons: list[str] = field(default_factory=list)
    doubted: list[str] = field(default_factory=list)

    def add(self, reason: str, words) -> None:
        self.reasons.append(reason)
        self.doubted += [w for w in words if w not in self.doubted]


def _marked(caption: str) -> list[str]:
    """Lower-case words and the punctuation between them, in order."""
    return [w.lower().replace("’", "'") for w in _TOKEN.findall(caption)]


def _negated(marked: list[str]) -> set[int]:
    """Positions of the words a negator governs ("no cup", "without a helmet", "not a single
    cup"): up to the next punctuation, conjunction or preposition, four words at most."""
    out: set[int] = set()
    for i, word in enumerate(marked):
        contrast = word == "than" and marked[i - 1:i] == ["rather"]      # "rather than a table"
        if word not in NEGATORS and not contrast:
            continue
        for j in range(i + 1, min(i + 5, len(marked))):
            w = marked[j]
            # a preposition right after the negator is the negated phrase ("not on a table")
            if not w[0].isalnum() or w in ("and", "but") or (
                    j > i + 1 and w in ("with", "on", "in", "at", "by", "under")):
                break
            out.add(j)
    return out


def _grounding(evidence: Evidence, marked: list[str], negated: set[int], found: _Findings,
               ) -> list[str]:
    """Every content word must be grounded: colours, counts and actions by the tags,
    trigger words or a VLM's answer; other words by those or by definitions, synonyms and
    a classifier's labels. Negated words and words about people are judged elsewhere."""
    full, nouns = _stems(evidence.sources()), _stems(evidence.noun_sources())
    template = _stems(evidence.templates)
    tags = evidence.content()
    no_humans = "no humans" in tags
    ungrounded, made_up, actions, leaked = [], [], [], []
    for i, word in enumerate(marked):
        if not word[0].isalnum() or word in STOP or word in META or word in RELATIONS \
                or number_of(word) is not None or (len(word) < 2 and word.isascii()):
            continue
        if i in negated or (no_humans and word in PERSONS):
            continue
        parts = _parts(word)
        if stem(word) in full or all(stem(p) in full or p in STOP for p in parts[1:] or [word]):
            continue
        strict = (word in COLOURS or word in DETAILS or is_action(word)
                  or any(p in COLOURS for p in parts))
        if not strict and (stem(word) in nouns or
                           all(stem(p) in nouns or stem(p) in full or p in STOP
                               for p in parts[1:] or [word])):
            continue
        if word in ungrounded:
            continue
        ungrounded.append(word)
        if word in COLOURS or any(p in COLOURS for p in parts):
            made_up.append(word)
        elif is_action(word):
            actions.append(word)
        if stem(word) in template:
            leaked.append(word)
    if leaked:
        found.add("uses words of the template's example or instructions: " + ", ".join(leaked),
                  leaked)
    if made_up:
        found.add("colour or count not in the evidence: " + ", ".join(made_up), made_up)
    if actions:
        found.add("action not in the evidence: " + ", ".join(actions), actions)
    rest = [w for w in ungrounded if w not in made_up and w not in actions]
    if rest:
        found.add("not in the evidence: " + ", ".join(rest), rest)
    return ungrounded


def _counts(evidence: Evidence, marked: list[str], found: _Findings,
            negated: set[int] | None = None) -> None:
    """A number (a digit, "one", "pair") must be one the tags or a VLM's answer state; a
    plural person word contradicts a count of one, and so do more people than the count
    tags add up to ("a woman and a girl" on `1girl`)."""
    tags = evidence.content()
    allowed: set[int] = set()
    singles = set()
    for t in tags:
        info = tag_info(t)
        if info.role == "count":
            number = re.match(r"\d+", info.words)
            if number:
                allowed.add(int(number.group()))
                if number.group() == "1":
                    singles.add(info.head)
            else:
                allowed |= {2, 3}
    for source in evidence.sources():
        allowed |= {n for w in tokens(source) if (n := number_of(w)) is not None}
    allowed.discard(None)
    wrong = [w for i, w in enumerate(marked) if (n := number_of(w)) is not None
             and n not in allowed and not _one_item(marked, i)]
    if wrong:
        counted = [t for t in tags if tag_info(t).role == "count"]
        found.add(f"count contradicts {', '.join(counted)}: " + ", ".join(wrong) if counted else
                  "count not in the evidence: " + ", ".join(wrong), wrong)
    unnamed = [w for i, w in enumerate(marked) if w in UNNAMED
               and (i + 1 == len(marked) or not marked[i + 1][0].isalnum() or marked[i + 1] in STOP)]
    if unnamed:
        found.add("counts things it does not name: " + ", ".join(unnamed), unnamed)
    counts = [tag_info(t) for t in tags if tag_info(t).role == "count"]
    exact = [re.fullmatch(r"(\d+)\D*", c.words) for c in counts]
    if counts and all(exact):
        total = sum(int(m.group(1)) for m in exact)
        people = _people_named(marked, negated or set(),
                               PERSONS | {c.head for c in counts} | set().union(*_PLURALS.values()))
        if len(people) > total:
            found.add(f"names {len(people)} people where the tags count {total} "
                      f"({', '.join(c.tag for c in counts)})", people)
    if len(counts) == 1 and singles:
        plural = [w for w in marked if w in _PLURALS.get(counts[0].head, set())]
        if plural:
            found.add(f"names several where the tags say '{counts[0].tag}'", plural)


_BACK = frozenset("the her his its their this that these those same".split())


def _people_named(marked: list[str], negated: set[int], persons: set[str]) -> list[str]:
    """Each person a caption introduces ("a woman and a girl": two; "the girl" refers back
    to one already named; a plural person word counts as two)."""
    found = []
    for i, w in enumerate(marked):
        if w not in persons or i in negated or marked[i + 1:i + 2] and marked[i + 1] in persons:
            continue                  # "a woman astronaut": one person, named twice
        before = [b for b in marked[max(0, i - 3):i] if b[0].isalnum()]
        if before and before[-1] in _BACK or (len(before) > 1 and before[-2] in _BACK
                                               and before[-1] not in ("and", "or")):
            continue
        plural = any(w in p for p in _PLURALS.values()) or (w.endswith("s") and w[:-1] in persons)
        found += [w, w] if plural else [w]
    return found


def _one_item(marked: list[str], i: int) -> bool:
    """"a pair of boots", "a pair of black gloves": one worn thing, not a count."""
    if marked[i] != "pair" or marked[i + 1:i + 2] != ["of"]:
        return False
    return any(tag_info(w).role == "wear" for w in marked[i + 2:i + 5] if w[0].isalnum())


def _negations(evidence: Evidence, marked: list[str], negated: set[int], found: _Findings) -> None:
    """"no cup" for a tagged cup, and people where `no_humans` says there are none."""
    tags = evidence.content()
    full = _stems(list(tags)) | _stems(evidence.subject()[1])
    no_humans = "no humans" in tags
    # what the tags themselves say is absent (`no_shoes`, `no_hat`): saying so is true
    absent = _stems(t.split(" ", 1)[1] for t in tags if t.startswith(("no ", "without ")))
    against = [marked[i] for i in sorted(negated)
               if marked[i] not in STOP and stem(marked[i]) in full and stem(marked[i]) not in absent
               and not (no_humans and marked[i] in PERSONS)]
    if against:
        found.add("negates a tag: " + ", ".join(against), [f"no {w}" for w in against])
    present = _stems(t for t in tags if not t.startswith(("no ", "without ")))
    denied = [w for i, w in enumerate(marked) if i not in negated and w[0].isalnum()
              and w not in STOP and stem(w) in absent - present]
    if denied:
        found.add("contradicts a tag: " + ", ".join(f"no {w}" for w in denied), denied)
    if no_humans:
        people = [w for i, w in enumerate(marked) if w in PERSONS and i not in negated]
        if people:
            found.add("a person where the tags say no_humans: " + ", ".join(people), people)


def _shape(evidence: Evidence, marked: list[str], found: _Findings) -> None:
    """Word salad (content words with nothing joining them), repetition and tautology."""
    words = [w for w in marked if w[0].isalnum()]
    content = [w for w in words if w not in STOP and w not in META]
    joined = set(ngrams([stem(w) for w in tokens(" , ".join(evidence.sources()))], 2))
    run: list[str] = []
    salad: list[str] = []
    for w in marked + ["."]:
        if w[0].isalnum() and w not in STOP:
            run.append(w)
            continue
        unknown = sum((stem(a), stem(b)) not in joined for a, b in zip(run, run[1:], strict=False))
        if len(run) >= 4 and unknown >= 3:
            salad += run
        run = []
    if salad or (len(content) >= 3 and len(content) == len(words)):
        found.add("no sentence shape (a list of words)", salad or content)
    counts: dict[str, int] = {}
    for w in content:
        counts[stem(w)] = counts.get(stem(w), 0) + 1
    tags = evidence.content()
    repeated = [w for w in dict.fromkeys(content) if counts[stem(w)] > max(
        1, sum(stem(w) in _stems([t]) for t in tags))]
    if repeated:
        found.add("repeats itself: " + ", ".join(repeated), repeated)
    sides = _COPULA.split(" ".join(words), maxsplit=1)
    if len(sides) == 2:
        left, right = (stems(content_words(s)) for s in sides)
        if right and right <= left:
            found.add("says nothing (X is X)", [" ".join(words)])


def _salience(evidence: Evidence, text_stems: list[str], subject_named: bool) -> tuple[float, int]:
    """Weighted coverage of the salient tags (the subject counts double; tags for a broader
    kind count for nothing) and how many broader-kind tags the caption names."""
    tags = list(evidence.content())
    wanted = content_tags(tags)
    subject = main_subject(tags)
    total = got = 0.0
    generic = 0
    synonyms = {t: SYNONYMS.get(t, ()) for t in tags}
    for info in wanted:
        named = covered(text_stems, info) or any(mentions(text_stems, s) for s in synonyms[info.tag])
        if info.head in GENERIC and subject is not None and info is not subject:
            generic += named
            continue
        weight = 2.0 if subject is not None and info.tag == subject.tag else 1.0
        if subject is not None and info.tag == subject.tag:
            named = named or subject_named
        total += weight
        got += weight * named
    return (got / total if total else float(subject_named)), generic


def verify(caption: str, evidence: Evidence) -> Verdict:
    """Check one caption against its evidence: pass or fail, why, and the words doubted."""
    subject, terms = evidence.subject()
    words = tokens(caption)
    text_stems = [stem(w) for w in words]
    if not content_words(caption) and not any(number_of(w) is not None for w in words):
        return Verdict(caption, False, 0.0, subject, 0.0, [], ["empty"], [])
    found = _Findings()
    tag_words = {w for t in evidence.tags for w in tokens(t)}
    meta = sorted({w for w in words if w in META and w not in tag_words}
                  | ({"%"} if _PERCENT.search(caption) and not any("%" in t for t in evidence.tags)
                     else set()))
    if meta:
        found.add("talks about the pipeline: " + ", ".join(meta), meta)
    run = copied_run(caption, evidence)
    if run:
        found.add(f"copies template text: '{run}'", [run])
    copied = copied_summary(caption, evidence)
    if copied:
        found.add(f"copies the wiki summary of '{copied}'", [])
    speak = jargon(caption, evidence.tags)
    if speak:
        found.add(f"uses tag jargon: '{speak}'", [speak])
    subject_named = not terms or any(mentions(text_stems, t) for t in terms)
    if not subject_named:
        found.add(f"does not name the subject '{subject}'", [])
    else:
        info = main_subject(list(evidence.content()))
        plurals = plural_terms(info) if info is not None else set()
        if plurals and not plurals & set(words):
            found.add(f"names one where the tags say '{subject}'", [])
    marked = _marked(caption)
    negated = _negated(marked)
    _negations(evidence, marked, negated, found)
    _counts(evidence, marked, found, negated)
    ungrounded = _grounding(evidence, marked, negated, found)
    _shape(evidence, marked, found)
    coverage, generic = _salience(evidence, text_stems, subject_named)
    if content_tags(list(evidence.content())) and coverage < MIN_COVERAGE:
        found.add(f"mentions {coverage:.0%} of the salient tags (at least "
                  f"{MIN_COVERAGE:.0%} needed)", [])
    score = max(0.0, min(1.0, coverage - GENERIC_PENALTY * generic))
    return Verdict(caption, not found.reasons, score, subject, coverage, ungrounded,
                   found.reasons, found.doubted)


def best(verdicts: list[Verdict]) -> Verdict | None:
    """The passing candidate that covers the salient tags best (the earliest on a tie), or
    None. Only a caption with nothing doubted passes, so faithfulness comes first."""
    passing = [v for v in verdicts if v.passed]
    return max(passing, key=lambda v: v.score) if passing else None
