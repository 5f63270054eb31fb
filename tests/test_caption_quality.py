"""The embedded default (SmolLM2 + EfficientNet-Lite0) on the sample folder, for real: every
caption names the subject its first tag states, none repeats template text, an untagged
photo gets the classifier's subject, most captions are the model's (not composed
fallbacks), and the review page shows every image."""

from __future__ import annotations

import json
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest
from conftest import llm_overrides
from fakes import FakeOpenAI

import caption
from stages.language.quality import check_captions, summarise
from stages.templates import load_template


class Ids(HTMLParser):
    def __init__(self):
        super().__init__()
        self.ids: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "div" and "data-id" in a:
            self.ids.append(a["data-id"])


def run_sample_folder(project: Path, *extra: str) -> set[str]:
    """caption.py on the sample folder plus an untagged copy of the coffee photo; the ids."""
    images = project / "images"
    shutil.copy(images / "coffee.jpg", images / "untagged.jpg")       # no tag file
    args = ["--config", str(project / "config.ini"), "--quiet", "--set", "run.progress=false"]
    for item in extra:
        args += ["--set", item]
    assert caption.main(args) == 0
    return {p.stem for p in images.iterdir() if p.suffix != ".txt"}


def assert_faithful(project: Path, names: set[str]) -> dict:
    """The issue's "must show" on a captioned sample folder; returns the figures."""
    templates = tuple(load_template(project / "templates" / name, "interpret").literal()
                      for name in ("interpret.txt", "shorten.txt"))
    checks = {c.id: c for c in check_captions(project / "captions", templates)}
    assert set(checks) == names
    for check in checks.values():
        assert check.subject_named, (check.id, check.subject, check.caption)
        assert not check.copied, (check.id, check.copied)
        assert check.coverage >= 0.25, (check.id, check.caption)
    # the classifier says "most likely an espresso" for the coffee photo
    assert "espresso" in checks["untagged"].caption.lower()
    figures = summarise(list(checks.values()))
    assert figures["subject_named_rate"] == 1.0 and figures["template_copies"] == 0
    # A composed fallback names its subject and copies nothing by construction: the checks
    # above say something about the model only when most captions are the model's own.
    assert figures["model_kept"] + figures["fallbacks"] == len(names)
    assert figures["model_kept"] > len(names) / 2, f"model_kept {figures['model_kept']} of {len(names)}"
    parser = Ids()
    parser.feed((project / "captions" / "index.html").read_text())
    assert sorted(parser.ids) == sorted(names)
    return figures


@pytest.mark.slow
def test_embedded_default_on_the_sample_folder(project):
    names = run_sample_folder(project)
    assert_faithful(project, names)
    # provenance: the verdict of every candidate, the flags and the score
    meta = json.loads((project / "captions" / "rocket.json").read_text())
    # candidates are asked for one at a time until one passes (at most interpret.candidates)
    assert 1 <= len(meta["candidates"]) <= 3 and isinstance(meta["flags"], list)
    assert all(not c["passed"] for c in meta["candidates"][:-1])
    assert 0 <= meta["score"] <= 1 and "reasons" in meta
    store = json.loads((project / "cache" / "tags.json").read_text())["tags"]
    assert store["no humans"]["summary"] == "No people appear anywhere in the picture."
    assert store["no humans"]["made_by"] == "definition"


def test_the_quality_check_fails_when_every_caption_is_a_fallback(project):
    """The check above cannot pass on fallbacks alone: a server whose every candidate the
    verifier rejects gives faithful-looking composed captions, and the check still fails."""
    with FakeOpenAI(lambda request: "A lighthouse keeper holds a lantern.") as server:
        names = run_sample_folder(project, *llm_overrides(server.url))
    figures = summarise(check_captions(project / "captions", ()))
    assert figures["fallbacks"] == len(names) and figures["model_kept"] == 0
    with pytest.raises(AssertionError, match="model_kept"):
        assert_faithful(project, names)


def test_unreadable_provenance_is_an_error_not_left_out(tmp_path):
    (tmp_path / "a.json").write_text('{"caption": "A cat.", "tags": ["cat"]}')
    (tmp_path / "b.json").write_text('{"caption": "A do')
    with pytest.raises(ValueError, match="b.json"):
        check_captions(tmp_path, ())
