"""Issue 18's false accepts and false rejects, end to end: caption.py on real photos, the
scripted OpenAI-compatible server answering each image with a given candidate, and what is
written checked. A faithful candidate is written as it is, unflagged; an unfaithful one is
never written: the image gets a composed fallback, flagged, and NAME.json names the words
the verifier doubted. A written caption that itself fails the verifier is flagged `doubted`."""

from __future__ import annotations

import json
import re
from pathlib import Path

from fakes import FakeOpenAI
from test_verify import caption_short_template

from stages.language import Evidence, verify
from stages.store import sha256_file
from stages.templates import load_template

# Definitions for the tags below that data/wiki.json lacks (what a wiki file would give).
WIKI = {"table": "A piece of furniture with a flat top on legs.",
        "tripod": "A three-legged stand that holds a camera steady.",
        "camera": "A device that takes photographs.",
        "teapot": "A pot with a spout and a handle, for brewing and pouring tea.",
        "tea": "A drink made by steeping tea leaves in hot water.",
        "bowl": "A round, deep dish for food such as soup.",
        "soup": "A liquid food, served hot in a bowl.",
        "motorcycle": "A two-wheeled motor vehicle.",
        "smoke": "Visible smoke, rising from fire or exhaust.",
        "coin": "A small flat piece of metal used as money.",
        "money": "Coins or banknotes.",
        "lighthouse": "A tower with a bright light that guides ships.",
        "harbour": "A sheltered stretch of water where boats moor.",
        "fog": "A thick mist that hides distant things.",
        "beach": "A sandy or pebbly shore by the sea.",
        "galaxy": "A vast system of stars, gas and dust.",
        "knife": "A tool with a blade for cutting.",
        "plate": "A flat dish that food is served on.",
        "bread": "A baked food made from flour.",
        "1girl": "Exactly one girl or woman is in the picture."}


def caption_images(project: Path, cases: dict[str, tuple[str | None, str, str]],
                   vision: dict[str, tuple[str, str]] | None = None) -> dict[str, dict]:
    """Caption the sample images named in `cases` (stem -> (tag text or None for untagged,
    a word of that image's notes only, the candidate the server answers)); `vision` gives
    some an interrogate record (stem -> (answer, backend)). Returns each NAME.json."""
    images, answers = project / "images", project / "cache" / "interrogate"
    answers.mkdir(parents=True, exist_ok=True)
    wiki = json.loads((project / "data" / "wiki.json").read_text())
    (project / "data" / "wiki.json").write_text(json.dumps({**wiki, **WIKI}))
    for path in list(images.iterdir()):
        if path.stem not in cases:
            path.unlink()
    for stem, (tags, _, _) in cases.items():
        if tags is None:
            (images / f"{stem}.txt").unlink()
        else:
            (images / f"{stem}.txt").write_text(tags)
    for stem, (answer, backend) in (vision or {}).items():
        image = next(p for p in images.iterdir() if p.stem == stem and p.suffix != ".txt")
        (answers / f"{stem}.json").write_text(json.dumps(
            {"answer": answer, "image_sha256": sha256_file(image), "vision": {"backend": backend}}))

    def reply(request: dict) -> str:
        notes = request["messages"][-1]["content"].lower()
        found = [candidate for _, marker, candidate in cases.values() if marker in notes]
        assert len(found) <= 1, (notes, found)
        return found[0] if found else ""      # a tag summary: the definition is used instead

    with FakeOpenAI(reply) as server:         # the short template: this image's notes only
        assert caption_short_template(project, server.url, "tags,interpret") == 0
    return {stem: json.loads((project / "captions" / f"{stem}.json").read_text()) for stem in cases}


def assert_honest(project: Path, meta: dict) -> None:
    """What is written passes the verifier on its own evidence, or is flagged `doubted` with
    the doubted words recorded; the .txt holds the caption NAME.json describes."""
    templates = tuple(load_template(project / "templates" / name, "interpret").literal()
                      for name in ("interpret.txt", "shorten.txt"))
    evidence = Evidence(tags=tuple(meta["tags"]), summaries=tuple(meta["summaries"].items()),
                        definitions=tuple(meta["definitions"].items()), vision=meta["vision"],
                        vision_backend=meta.get("vision_backend", ""), templates=templates)
    verdict = verify(meta["caption"], evidence)
    assert verdict.passed == ("doubted" not in meta["flags"]), (meta["caption"], verdict.reasons)
    assert meta["doubted"] == verdict.doubted
    assert (project / "captions" / f"{meta['id']}.txt").read_text() == meta["caption"] + "\n"


