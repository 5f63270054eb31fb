"""The caption verifier: does a candidate caption say what its evidence says, and only that?

Model-agnostic: it reads the caption and the evidence it was made from (tags, tag
summaries, the vision answer, trigger words, the stage's templates), never the model. A
candidate fails when it
  - does not name the main subject (the first content tag, a tag the wiki says is a kind
    of it, or a synonym the wiki gives; its head noun alone only when that is a tag too or
    the wiki says the subject is one; without tags, what the vision answer names),
  - copies a run of RUN_WORDS words from the templates (instructions or few-shot examples)
    that the evidence does not also contain,
  - uses a content word that only the templates contain (a word of a few-shot example),
  - uses pipeline words (tag, classifier, percent or a % sign, prompt, ...) or hedges
    (likely, perhaps),
  - or makes too many claims grounded in nothing given.
Passing candidates are scored by how many content tags they cover, less a penalty for each
ungrounded word; the stage keeps the best one, or composes a fallback when none passes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .compose import tag_phrases, vision_subject
from .tagroles import (
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
from .words import META, STOP, content_words, ngrams, runs, stem, stems, tokens, unsupported

RUN_WORDS = 5                     # a copied run this long is template text, not a caption
SUMMARY_RUN_WORDS = 8             # a run this long copied from a tag summary defines the tag
MIN_COVERAGE = 0.25               # a caption must mention at least this share of content tags
UNGROUNDED_PENALTY = 0.1          # score lost per content word grounded in nothing
UNGROUNDED_PER_WORD = 5           # one ungrounded word tolerated per this many content words
# Words that only relate things the evidence names ("a woman wearing a helmet").
RELATIONS = frozenset("""wearing wears worn dressed made covered filled surrounded including
includes containing contains placed set front top bottom left right middle centre center side
background foreground edge corner""".split())
# Claims a caption must never make up: a wrong colour or count is a wrong caption.
COLOURS = frozenset("""red orange yellow green blue purple violet pink brown black white grey gray
silver gold golden beige cyan magenta teal turquoise maroon navy blonde blond""".split())
NUMBERS = frozenset("two three four five six seven eight nine ten dozen pair couple".split())
# A clause that starts with one of these is a guess, not evidence.
_HEDGED = re.compile(r"(?:^|(?<=[,;.]))\s*(?:\w+\s+)?(?:perhaps|possibly|maybe|might|may be|could be|"
                     r"or)\b[^,;.]*", re.IGNORECASE)
# A confidence in figures ("95%", "per cent"): tokens() drops the sign, META has the words.
_PERCENT = re.compile(r"%|\bper\s+cent\b", re.IGNORECASE)
# Framing tags that read as tag-speak when copied into a caption as they are.
JARGON = frozenset(("no humans", "solo", "solo focus", "animal focus", "food focus", "male focus",
                    "text focus", "still life", "simple background", "cowboy shot"))
_SYNONYM = re.compile(r"\b(?:also (?:known as|called|spelled)|short for|abbreviated (?:as|to)|"
                      r"a\.k\.a\.?|aka|sometimes called|often called|commonly called)\s+"
                      r"([^.;:()]+)", re.IGNORECASE)


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


@dataclass(frozen=True)
class Evidence:
    """Everything a caption may draw on."""

    tags: tuple[str, ...] = ()
    summaries: tuple[tuple[str, str], ...] = ()       # (tag, summary)
    definitions: tuple[tuple[str, str], ...] = ()     # (tag, wiki definition)
    vision: str = ""
    trigger: tuple[str, ...] = ()
    templates: tuple[str, ...] = ()                   # the stage's literal template text

    @property
    def vision_only(self) -> bool:
        return not self.tags

    def subject(self) -> tuple[str, set[str]]:
        """The subject in words and the terms that name it; ("", set()) when unknown."""
        info = main_subject(list(self.tags))
        if info is None:
            phrase = vision_subject(self.vision) if self.vision_only else ""
            words = [w for w in tokens(phrase) if w not in ("a", "an", "the")]
            if not words:
                return phrase, set()
            # the whole phrase or its head noun ("tiger cat" or "cat"), never a modifier alone
            return phrase, {" ".join(words), tag_info(" ".join(words)).head}
        definitions = dict(self.definitions)
        definition = definitions.get(info.tag, "")
        terms = subject_terms(info, wiki_synonyms(definition),
                              head_names_it=head_names(info, list(self.tags), definition))
        terms |= {k.words for k in kinds_of(info, list(self.tags), definitions)}
        if info.role == "count":
            return count_phrase(info, is_photo(list(self.tags))), terms
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

    def sources(self) -> list[str]:
        vision = self.vision if self.vision_only else confident_vision(self.vision)
        return [", ".join(self.tags), *self.grounded_summaries(), vision,
                ", ".join(self.trigger), *tag_phrases(list(self.tags)), *self.subject()[1]]


@dataclass
class Verdict:
    caption: str
    passed: bool
    score: float
    subject: str                       # the subject the caption had to name
    coverage: float                    # share of content tags the caption mentions
    ungrounded: list[str] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"caption": self.caption, "passed": self.passed, "score": round(self.score, 3),
                "subject": self.subject, "coverage": round(self.coverage, 3),
                "ungrounded": self.ungrounded, "reasons": self.reasons}


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
    """A run of RUN_WORDS words the caption shares with the templates but not the evidence."""
    runs = template_runs(evidence.templates)
    if not runs:
        return ""
    allowed = template_runs(tuple(evidence.sources()))
    for run in sorted(ngrams(tokens(caption), RUN_WORDS)):
        if run in runs and run not in allowed:
            return " ".join(run)
    return ""


def verify(caption: str, evidence: Evidence) -> Verdict:
    """Check one caption against its evidence."""
    subject, terms = evidence.subject()
    words = tokens(caption)
    text_stems = [stem(w) for w in words]
    content = content_words(caption)
    reasons: list[str] = []
    if not content:
        return Verdict(caption, False, 0.0, subject, 0.0, [], ["empty"])
    tag_words = {w for t in evidence.tags for w in tokens(t)}
    meta = sorted({w for w in words if w in META and w not in tag_words}
                  | ({"%"} if _PERCENT.search(caption) and not any("%" in t for t in evidence.tags)
                     else set()))
    if meta:
        reasons.append("talks about the pipeline: " + ", ".join(meta))
    run = copied_run(caption, evidence)
    if run:
        reasons.append(f"copies template text: '{run}'")
    copied = copied_summary(caption, evidence)
    if copied:
        reasons.append(f"copies the wiki summary of '{copied}'")
    speak = jargon(caption, evidence.tags)
    if speak:
        reasons.append(f"uses tag jargon: '{speak}'")
    if terms and not any(mentions(text_stems, t) for t in terms):
        reasons.append(f"does not name the subject '{subject}'")
    else:
        info = main_subject(list(evidence.tags))
        plurals = plural_terms(info) if info is not None else set()
        if plurals and not plurals & set(words):
            reasons.append(f"names one where the tags say '{subject}'")
    ungrounded = [w for w in dict.fromkeys(unsupported(caption, evidence.sources()))
                  if w not in RELATIONS and w not in STOP]
    made_up = [w for w in ungrounded if w in COLOURS or w in NUMBERS]
    template_stems = {stem(w) for text in evidence.templates for w in tokens(text)}
    leaked = [w for w in ungrounded if stem(w) in template_stems]
    if leaked:
        reasons.append("uses words of the template's example or instructions: " + ", ".join(leaked))
    if made_up:
        reasons.append("colour or count not in the evidence: " + ", ".join(made_up))
    elif len(ungrounded) > len(content) // UNGROUNDED_PER_WORD:
        reasons.append("not in the evidence: " + ", ".join(ungrounded))
    wanted = content_tags(list(evidence.tags))
    if wanted:
        coverage = sum(covered(text_stems, i) for i in wanted) / len(wanted)
        if coverage < MIN_COVERAGE:
            reasons.append(f"mentions {coverage:.0%} of the content tags (at least "
                           f"{MIN_COVERAGE:.0%} needed)")
    else:
        coverage = 1.0 if not terms or any(mentions(text_stems, t) for t in terms) else 0.0
    score = max(0.0, coverage - UNGROUNDED_PENALTY * len(ungrounded))
    return Verdict(caption, not reasons, score, subject, coverage, ungrounded, reasons)


def best(verdicts: list[Verdict]) -> Verdict | None:
    """The passing candidate with the highest score (the earliest on a tie), or None."""
    passing = [v for v in verdicts if v.passed]
    return max(passing, key=lambda v: v.score) if passing else None
