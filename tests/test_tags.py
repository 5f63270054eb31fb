"""Tags stage: wiki lookup (file and a local fake danbooru), summaries, the tag store."""

from __future__ import annotations

import json
from collections import deque

import pytest
from conftest import llm_overrides
from fakes import FakeDanbooru, FakeOpenAI

import caption
from stages.backends.wiki import clean_dtext, definition
from stages.summary import choose_summary

TAG_TEXT = "1girl, long_hair, ^_^, c++_(language), cat_ears, ../../etc/passwd, 猫耳, rating:general"


def summary_reply(request: dict) -> str:
    """A grounded summary: it names only the tag."""
    text = request["messages"][-1]["content"]
    tag = text.split("Tag: ", 1)[1].split("\n", 1)[0] if "Tag: " in text else "?"
    return f"The picture shows {tag}."


# A danbooru page as the site stores it: the definition, then embeds, headings, link lists.
LONG_HAIR_PAGE = (
    "Hair that reaches past the shoulders. It is often worn loose or tied back.\r\n\r\n"
    "!post #100\r\n\r\nh4. See also\r\n\r\n* [[very long hair]]\r\n* [[short hair|]]\r\n\r\n"
    "h4. External links\r\n\r\n* \"Hair\":https://en.wikipedia.org/wiki/Hair\r\n"
    "[section=Not To Be Confused With]* [[long sleeves]][/section]")


def setup_folder(project, text=TAG_TEXT):
    images = project / "images"
    for old in images.iterdir():
        old.unlink()
    from PIL import Image

    Image.new("RGB", (32, 32), "red").save(images / "a.png")
    (images / "a.txt").write_text(text, encoding="utf-8")


def run_tags(project, server, *extra):
    args = ["--config", str(project / "config.ini"), "--only", "tags", "--quiet",
            "--set", "tags.requests_per_second=100", "--set", "tags.retries=2"]
    for item in llm_overrides(server.url):
        args += ["--set", item]
    for item in extra:
        args += ["--set", item]
    return caption.main(args)


def store(project) -> dict:
    return json.loads((project / "cache" / "tags.json").read_text())["tags"]


def test_danbooru_source_encodes_names_and_caches_definitive_answers(project):
    setup_folder(project)
    wiki = {"1girl": "An image with exactly one girl.", "long_hair": LONG_HAIR_PAGE,
            "c++_(language)": "h4. Language\nA programming language."}
    with FakeOpenAI(summary_reply) as llm, FakeDanbooru(wiki) as booru:
        booru.fail["cat_ears"] = deque([500, 500, 500])   # transient: never cached
        code = run_tags(project, llm, "tags.source=danbooru", f"tags.url={booru.url}")
        assert code == 1                                   # one tag failed after retries
        entries = store(project)
        assert entries["long hair"]["summary"] == "The picture shows long hair."
        assert entries["long hair"]["made_by"] == "model"
        assert entries["long hair"]["wiki"] == ("Hair that reaches past the shoulders. It is "
                                                "often worn loose or tied back.")
        assert entries["1girl"]["summary"] == "An image with exactly one girl."
        assert entries["1girl"]["made_by"] == "definition"             # no model call
        assert entries["c++ (language)"]["summary"] == "A programming language."   # first section
        # Only definition prose reaches the summariser: no embeds, headings or link lists.
        sent = [r["messages"][-1]["content"] for r in llm.chat_requests]
        assert len(sent) == 1 and "reaches past the shoulders" in sent[0]
        for leak in ("post #", "h4", "See also", "very long hair", "wikipedia", "sleeves", "section"):
            assert leak not in sent[0]
        # a face beside a person is looked up; junk, translations and meta tags are not
        assert entries["^_^"]["status"] == "no_wiki" and entries["^_^"]["summary"] is None
        assert "猫耳" not in entries and "rating:general" not in entries
        assert not any("passwd" in tag for tag in entries)
        wiki_paths = [p for p in booru.paths if p.startswith("/wiki_pages/")]
        assert "/wiki_pages/c%2B%2B_%28language%29.json" in wiki_paths
        assert not any("passwd" in p or "%E7%8C%AB" in p for p in booru.paths)
        assert all(agent.startswith("tagcap/") for agent in booru.agents)
        calls = len(llm.chat_requests)
        # Rerun: only the transiently failed tag is asked again, and now it answers.
        booru.wiki["cat_ears"] = "Cat ears worn by a person. Often part of a headband."
        before = len(booru.paths)
        assert run_tags(project, llm, "tags.source=danbooru", f"tags.url={booru.url}") == 0
        asked = booru.paths[before:]
        assert [p for p in asked if p.startswith("/wiki_pages/")] == ["/wiki_pages/cat_ears.json"]
        assert all("cat_ears" in p for p in asked)
        assert len(llm.chat_requests) == calls + 1
        # Third run: nothing to do, no request anywhere.
        after = len(booru.paths)
        assert run_tags(project, llm, "tags.source=danbooru", f"tags.url={booru.url}") == 0
        assert len(booru.paths) == after and len(llm.chat_requests) == calls + 1
    assert not list(project.rglob("passwd*"))


