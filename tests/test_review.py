"""The review page: every image, its flags and reasons, relative thumbnails, flagged first."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path

from PIL import Image

from stages.review import write_review
from stages.store import sha256_text


class Cards(HTMLParser):
    """The page as a browser's DOM would hold it: cards with their flags and images."""

    def __init__(self):
        super().__init__()
        self.cards: list[dict] = []
        self.scripts = self.external = 0
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "div" and "card" in a.get("class", "").split():
            self.cards.append({"id": a["data-id"], "flags": a["data-flags"].split(), "img": None})
        if tag == "img" and self.cards:
            self.cards[-1]["img"] = a["src"]
        if tag in ("script", "link") and (a.get("src") or a.get("href")):
            self.external += 1

    def handle_data(self, data):
        self.text.append(data)


def caption(captions: Path, name: str, text: str, **meta) -> None:
    (captions / f"{name}.txt").write_text(text + "\n")
    (captions / f"{name}.json").write_text(json.dumps(
        {"caption": text, "caption_sha256": sha256_text(text + "\n"), "vision": "a guess",
         **meta}))


def test_review_page_lists_every_image_and_flag(tmp_path):
    images, captions = tmp_path / "images", tmp_path / "captions"
    (images / "sub").mkdir(parents=True)
    captions.mkdir()
    for name in ("good", "fallback", "long", "hand", "broken", "sub/none"):
        Image.new("RGB", (300, 200), "teal").save(images / f"{name}.png")
        (images / f"{name}.txt").write_text("cat, <b>bold</b>")
    (images / "broken.png").write_bytes(b"not a png")
    caption(captions, "good", "A cat.", flags=[], score=0.9, coverage=1.0, reasons=[])
    caption(captions, "fallback", "A cat <script>.", flags=["fallback"], score=0.5,
            coverage=0.5, reasons=["does not name the subject 'cat'"])
    caption(captions, "long", "A long cat.", flags=["over_clip_tokens"], score=0.8,
            coverage=1.0, reasons=[], over_limit=True)
    (captions / "hand.txt").write_text("written by hand\n")
    summary = tmp_path / "summary.json"
    summary.write_text(json.dumps({"stages": [
        {"name": "interpret", "failed": [{"id": "broken", "reason": "not an image file"}]}]}))

    path, count, flagged = write_review(images, captions, summary)
    page = path.read_text()
    parsed = Cards()
    parsed.feed(page)
    by_id = {c["id"]: c for c in parsed.cards}
    assert count == 6 and set(by_id) == {"good", "fallback", "long", "hand", "broken", "sub/none"}
    assert by_id["fallback"]["flags"] == ["fallback"]
    assert by_id["long"]["flags"] == ["over_clip_tokens"]
    assert by_id["hand"]["flags"] == ["kept"]
    assert by_id["broken"]["flags"] == ["failed"] and by_id["broken"]["img"] is None
    assert by_id["sub/none"]["flags"] == ["missing"]
    assert by_id["good"]["flags"] == [] and flagged == 5
    assert [c["id"] for c in parsed.cards][0] == "broken" and parsed.cards[-1]["id"] == "good"
    text = " ".join(parsed.text)
    assert "interpret: not an image file" in text and "does not name the subject" in text
    assert "A cat <script>." in text and "<script>." not in page        # escaped
    # thumbnails: small files beside the page, linked relatively; nothing fetched from outside
    for card in parsed.cards:
        if card["img"]:
            assert not card["img"].startswith(("/", "http", "file:"))
            with Image.open(captions / card["img"]) as thumb:
                assert max(thumb.size) <= 160
    assert parsed.external == 0
    # the page is rewritten in place; thumbnails are reused
    thumbs = sorted(p.name for p in (captions / "thumbs").iterdir())
    write_review(images, captions, summary)
    assert sorted(p.name for p in (captions / "thumbs").iterdir()) == thumbs


def test_a_failed_tag_is_not_a_failed_image_of_the_same_name(tmp_path):
    """The tags stage's items are tag names: a danbooru error on the tag `rocket` says
    nothing about rocket.png, whose caption is fine."""
    images, captions = tmp_path / "images", tmp_path / "captions"
    images.mkdir()
    captions.mkdir()
    for name in ("rocket", "cat"):
        Image.new("RGB", (64, 64), "navy").save(images / f"{name}.png")
        (images / f"{name}.txt").write_text(name)
        caption(captions, name, f"A {name}.", flags=[], score=1.0, coverage=1.0, reasons=[])
    summary = tmp_path / "summary.json"
    summary.write_text(json.dumps({"stages": [
        {"name": "tags", "failed": [{"id": "rocket", "reason": "danbooru gave up"}]},
        {"name": "interpret", "failed": [{"id": "cat", "reason": "server error"}]}]}))
    _, _, flagged = write_review(images, captions, summary)
    parsed = Cards()
    parsed.feed((captions / "index.html").read_text())
    by_id = {c["id"]: c for c in parsed.cards}
    assert by_id["rocket"]["flags"] == [] and by_id["cat"]["flags"] == ["failed"]
    assert flagged == 1 and "danbooru" not in " ".join(parsed.text)


