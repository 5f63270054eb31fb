"""How a tag's one-sentence summary is made from its wiki definition, and when a model's
summary may be trusted.

A definition that is already one short sentence is the summary (no model call). A model
summary is kept only when it is grounded in the definition: its content words come from
the definition or the tag name, it says nothing about the pipeline and copies nothing from
the summary template's instructions or examples. Otherwise the definition's first sentence
replaces it. The way each summary was made is recorded in the tag store (`made_by`).
"""

from __future__ import annotations

from .language.words import META, content_words, first_sentence, ngrams, runs, sentences, tokens, unsupported

SHORT_SENTENCE_WORDS = 30
TEMPLATE_RUN = 5

# made_by values, as the tag store records them
FROM_DEFINITION = "definition"          # the definition was one short sentence: used as it is
FROM_MODEL = "model"                    # a model summary that passed the grounding check
FROM_FIRST_SENTENCE = "first_sentence"  # the model summary failed; the definition's first sentence
FROM_TAG_NAME = "tag_name"              # no wiki: a model summary grounded in the tag's words
REJECTED = "rejected"                   # no wiki and the model summary was not grounded: none


def short_definition(definition: str) -> str:
    """The definition itself when it is one sentence of at most SHORT_SENTENCE_WORDS words."""
    found = sentences(definition)
    if len(found) == 1 and len(found[0].split()) <= SHORT_SENTENCE_WORDS:
        return found[0]
    return ""


def grounding_problems(summary: str, source: str, tag: str, template_text: str = "") -> list[str]:
    """Why `summary` is not grounded in `source` (the definition, or "" without a wiki)."""
    problems = []
    words = content_words(summary)
    if not words:
        return ["empty"]
    meta = sorted({w for w in tokens(summary) if w in META} - set(tokens(tag)))
    if meta:
        problems.append("talks about the pipeline: " + ", ".join(meta))
    extra = list(dict.fromkeys(unsupported(summary, [source, tag])))
    if len(extra) > max(1, len(words) // 5):
        problems.append("not in the wiki text: " + ", ".join(extra))
    copied = (ngrams(tokens(summary), TEMPLATE_RUN) & runs(template_text, TEMPLATE_RUN)) \
        - ngrams(tokens(source), TEMPLATE_RUN)
    if copied:
        problems.append("copies the template: '" + " ".join(sorted(copied)[0]) + "'")
    return problems


def choose_summary(model_text: str, definition: str, tag: str,
                   template_text: str = "") -> tuple[str | None, str, list[str]]:
    """(summary, summary_from, problems) for a model's answer about one tag."""
    answer = first_sentence(model_text)
    problems = grounding_problems(answer, definition, tag, template_text)
    if not problems:
        return answer, (FROM_MODEL if definition else FROM_TAG_NAME), []
    if definition:
        return first_sentence(definition), FROM_FIRST_SENTENCE, problems
    return None, REJECTED, problems