def test_min_post_count_and_tags_without_wiki(project):
    setup_folder(project, "rare_tag, common_tag, no_page")
    with FakeOpenAI(summary_reply) as llm, FakeDanbooru(
            {"rare_tag": "x", "common_tag": "A common thing."},
            posts={"rare_tag": 3, "common_tag": 5000, "no_page": 900}) as booru:
        assert run_tags(project, llm, "tags.source=danbooru", f"tags.url={booru.url}",
                        "tags.min_post_count=100", "tags.include_tags_without_wiki=true") == 0
        entries = store(project)
    assert entries["rare tag"]["status"] == "below_min_posts" and entries["rare tag"]["post_count"] == 3
    assert entries["common tag"]["summary"] == "A common thing."
    assert entries["common tag"]["made_by"] == "definition"
    assert entries["no page"]["status"] == "no_wiki"
    assert entries["no page"]["summary"] == "The picture shows no page."
    assert entries["no page"]["made_by"] == "tag_name"


def test_file_source_and_template_change_resummarises(project):
    setup_folder(project, "long_hair, smile")
    (project / "wiki.json").write_text(json.dumps({
        "long_hair": "Hair that is long. It may reach the waist.",
        "smile": "A happy face. The corners of the mouth turn up."}))
    with FakeOpenAI(summary_reply) as llm:
        assert run_tags(project, llm, f"tags.wiki_file={project / 'wiki.json'}") == 0
        assert len(llm.chat_requests) == 2 and store(project)["smile"]["source"] == "file"
        assert run_tags(project, llm, f"tags.wiki_file={project / 'wiki.json'}") == 0
        assert len(llm.chat_requests) == 2
        template = project / "templates" / "tag_summary.txt"
        template.write_text(template.read_text() + "\nBe precise.\n")
        assert run_tags(project, llm, f"tags.wiki_file={project / 'wiki.json'}") == 0
        assert len(llm.chat_requests) == 4


def test_unreachable_danbooru_is_one_clear_line(project, capsys):
    setup_folder(project, "smile")
    with FakeDanbooru({}) as booru:
        url = booru.url
    with FakeOpenAI(summary_reply) as llm:
        assert run_tags(project, llm, "tags.source=danbooru", f"tags.url={url}") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: cannot reach danbooru at " + url)


@pytest.mark.parametrize("body, expected", [
    ("[[Long hair|long]] and {{short_hair}}", "long and short hair"),
    ('h4. Heading\n* item "link":/posts?tags=x done', "Heading"),
    ("Worn with [[hakama (clothing)|]] or [[1girl|]]; &quot;quoted&quot; &amp; more",
     'Worn with hakama or 1girl; "quoted" & more'),
    ("A cat. thumb #123 !asset #9 [section=Gallery]!post #1 text[/section] End.", "A cat.\nEnd."),
    ("[b]bold[/b] see https://example.com", "bold see"),
    ("A hat. Collected in pool #12 and discussed in topic #345/p2, see comment #9.",
     "A hat. Collected in and discussed in, see."),
    ("First seen in issue #3 of the magazine.", "First seen in issue #3 of the magazine."),
])
def test_dtext_cleanup(body, expected):
    assert clean_dtext(body) == expected


def test_definition_is_the_prose_before_the_first_heading():
    assert definition(LONG_HAIR_PAGE) == ("Hair that reaches past the shoulders. It is often "
                                          "worn loose or tied back.")
    body = ("!post #5\n[[Saber (Fate)|]] is a [[heroic spirit|servant]] from &quot;Fate&quot;."
            "\n\n* [[artoria pendragon]]\n\nh4. Appearance\nBlonde hair.")
    assert definition(body) == 'Saber is a servant from "Fate".'
    assert definition("h4. Only a heading\n* [[a]]\n* [[b]]") == ""
    # a page that opens with a heading: its first section is the definition, never "see also"
    assert definition("h4. Language\nA programming language.\nh4. See also\n* [[c]]") == (
        "A programming language.")
    assert definition("h4. See also\nThe [[cat]] page and the dog page.") == ""


