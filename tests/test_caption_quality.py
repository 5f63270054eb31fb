"""The embedded default (SmolLM2 + EfficientNet-Lite0) on the sample folder, for real: every
caption names the subject its first tag states, none repeats template text, an untagged
photo gets the classifier's subject, and the review page shows every image."""

from __future__ import annotations

import json
import shutil
from html.parser import HTMLParser

import pytest

import caption
from stages.quality import check_captions, summarise
from stages.templates import load_template


class Ids(HTMLParser):
    def __init__(self):
        super().__init__()
        self.ids: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "div" and "data-id" in a:
            self.ids.append(a["data-id"])


@pytest.mark.slow
def test_embedded_default_on_the_sample_folder(project):
    images = project / "images"
    shutil.copy(images / "coffee.jpg", images / "untagged.jpg")       # no tag file
    args = ["--config", str(project / "config.ini"), "--quiet", "--set", "run.progress=false"]
    assert caption.main(args) == 0
    templates = tuple(load_template(project / "templates" / name, "interpret").literal()
                      for name in ("interpret.txt", "shorten.txt"))
    checks = {c.id: c for c in check_captions(project / "captions", templates)}
    names = {p.stem for p in images.iterdir() if p.suffix != ".txt"}
    assert set(checks) == names
    for check in checks.values():
        assert check.subject_named, (check.id, check.subject, check.caption)
        assert not check.copied, (check.id, check.copied)
        assert check.coverage >= 0.25, (check.id, check.caption)
    # the classifier says "most likely an espresso" for the coffee photo
    assert "espresso" in checks["untagged"].caption.lower()
    figures = summarise(list(checks.values()))
    assert figures["subject_named_rate"] == 1.0 and figures["template_copies"] == 0
    # provenance: the verdict of every candidate, the flags and the score
    meta = json.loads((project / "captions" / "rocket.json").read_text())
    assert len(meta["candidates"]) == 3 and isinstance(meta["flags"], list)
    assert 0 <= meta["score"] <= 1 and "reasons" in meta
    store = json.loads((project / "cache" / "tags.json").read_text())["tags"]
    assert store["no humans"]["summary"] == "No people appear anywhere in the picture."
    assert store["no humans"]["made_by"] == "definition"
    parser = Ids()
    parser.feed((project / "captions" / "index.html").read_text())
    assert sorted(parser.ids) == sorted(names)
