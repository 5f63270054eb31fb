"""Words that carry content, and whether a text says more than its sources.

Shared by the tag summariser (is a summary grounded in the wiki text?) and the caption
verifier (is a caption grounded in the tags, summaries and vision answer?). Deliberately
simple and model-agnostic: lower-cased word tokens, a small stop list and a suffix
stripper, so the same check applies to any model's output and can be read in one sitting.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

_WORD = re.compile(r"[^\W_]+(?:['’-][^\W_]+)*")
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+(?=[\"'(\[]?[A-Z0-9])")
_ABBREVIATIONS = ("e.g.", "i.e.", "etc.", "vs.", "cf.", "approx.", "mr.", "mrs.", "ms.", "dr.",
                  "st.", "no.", "vol.", "ca.", "jr.", "sr.", "fig.")

# Words that say nothing about what a picture shows: grammar, and the few verbs and nouns
# every caption uses to point at things ("shows", "photo", "visible").
STOP = frozenset("""
a about above across after against all along also an and another any are around as at away
be because been before behind being below beneath beside besides between both but by can
could did do does doing down during each either else every few for from further had has have
having here her hers herself him himself his how however i if in inside into is it its itself
just least less like many may me might more most much must my myself near neither next no nor
not now of off often on once one only onto or other others our out outside over own per
rather same several she should so some such than that the their theirs them themselves then
there these they this those though through throughout thus to together too toward towards
under underneath until up upon us usually very via was we were what when where whether which
while who whom whose why will with within without would yet you your yours
depict depicts depicted depicting feature features featured featuring show shows shown
showing appear appears appearing visible seen see sees captured taken picture pictures photo
photos photograph photographs image images view scene
""".split())

# Words that belong to the pipeline, not to the picture: a caption that uses them is talking
# about its instructions. Hedges are here too: training captions state, they do not guess.
META = frozenset("""
tag tags tagged tagging classifier classifiers classified percent percentage prompt prompts
caption captions captioned wiki instruction instructions label labels labelled confidence
probability guess guessed guesses likely possibly perhaps probably maybe summary summaries
""".split())


def tokens(text: str) -> list[str]:
    """Word tokens in order, lower case (hyphenated words and contractions stay whole)."""
    return [w.lower().replace("’", "'") for w in _WORD.findall(text)]


def stem(word: str) -> str:
    """A crude stem, applied alike to both sides of every comparison ("cats" ~ "cat",
    "smiling" ~ "smile", "leaves" ~ "leaf"). Collisions only make a check more lenient."""
    w = word.lower()
    if w.endswith("'s"):
        w = w[:-2]
    if len(w) <= 3:
        return w
    for suffix, repl in (("ies", "y"), ("ves", "f"), ("sses", "ss"), ("ches", "ch"),
                         ("shes", "sh"), ("xes", "x")):
        if w.endswith(suffix) and len(w) > len(suffix) + 2:
            return w[: -len(suffix)] + repl
    if w.endswith("ing") and len(w) > 5:
        w = w[:-3]
        if len(w) > 2 and w[-1] == w[-2] and w[-1] not in "ls":
            w = w[:-1]                                  # running -> run
    elif w.endswith("ed") and len(w) > 4 and not w.endswith("eed"):
        w = w[:-2]
    elif w.endswith("s") and not w.endswith(("ss", "us", "is")):
        w = w[:-1]
    return w.rstrip("e") or w


def content_words(text: str) -> list[str]:
    """The text's words that make a claim about the picture (not stop or meta words)."""
    return [w for w in tokens(text) if w not in STOP and w not in META and not w.isdigit()
            and len(w) > 1]


def stems(words: Iterable[str]) -> set[str]:
    return {stem(w) for w in words}


def unsupported(text: str, sources: Iterable[str]) -> list[str]:
    """Content words of `text` that none of `sources` contains (compared by stem)."""
    known: set[str] = set()
    for source in sources:
        known |= stems(tokens(source))
    return [w for w in content_words(text) if stem(w) not in known]


def ngrams(words: list[str], n: int) -> set[tuple[str, ...]]:
    return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}


# Where a template's literal text had a placeholder or a message boundary: runs of words
# stop there (templates.PromptTemplate.literal).
BREAK = "\u2029"


def runs(text: str, n: int) -> set[tuple[str, ...]]:
    """The text's runs of n words, none spanning a BREAK."""
    out: set[tuple[str, ...]] = set()
    for part in text.split(BREAK):
        out |= ngrams(tokens(part), n)
    return out


def sentences(text: str) -> list[str]:
    """Split prose into sentences (abbreviations such as "e.g." do not end one)."""
    protected = text
    for abbr in _ABBREVIATIONS:
        protected = re.sub(re.escape(abbr), abbr.replace(".", "\x00"), protected, flags=re.I)
    parts = _SENTENCE_END.split(protected.strip())
    return [p.replace("\x00", ".").strip() for p in parts if p.strip()]


def first_sentence(text: str) -> str:
    found = sentences(text)
    return found[0] if found else ""