@pytest.mark.parametrize("body, expected", [
    # the page's definition sits in a collapsed section: its prose is the definition
    ("[section=Definition]A hat with a wide brim.[/section]\nh4. See also\n* [[cap]]",
     "A hat with a wide brim."),
    ("[expand=Description]Shoes with laces.[/expand]\n[section=Not To Be Confused With]"
     "* [[boots]][/section]", "Shoes with laces."),
    # no prose outside sections: the first section that is not links or a gallery
    ("[section=Gallery]!post #1[/section]\n[section]Footwear with a heel.[/section]",
     "Footwear with a heel."),
    ("[section=Gallery]!post #1[/section]", ""),
    # prose outside a section wins; other sections stay dropped
    ("A cat. [section=Examples]A dog.[/section]", "A cat."),
    # tagging instructions are not the definition
    ("Footwear worn on the feet. To tag the colour, use tags like [[red footwear]]. "
     "Do not use this tag for socks.", "Footwear worn on the feet."),
    ("A hat. Use [[cap]] instead for peaked hats. It shades the eyes.", "A hat. It shades the eyes."),
    ("This tag is for pictures of boats on water.", "This tag is for pictures of boats on water."),
])
def test_definition_sections_and_instructions(body, expected):
    assert definition(body) == expected


def test_a_definition_section_on_danbooru_is_found_not_no_wiki(project):
    setup_folder(project, "hat")
    page = "[section=Definition]A head covering with a brim. To tag the colour, use tags like " \
           "[[red headwear]].[/section]"
    with FakeOpenAI(summary_reply) as llm, FakeDanbooru({"hat": page}) as booru:
        assert run_tags(project, llm, "tags.source=danbooru", f"tags.url={booru.url}") == 0
    entry = store(project)["hat"]
    assert entry["status"] == "found" and entry["wiki"] == "A head covering with a brim."
    assert entry["summary"] == "A head covering with a brim."


@pytest.mark.parametrize("answer, made_by, summary", [
    ("Hair that reaches past the shoulders.", "model", "Hair that reaches past the shoulders."),
    # invented words: replaced by the definition's first sentence
    ("A black cat with a white tail.", "first_sentence", "Hair that reaches past the shoulders."),
    # pipeline talk
    ("This tag marks long hair in the prompt.", "first_sentence",
     "Hair that reaches past the shoulders."),
    ("", "first_sentence", "Hair that reaches past the shoulders."),
])
def test_summary_grounding_rule(answer, made_by, summary):
    got, how, problems = choose_summary(answer, definition(LONG_HAIR_PAGE), "long hair")
    assert (got, how) == (summary, made_by)
    assert bool(problems) == (made_by != "model")


def test_summary_without_wiki_is_dropped_when_not_grounded():
    assert choose_summary("A black cat with a white tail.", "", "no humans")[:2] == (None, "rejected")
    assert choose_summary("A drawing of no humans.", "", "no humans")[:2] == (
        "A drawing of no humans.", "tag_name")


def test_summary_copying_the_template_example_is_rejected():
    template = "Tag: sextant\nA navigation instrument with a curved scale and a small telescope."
    got, how, problems = choose_summary("A navigation instrument with a curved scale.",
                                        "A thing with a curved scale. Used by navigators.",
                                        "sextant thing", template)
    assert how == "first_sentence" and got == "A thing with a curved scale."


def test_credentials_in_the_danbooru_url_reach_no_file_and_no_output(project, capsys):
    setup_folder(project, "cat")
    with FakeOpenAI(summary_reply) as llm, FakeDanbooru({"cat": "A small pet. It purrs."}) as booru:
        url = booru.url.replace("http://", "http://someone:hunter2-secret@")
        assert run_tags(project, llm, "tags.source=danbooru", f"tags.url={url}") == 0
        assert store(project)["cat"]["summary"] == "The picture shows cat."
    said = capsys.readouterr()
    assert "hunter2" not in said.out + said.err
    for path in project.rglob("*"):
        if path.is_file() and path.name != "config.ini":
            assert b"hunter2" not in path.read_bytes(), path
