"""Tags stage: wiki lookup (file and a local fake danbooru), summaries, the tag store."""

from __future__ import annotations

import json
from collections import deque

import pytest
from conftest import llm_overrides
from fakes import FakeDanbooru, FakeOpenAI

import caption
from stages.backends.wiki import clean_dtext

TAG_TEXT = "1girl, long_hair, ^_^, c++_(language), ../../etc/passwd, 猫耳, rating:general"


def summary_reply(request: dict) -> str:
    text = request["messages"][-1]["content"]
    tag = text.split("Tag: ", 1)[1].split("\n", 1)[0] if "Tag: " in text else "?"
    return f"Summary of {tag}."


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
    wiki = {"1girl": "An image with exactly one girl.", "long_hair": "[[Hair]] past the shoulders.",
            "c++_(language)": "h4. Language\nA programming language."}
    with FakeOpenAI(summary_reply) as llm, FakeDanbooru(wiki) as booru:
        booru.fail["猫耳"] = deque([500, 500, 500])       # transient: never cached
        code = run_tags(project, llm, "tags.source=danbooru", f"tags.url={booru.url}")
        assert code == 1                                   # one tag failed after retries
        entries = store(project)
        assert entries["long hair"]["summary"] == "Summary of long hair."
        assert entries["long hair"]["wiki"] == "Hair past the shoulders."
        assert entries["^_^"]["status"] == "no_wiki" and entries["^_^"]["summary"] is None
        assert "猫耳" not in entries and "rating:general" not in entries
        wiki_paths = [p for p in booru.paths if p.startswith("/wiki_pages/")]
        assert "/wiki_pages/c%2B%2B_%28language%29.json" in wiki_paths
        assert "/wiki_pages/..%2F..%2Fetc%2Fpasswd.json" in wiki_paths
        assert "/wiki_pages/%E7%8C%AB%E8%80%B3.json" in wiki_paths
        assert all(agent.startswith("tagcap/") for agent in booru.agents)
        calls = len(llm.chat_requests)
        # Rerun: only the transiently failed tag is asked again, and now it answers.
        booru.wiki["猫耳"] = "Cat ears worn by a person."
        before = len(booru.paths)
        assert run_tags(project, llm, "tags.source=danbooru", f"tags.url={booru.url}") == 0
        assert booru.paths[before:] == ["/wiki_pages/%E7%8C%AB%E8%80%B3.json"]
        assert len(llm.chat_requests) == calls + 1
        # Third run: nothing to do, no request anywhere.
        assert run_tags(project, llm, "tags.source=danbooru", f"tags.url={booru.url}") == 0
        assert len(booru.paths) == before + 1 and len(llm.chat_requests) == calls + 1
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
    assert entries["common tag"]["summary"] == "Summary of common tag."
    assert entries["no page"]["status"] == "no_wiki"
    assert entries["no page"]["summary"] == "Summary of no page."


def test_file_source_and_template_change_resummarises(project):
    setup_folder(project, "long_hair, smile")
    (project / "wiki.json").write_text(json.dumps({"long_hair": "Hair that is long.",
                                                   "smile": "A happy face."}))
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
    ("[[Long hair|long]] and {{short_hair}}", "long and short_hair"),
    ('h4. Heading\n* item "link":/posts?tags=x done', "Heading\nitem link done"),
    ("[b]bold[/b] see https://example.com", "bold see"),
])
def test_dtext_cleanup(body, expected):
    assert clean_dtext(body) == expected


def test_credentials_in_the_danbooru_url_reach_no_file_and_no_output(project, capsys):
    setup_folder(project, "cat")
    with FakeOpenAI(summary_reply) as llm, FakeDanbooru({"cat": "A small pet. It purrs."}) as booru:
        url = booru.url.replace("http://", "http://someone:hunter2-secret@")
        assert run_tags(project, llm, "tags.source=danbooru", f"tags.url={url}") == 0
        assert store(project)["cat"]["summary"] == "Summary of cat."
    said = capsys.readouterr()
    assert "hunter2" not in said.out + said.err
    for path in project.rglob("*"):
        if path.is_file() and path.name != "config.ini":
            assert b"hunter2" not in path.read_bytes(), path