def assert_rejected(project: Path, meta: dict, candidate: str, doubted: str) -> None:
    """The candidate was doubted for `doubted` and not written. The composed fallback does
    not say it either, or is flagged `doubted` for it (a salad's words are true tags: only
    the candidate's shape was wrong there)."""
    assert meta["caption"] != candidate and "fallback" in meta["flags"], meta["caption"]
    assert all(c["caption"] == candidate and not c["passed"] for c in meta["candidates"])
    assert doubted in meta["candidates"][0]["doubted"], meta["candidates"][0]
    salad = any("no sentence shape" in r for r in meta["candidates"][0]["reasons"])
    if not salad and re.search(rf"\b{re.escape(doubted)}\b", meta["caption"].lower()):
        assert "doubted" in meta["flags"] and doubted in meta["doubted"], meta
    assert_honest(project, meta)


def test_invented_objects_people_negations_counts_and_salad_are_not_written(project):
    cases = {
        "coffee": ("cup, coffee, saucer, spoon, table", "saucer",
                   "A cup of coffee with a saucer, a spoon and a croissant."),
        "rocket": ("camera, tripod, no_humans", "tripod", "A camera on a tripod and a dog."),
        "chelsea": ("teapot, tea, table, no_humans", "teapot",
                    "A woman pouring tea from a teapot at a table."),
        "china": ("bowl, soup, table", "bowl", "A table with no bowl, no soup."),
        "astronaut": ("2boys, camera", "boys", "2 boys with 3 cameras."),
        "flower": ("plate, bread, knife, table", "knife", "Table knife plate bread."),
    }
    written = caption_images(project, cases)
    for stem, doubted in (("coffee", "croissant"), ("rocket", "dog"), ("chelsea", "woman"),
                          ("china", "no bowl"), ("astronaut", "3"), ("flower", "knife")):
        assert_rejected(project, written[stem], cases[stem][2], doubted)
    assert any("no sentence shape" in r for r in written["flower"]["candidates"][0]["reasons"])
    assert any("no_humans" in r for r in written["chelsea"]["candidates"][0]["reasons"])


def test_actions_colours_emoticons_meta_counts_and_tautologies_are_not_written(project):
    cases = {
        "coffee": ("cup, coffee, saucer, spoon, table, ^_^", "saucer",
                   "A cup of coffee, smiling with closed eyes, a saucer, a spoon and a table."),
        "rocket": ("rocket, launch_pad, smoke, outdoors, sky", "rocket",
                   "A rocket on a launch pad is carried away by the sky outside."),
        # the spacesuit's wiki says "often white or orange": a definition grounds no colour
        "astronaut": ("1girl, spacesuit, helmet", "spacesuit", "A girl in a blue spacesuit with a helmet."),
        "chelsea": ("1girl, beach", "beach", "3 girls on a beach."),
        "flower": ("motorcycle, motor_vehicle, ground_vehicle, indoors, animated", "motorcycle",
                   "A motorcycle with a motor vehicle, a ground vehicle, and an animated indoor."),
        "china": (None, "espresso", "An espresso is an espresso."),
    }
    written = caption_images(project, cases,
                             vision={"china": ("most likely an espresso, possibly a cup", "classifier")})
    for stem, doubted in (("coffee", "smiling"), ("rocket", "carried"), ("astronaut", "blue"),
                          ("chelsea", "3"), ("flower", "animated"), ("china", "espresso")):
        meta = written[stem]
        if stem == "china":             # the composed fallback is the espresso itself
            assert meta["caption"] == "An espresso." and "fallback" in meta["flags"]
            assert doubted in meta["candidates"][0]["doubted"]
            assert_honest(project, meta)
            continue
        assert_rejected(project, meta, cases[stem][2], doubted)


def test_faithful_captions_in_other_words_are_written_as_they_are(project):
    """The issue's false rejects: a spelling variant and plurals of count-free tags, everyday
    words of the template's example that the tags contain, a synonym of the subject, "one"
    for 1girl, a count-neutral deep field, and true details a vision-language model states."""
    cases = {
        "coffee": ("coin, money, monochrome", "coin", "Coins in black and white."),
        "rocket": ("lighthouse, harbour, wall, fog", "lighthouse",
                   "A lighthouse on a harbour wall in the fog."),
        "chelsea": ("cup, coffee, saucer, spoon, table", "saucer", "An espresso on a saucer."),
        "flower": ("motorcycle, indoors", "motorcycle", "A red motorcycle in a garage."),
        "astronaut": ("1girl, beach", "beach", "One girl on a beach."),
        "china": ("space, galaxy, star_(sky)", "galax", "A deep field of galaxies and stars."),
    }
    written = caption_images(project, cases,
                             vision={"flower": ("A red motorcycle parked in a garage.", "openai")})
    for stem, (_, _, candidate) in cases.items():
        meta = written[stem]
        assert meta["caption"] == candidate, (stem, meta["candidates"])
        assert meta["flags"] == [] and meta["doubted"] == [], (stem, meta["flags"])
        assert_honest(project, meta)
    # the same red motorcycle from a classifier's label is a made-up colour
    assert not verify("A red motorcycle in a garage.", Evidence(
        tags=("motorcycle", "indoors"), vision="most likely a moped, possibly a garage",
        vision_backend="classifier")).passed


