"""Caption-quality figures for a captioned folder, read from each caption's NAME.json.

For every caption written by the interpret stage: does it name the subject its first
content tag states (or, untagged, what the vision answer names), what share of the content
tags does it mention, was it a composed fallback or a model caption the verifier kept, and
does it copy five words of the stage's templates. Used by benchmarks/run.py (a figure to
compare changes by) and by the end-to-end test of the embedded default.

A fallback names its subject and copies no template by construction, so the subject and
copy figures say little without the fallback count beside them: `summarise` reports both
`fallbacks` and `model_kept`. An unreadable NAME.json is an error, never left out of the
figures.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..store import read_json
from .tagroles import mentions
from .verify import Evidence, copied_run, verify
from .words import stem, tokens


@dataclass(frozen=True)
class CaptionCheck:
    id: str
    caption: str
    subject: str
    subject_named: bool
    coverage: float
    fallback: bool
    copied: str                 # a five-word run copied from the templates, or ""


def check_captions(captions: Path, templates: tuple[str, ...]) -> list[CaptionCheck]:
    """One check per NAME.json under `captions` (sorted by id)."""
    out = []
    for meta_path in sorted(captions.rglob("*.json")):
        try:
            meta = read_json(meta_path)
        except ValueError as exc:
            raise ValueError(f"{meta_path}: unreadable caption provenance ({exc})") from None
        if not isinstance(meta, dict) or "caption" not in meta:
            continue
        evidence = Evidence(tags=tuple(meta.get("tags", [])),
                            summaries=tuple(meta.get("summaries", {}).items()),
                            definitions=tuple(meta.get("definitions", {}).items()),
                            vision=meta.get("vision", ""),
                            vision_backend=meta.get("vision_backend", ""),
                            trigger=tuple(meta.get("trigger_words", [])), templates=templates)
        caption = meta["caption"]
        subject, terms = evidence.subject()
        text_stems = [stem(w) for w in tokens(caption)]
        verdict = verify(caption, evidence)
        out.append(CaptionCheck(
            id=str(meta.get("id", meta_path.stem)), caption=caption, subject=subject,
            subject_named=bool(terms) and any(mentions(text_stems, t) for t in terms),
            coverage=verdict.coverage, fallback="fallback" in meta.get("flags", []),
            copied=copied_run(caption, evidence)))
    return out


def summarise(checks: list[CaptionCheck]) -> dict:
    n = len(checks)
    return {"captions": n,
            "subject_named_rate": round(sum(c.subject_named for c in checks) / n, 3) if n else 0.0,
            "mean_tag_coverage": round(sum(c.coverage for c in checks) / n, 3) if n else 0.0,
            "fallbacks": sum(c.fallback for c in checks),
            "model_kept": sum(not c.fallback for c in checks),
            "template_copies": sum(bool(c.copied) for c in checks)}