def test_cards_without_our_provenance_still_show_the_vision_answer(tmp_path):
    images, captions, answers = tmp_path / "images", tmp_path / "captions", tmp_path / "interrogate"
    for folder in (images, captions, answers):
        folder.mkdir()
    for name in ("hand", "none"):
        Image.new("RGB", (64, 64), "olive").save(images / f"{name}.png")
        (answers / f"{name}.json").write_text(json.dumps({"answer": f"most likely a {name} lamp"}))
    (captions / "hand.txt").write_text("written by hand\n")
    write_review(images, captions, tmp_path / "summary.json", answers)
    parsed = Cards()
    parsed.feed((captions / "index.html").read_text())
    text = " ".join(parsed.text)
    assert "vision: most likely a hand lamp" in text and "vision: most likely a none lamp" in text


def _chromium() -> str | None:
    import shutil

    return next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)


def test_review_page_in_headless_chromium(tmp_path):
    """The page as a real browser runs it: relative thumbnails load from file://, the filter
    named in the link hides every other card, and the shown count follows."""
    import re
    import subprocess

    import numpy as np
    import pytest

    browser = _chromium()
    if browser is None:
        pytest.skip("no Chromium installed (apt install chromium)")
    images, captions = tmp_path / "images", tmp_path / "captions"
    images.mkdir()
    captions.mkdir()
    for name in ("good", "fallback", "long"):
        Image.new("RGB", (300, 200), (0, 128, 128)).save(images / f"{name}.png")
        (images / f"{name}.txt").write_text("cat")
    caption(captions, "good", "A cat.", flags=[], score=0.9, coverage=1.0, reasons=[])
    caption(captions, "fallback", "A cat.", flags=["fallback"], score=0.5, coverage=0.5,
            reasons=["no candidate passed"])
    caption(captions, "long", "A long cat.", flags=["over_clip_tokens"], score=0.8,
            coverage=1.0, reasons=[], over_limit=True)
    page, _, _ = write_review(images, captions, tmp_path / "summary.json")
    base = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--allow-file-access-from-files",
            "--user-data-dir=" + str(tmp_path / "profile")]

    def dom(fragment: str) -> tuple[dict[str, bool], str]:
        out = subprocess.run([*base, "--dump-dom", page.as_uri() + fragment], capture_output=True,
                             text=True, timeout=120).stdout          # timeout: a hang guard
        cards = {m.group(2): "display: none" not in m.group(1)
                 for m in re.finditer(r'<div class="card[^"]*"([^>]*?)data-id="([^"]+)"', out)}
        # the style attribute may come before or after data-id
        for m in re.finditer(r'<div class="card[^"]*" data-id="([^"]+)"[^>]*style="([^"]*)"', out):
            cards[m.group(1)] = "display: none" not in m.group(2)
        shown = re.search(r'<span id="shown">(\d+)</span>', out)
        return cards, shown.group(1) if shown else ""

    cards, shown = dom("")
    assert cards == {"fallback": True, "long": True, "good": True} and shown == "3"
    cards, shown = dom("#flag=fallback")
    assert cards == {"fallback": True, "long": False, "good": False} and shown == "1"
    cards, shown = dom("#flag=all&q=long")
    assert cards == {"fallback": False, "long": True, "good": False} and shown == "1"

    shot = tmp_path / "shot.png"
    subprocess.run([*base, f"--screenshot={shot}", "--window-size=900,700", page.as_uri()],
                   capture_output=True, timeout=120)
    pixels = np.asarray(Image.open(shot).convert("RGB")).reshape(-1, 3)
    teal = np.all(np.abs(pixels.astype(int) - (0, 128, 128)) <= 12, axis=1)
    assert teal.sum() > 3 * 100 * 60, "the relative thumbnails did not load in the browser"


def test_cards_show_doubted_words_lost_candidates_tags_and_clip_tokens(tmp_path):
    """What the verifier and tag cleaning record (tests/test_review_server.py has the rest):
    doubted words marked in the caption, the candidates that lost, tags used and dropped
    with reasons, and CLIP tokens against the limit. Records without them still render."""
    images, captions = tmp_path / "images", tmp_path / "captions"
    images.mkdir()
    captions.mkdir()
    for name in ("rich", "plain"):
        Image.new("RGB", (64, 64), "navy").save(images / f"{name}.png")
    caption(captions, "rich", "A purple cat on a sofa.", flags=["over_clip_tokens"], score=0.4,
            coverage=0.5, reasons=[], doubted=["purple"], clip_tokens=80,
            candidates=[{"caption": "A purple cat on a sofa.", "passed": True, "score": 0.4,
                         "reasons": [], "doubted": ["purple"]},
                        {"caption": "Two dogs & a <cat>.", "passed": False, "score": 0.1,
                         "reasons": ["count not in the tags"], "doubted": ["Two dogs"]}],
            tags_used=["cat", "sofa"], tags_dropped=[{"tag": "highres", "reason": "meta"}])
    caption(captions, "plain", "A cat.", flags=[], score=1.0, coverage=1.0, reasons=[])
    write_review(images, captions, tmp_path / "summary.json")
    page = (captions / "index.html").read_text()
    rich = page[page.index('data-id="rich"'):page.index('data-id="plain"')]
    assert '<div class="caption">A <mark>purple</mark> cat on a sofa.</div>' in rich
    assert "candidates that lost (1)" in rich and "<mark>Two dogs</mark> &amp; a &lt;cat&gt;." in rich
    assert "count not in the tags" in rich
    assert "tags used: cat, sofa; dropped: highres (meta)" in rich
    assert '<span class="meta over">80/77 CLIP tokens</span>' in rich
    plain = page[page.index('data-id="plain"'):]
    assert "<mark>" not in plain and "candidates that lost" not in plain