def test_ranking_prefers_the_salient_tags_to_a_list_of_tags():
    from stages.language import best

    e = Evidence(tags=("motorcycle", "motor vehicle", "ground vehicle", "indoors"))
    listed = verify("A motorcycle, a motor vehicle and a ground vehicle indoors.", e)
    short = verify("A motorcycle indoors.", e)
    assert listed.passed and short.passed
    assert short.score > listed.score
    assert best([listed, short]).caption == "A motorcycle indoors."


def test_negated_phrases_unnamed_others_odd_digits_and_one_letter_words_are_not_written(project):
    """Review round: a negator before a preposition ("not on a table"), "rather than",
    "and others" on 1girl, circled digits (which crashed the count check) and a one-character
    word of another script (which nothing checked) each reach no unflagged caption."""
    cases = {
        "coffee": ("cup, coffee, saucer, spoon, table", "saucer",
                   "A cup of coffee on a saucer with a spoon, not on a table."),
        "rocket": ("rocket, launch_pad, smoke", "rocket",
                   "A rocket with smoke on a launch pad rather than a rocket."),
        "astronaut": ("1girl, spacesuit, helmet", "spacesuit",
                      "A girl and others in spacesuits with a helmet."),
        "chelsea": ("teapot, tea, table", "teapot", "A teapot of tea on a table, ② ③."),
        "flower": ("cat, sofa", "sofa", "A cat on a sofa with a 犬."),
    }
    written = caption_images(project, cases)
    for stem, doubted in (("coffee", "no table"), ("rocket", "no rocket"), ("astronaut", "others"),
                          ("chelsea", "②"), ("flower", "犬")):
        assert_rejected(project, written[stem], cases[stem][2], doubted)


def test_a_negation_tag_is_said_and_never_contradicted(project):
    """Review round: with `no_shoes` tagged, "wearing shoes" passed unflagged (the tag's own
    word grounded it), while the true "wearing no shoes" was rejected as negating a tag and
    the composer wrote "wearing a no hat"."""
    cases = {
        "coffee": ("1girl, no_shoes, beach", "beach", "A girl wearing shoes, on the beach."),
        "rocket": ("1girl, no_hat, spacesuit", "spacesuit", "A girl in a spacesuit and a hat."),
        "chelsea": ("1girl, no_shoes, sand", "sand", "A girl wearing no shoes, on the sand."),
    }
    written = caption_images(project, cases)
    for stem, doubted in (("coffee", "shoes"), ("rocket", "hat")):
        meta = written[stem]               # the fallback says "no shoes": true, so unflagged
        assert meta["caption"] != cases[stem][2] and "fallback" in meta["flags"], meta
        assert doubted in meta["candidates"][0]["doubted"], meta["candidates"][0]
        assert_honest(project, meta)
    assert written["coffee"]["flags"] == ["fallback"], written["coffee"]
    assert "a no hat" not in written["rocket"]["caption"]
    meta = written["chelsea"]
    assert meta["caption"] == cases["chelsea"][2] and meta["flags"] == [], meta
    assert_honest(project, meta)


def test_more_people_than_the_count_tags_say_are_not_written(project):
    """Review round: on `1girl`, "A woman and a girl" passed unflagged (each word names the
    tagged girl, so nothing counted the people)."""
    cases = {
        "coffee": ("1girl, beach", "beach", "A woman and a girl on the beach."),
        "rocket": ("1girl, 1boy, sand", "sand", "A girl, a boy and a woman on the sand."),
        "chelsea": ("1girl, 1boy, park", "park", "A girl and a boy in a park."),
    }
    written = caption_images(project, cases)
    assert_rejected(project, written["coffee"], cases["coffee"][2], "woman")
    assert_rejected(project, written["rocket"], cases["rocket"][2], "woman")
    meta = written["chelsea"]
    assert meta["caption"] == cases["chelsea"][2] and meta["flags"] == [], meta


def test_what_a_vision_model_says_is_absent_grounds_nothing(project):
    """Review round: a vision-language model's "there are no people" and "without wheels"
    grounded "with people" and "with wheels" (its every word counted as evidence)."""
    cases = {
        "chelsea": (None, "tabby", "A tabby cat on a sofa with people."),
        "coffee": (None, "wheels", "A red car with wheels."),
    }
    written = caption_images(project, cases, vision={
        "chelsea": ("A tabby cat on a sofa. There are no people in the picture.", "openai"),
        "coffee": ("A red car without wheels.", "openai")})
    assert_rejected(project, written["chelsea"], cases["chelsea"][2], "people")
    meta = written["coffee"]
    assert meta["caption"] != cases["coffee"][2] and "wheels" in meta["candidates"][0]["doubted"]
    assert "with wheels" not in meta["caption"]
