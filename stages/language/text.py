"""Caption text helpers shared by every stage that takes text from a model.

Small models wrap answers in quotes, prefix them with "Caption:", and repeat themselves;
these functions turn such an answer into one clean line, and put trigger words first.
"""

from __future__ import annotations

import re

_SENTENCE = re.compile(r"(?<=[.!?;])\s+")
_PREFIX = re.compile(r"^\s*(?:final\s+)?(?:caption|description)\s*:\s*", re.IGNORECASE)


def drop_repeats(text: str) -> str:
    """Remove sentences and clauses that repeat an earlier one (a small-model failure)."""
    seen: set[str] = set()
    sentences = []
    for sentence in _SENTENCE.split(text):
        clauses = []
        for clause in sentence.split(", "):
            norm = re.sub(r"\W+", " ", clause.lower()).strip()
            if norm and norm in seen:
                continue
            seen.add(norm)
            clauses.append(clause)
        if clauses:
            sentences.append(", ".join(clauses))
    return " ".join(sentences)


def tidy_caption(text: str) -> str:
    """One line of caption text: no 'Caption:' prefix, no wrapping quotes, no repeats."""
    text = text.strip().split("\n\n")[0]
    text = _PREFIX.sub("", text)
    text = " ".join(text.split())
    if len(text) > 1 and text[0] == text[-1] and text[0] in "\"'`":
        text = text[1:-1].strip()
    return drop_repeats(text)


_A_BEFORE_VOWEL = re.compile(r"\b([Aa]) (?=[aeioAEIO]|u(?!ni|s[aeiu]|r[aeiou]|t[aeiou]|k)|hour|honest)")


def fix_articles(text: str) -> str:
    """"a espresso" -> "an espresso" (small models get this wrong; "a unicorn" stays)."""
    return _A_BEFORE_VOWEL.sub(lambda m: m.group(1) + "n ", text)


def with_trigger(caption: str, trigger: tuple[str, ...]) -> str:
    """Trigger words first, each once."""
    words = [t for t in trigger if t]
    if not words:
        return caption
    rest = caption
    for word in words:
        if rest.lower().startswith(word.lower()):
            rest = rest[len(word):].lstrip(" ,")
    return ", ".join(words) + (", " + rest if rest else "")
