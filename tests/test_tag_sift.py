"""Tags are sifted before anything is made from them (issue 18): hostile tag files through
caption.py with the scripted server, the sifting rules one by one, lazy candidates (counted
at the server) and the interpret template that `auto` picks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import llm_overrides
from fakes import FakeDanbooru, FakeOpenAI
from PIL import Image

import caption
from stages.config import load_config
from stages.language.compose import compose
from stages.language.tagsift import TagFacts, sift_tags

# The tag files, written as a user's folder has them.
HOSTILE = {
    "cup": "cup, coffee, saucer, spoon, table, ^_^",
    "moto": "motorcycle, motor_vehicle, ground_vehicle, indoors, animated",
    "girl": "1girl, ../../etc/passwd, spacesuit, 宇宙服, :d, 100%_orange_juice, "
            "<script>alert(1)</script>, american_flag, https://example.com/x.png",
    "coins": "coin, money, monochrome",
}
JUNK = ("passwd", "../", "<script", "alert(1)", "宇宙服", "orange juice", "100%", "https",
        "example.com", "motor vehicle", "ground vehicle", "animated", "money", "^_^",
        "closed eyes")
# What the tag source says: the series is a copyright tag, the suit has a Japanese name.
WIKI = {
    "spacesuit": {"wiki": "A sealed suit worn for work in space.", "other_names": ["宇宙服"]},
    "100%_orange_juice": {"wiki": "A board game with video game characters.",
                          "category": "copyright"},
    "coin": "A flat round piece of metal stamped by a mint.",
}
EXPECTED_DROPS = {
    "cup": {"^_^": "emoticon"},
    "moto": {"motor vehicle": "implied by motorcycle", "ground vehicle": "implied by motorcycle",
             "animated": "meta"},
    "girl": {"../../etc/passwd": "junk", "宇宙服": "translated duplicate of spacesuit",
             "100% orange juice": "copyright", "<script>alert(1)</script>": "junk",
             "https://example.com/x.png": "junk"},
    "coins": {"money": "implied by coin"},
}


def make_folder(project: Path, tag_files: dict[str, str]) -> None:
    from skimage import data

    images = project / "images"
    for old in images.iterdir():
        old.unlink()
    photo = Image.fromarray(data.coffee()).resize((64, 48))
    for name, text in tag_files.items():
        photo.save(images / f"{name}.jpg")
        (images / f"{name}.txt").write_text(text, encoding="utf-8")


def draft_reply(request: dict) -> str:
    """Tag summaries: the tag's name; captions: the draft the prompt gives, as it is."""
    text = request["messages"][-1]["content"]
    if "Tag: " in text:
        return "The picture shows " + text.split("Tag: ", 1)[1].split("\n", 1)[0] + "."
    return text.rsplit("Draft from the tags: ", 1)[-1].strip() + "."


def run(project: Path, server: FakeOpenAI, *extra: str) -> int:
    args = ["--config", str(project / "config.ini"), "--quiet", "--set", "interrogate.skip=true"]
    for item in llm_overrides(server.url) + list(extra):
        args += ["--set", item]
    return caption.main(args)


def assert_sifted(project: Path, server: FakeOpenAI) -> None:
    captions = project / "captions"
    prompts = [json.dumps(r["messages"], ensure_ascii=False) for r in server.chat_requests
               if "Draft from the tags" in json.dumps(r["messages"])]
    assert len(prompts) == len(HOSTILE)            # one call per image: the draft passes
    for name in HOSTILE:
        text = (captions / f"{name}.txt").read_text(encoding="utf-8").lower()
        meta = json.loads((captions / f"{name}.json").read_text(encoding="utf-8"))
        dropped = {d["tag"]: d["reason"] for d in meta["tags_dropped"]}
        assert set(dropped) == set(EXPECTED_DROPS[name]), name
        for tag, reason in EXPECTED_DROPS[name].items():
            assert dropped[tag].startswith(reason), (name, tag, dropped[tag])
        used = json.dumps([meta["tags_used"], meta["tags"], meta["summaries"],
                           meta["definitions"]], ensure_ascii=False)
        for junk in JUNK:
            assert junk not in text, (name, junk, text)
            assert junk not in used, (name, junk)
        assert meta["flags"] == [], (name, meta["flags"])
    for prompt in prompts:
        for junk in JUNK:
            assert junk not in prompt.replace("\\u", "u"), junk
    girl = (captions / "girl.txt").read_text()
    assert "spacesuit" in girl and ":d" not in girl              # a face on a person: in words
    assert "smiling with an open mouth" in girl
    assert (captions / "moto.txt").read_text() == "A motorcycle, indoors.\n"


def test_hostile_tag_files_reach_no_caption_prompt_or_provenance(project):
    make_folder(project, HOSTILE)
    (project / "wiki.json").write_text(json.dumps(WIKI, ensure_ascii=False), encoding="utf-8")
    with FakeOpenAI(draft_reply) as server:
        assert run(project, server, f"tags.wiki_file={project / 'wiki.json'}") == 0
        assert_sifted(project, server)
    store = json.loads((project / "cache" / "tags.json").read_text(encoding="utf-8"))["tags"]
    assert not any(junk in tag for tag in store for junk in ("passwd", "<script", "宇宙服", "http"))
    assert store["100% orange juice"]["category"] == "copyright"


def test_danbooru_implications_categories_and_other_names_sift_tags(project):
    """The same folder with danbooru as the tag source: implications (followed through
    motor_vehicle), the copyright category and the page's other names come from its API."""
    make_folder(project, HOSTILE)
    pages = {"spacesuit": "A sealed suit worn for work in space.", "coin": "A flat round piece "
             "of metal.", "100%_orange_juice": "A board game."}
    with FakeOpenAI(draft_reply) as server, FakeDanbooru(
            pages, categories={"100%_orange_juice": 3},
            implications={"motorcycle": ["motor_vehicle"], "motor_vehicle": ["ground_vehicle"],
                          "coin": ["money"]},
            other_names={"spacesuit": ["宇宙服"]}) as booru:
        assert run(project, server, "tags.source=danbooru", f"tags.url={booru.url}",
                   "tags.requests_per_second=100") == 0
        assert_sifted(project, server)
    store = json.loads((project / "cache" / "tags.json").read_text(encoding="utf-8"))["tags"]
    assert store["motorcycle"]["implies"] == ["motor vehicle", "ground vehicle"]
    assert store["spacesuit"]["other_names"] == ["宇宙服"]


def test_copyright_tags_stay_when_drop_copyright_is_off(project):
    make_folder(project, {"girl": HOSTILE["girl"]})
    (project / "wiki.json").write_text(json.dumps(WIKI, ensure_ascii=False), encoding="utf-8")
    with FakeOpenAI(draft_reply) as server:
        assert run(project, server, f"tags.wiki_file={project / 'wiki.json'}",
                   "tags.drop_copyright=false") == 0
    meta = json.loads((project / "captions" / "girl.json").read_text(encoding="utf-8"))
    assert "100% orange juice" in meta["tags_used"]
    assert "passwd" not in json.dumps(meta["tags_used"])


@pytest.mark.parametrize("raw, used, dropped", [
    ("cat, o_o, :3", ["cat", "o_o", ":3"], {}),                     # faces on an animal stay
    ("1boy, ;_;, :d", ["1boy", ";_;", ":d"], {}),
    ("cup, :d, >_<", ["cup"], {":d": "emoticon", ">_<": "emoticon"}),
    ("1girl, :x", ["1girl"], {":x": "emoticon we have no words"}),
    ("fate/stay_night, c++_(language)", ["fate/stay night", "c++ (language)"], {}),
    ("猫, 耳", ["猫", "耳"], {}),                                   # all in one script: kept
    ("cat_ears, 猫耳", ["cat ears"], {"猫耳": "translated duplicate"}),
    ("café, tree", ["café", "tree"], {}),
    ("123, ???, tree, [b]x[/b], file:///etc/hosts, C:\\x.txt, /usr/bin, ~/.ssh/id_rsa",
     ["tree"], {"123": "junk", "???": "junk", "[b]x[/b]": "junk", "file:///etc/hosts": "junk",
                "c:\\x.txt": "junk", "/usr/bin": "junk", "~/.ssh/id rsa": "junk"}),
    ("coin, money, banknote", ["coin", "banknote"], {"money": "implied by coin"}),
    ("car, ground_vehicle", ["car"], {"ground vehicle": "implied by car"}),   # transitively
])
def test_sifting_rules(raw, used, dropped):
    sifted = sift_tags(raw.split(","))
    assert sifted.used == used
    assert {t: r for t, r in sifted.dropped} .keys() == dropped.keys()
    for tag, reason in sifted.dropped:
        assert reason.startswith(dropped[tag]), (tag, reason)


def test_a_character_tag_counts_as_a_person_for_faces():
    facts = TagFacts(category={"saber (fate)": "character"})
    assert sift_tags(["saber_(fate)", ":d"], facts=facts).used == ["saber (fate)", ":d"]
    assert sift_tags(["saber_(fate)", ":d"]).used == ["saber (fate)"]


def test_the_sources_implications_replace_the_shipped_table():
    # the source says coin implies nothing: money stays; it says rock implies stone
    facts = TagFacts(implies={"coin": (), "rock": ("stone",)})
    assert sift_tags(["coin", "money", "rock", "stone"], facts=facts).used == ["coin", "money", "rock"]


@pytest.mark.parametrize("tags, expected", [
    (["coin", "monochrome"], "A black-and-white picture of coins."),
    (["space", "galaxy", "star (sky)"], "Galaxies with stars, in space."),
    (["cup", "coffee", "saucer", "spoon", "table"], "A cup with coffee, a saucer, a spoon and a table."),
    (["1girl", "spacesuit", ":d", "american flag"],
     "A girl wearing a spacesuit, smiling with an open mouth, with an american flag."),
])
def test_composing_is_count_neutral(tags, expected):
    assert compose(tags) == expected


# -- lazy candidates ----------------------------------------------------------------------

def interpret_only(project: Path, server: FakeOpenAI, *extra: str) -> int:
    args = ["--config", str(project / "config.ini"), "--quiet", "--only", "interpret",
            "--set", "interrogate.skip=true"]
    for item in llm_overrides(server.url) + list(extra):
        args += ["--set", item]
    return caption.main(args)


def candidate_requests(server: FakeOpenAI) -> list[dict]:
    return [r for r in server.chat_requests if "Draft from the tags" in json.dumps(r["messages"])]


def test_one_call_per_image_when_the_first_candidate_passes(project):
    make_folder(project, {"cup": "cup, saucer, table", "moto": "motorcycle, indoors"})
    with FakeOpenAI(draft_reply) as server:
        assert interpret_only(project, server) == 0
        assert len(candidate_requests(server)) == 2                  # one per image
        assert {r["seed"] for r in candidate_requests(server)} == {0}
        assert interpret_only(project, server) == 0                  # rerun: nothing asked
        assert len(candidate_requests(server)) == 2
    meta = json.loads((project / "captions" / "cup.json").read_text())
    assert len(meta["candidates"]) == 1 and meta["candidates"][0]["passed"]


@pytest.mark.parametrize("k", [2, 3])
def test_k_calls_per_image_when_no_candidate_passes(project, k):
    make_folder(project, {"cup": "cup, saucer, table", "moto": "motorcycle, indoors"})
    with FakeOpenAI(lambda request: "A lighthouse keeper holds a lantern.") as server:
        assert interpret_only(project, server, f"interpret.candidates={k}") == 0
        requests = candidate_requests(server)
    assert len(requests) == 2 * k
    assert sorted(r["seed"] for r in requests) == sorted(list(range(k)) * 2)   # sample index
    meta = json.loads((project / "captions" / "cup.json").read_text())
    assert meta["flags"] == ["fallback"] and len(meta["candidates"]) == k


def test_the_second_candidate_is_asked_for_only_after_the_first_fails(project):
    make_folder(project, {"cup": "cup, saucer, table"})

    def reply(request: dict) -> str:
        return "A lighthouse keeper holds a lantern." if request["seed"] == 0 else draft_reply(request)

    with FakeOpenAI(reply) as server:
        assert interpret_only(project, server) == 0
        assert [r["seed"] for r in candidate_requests(server)] == [0, 1]
    meta = json.loads((project / "captions" / "cup.json").read_text())
    assert [c["passed"] for c in meta["candidates"]] == [False, True] and meta["flags"] == []


# -- the template `auto` picks ---------------------------------------------------------------

def test_auto_template_resolves_by_server_and_enters_the_key(project):
    config = project / "config.ini"
    assert load_config(config).interpret.template == project / "templates" / "interpret.txt"
    served = load_config(config, ["llm.base_url=http://127.0.0.1:9/v1"])
    assert served.interpret.template == project / "templates" / "interpret_full.txt"
    make_folder(project, {"cup": "cup, saucer, table"})
    with FakeOpenAI(draft_reply) as server:
        assert interpret_only(project, server) == 0
        first = server.chat_requests[-1]["messages"]
        assert "Meanings of the tags" in first[-1]["content"] and first[0]["role"] == "system"
        meta = json.loads((project / "captions" / "cup.json").read_text())
        assert meta["templates"]["interpret_file"] == "interpret_full.txt"
        calls = len(server.chat_requests)
        # the same file named explicitly: the same key, nothing redone
        full = project / "templates" / "interpret_full.txt"
        assert interpret_only(project, server, f"interpret.template={full}") == 0
        assert len(server.chat_requests) == calls
        # the short one: another key, the caption is made again with the short prompt
        short = project / "templates" / "interpret.txt"
        assert interpret_only(project, server, f"interpret.template={short}",
                              "interpret.overwrite=true") == 0
        assert len(server.chat_requests) > calls
        assert server.chat_requests[-1]["messages"][-1]["content"].startswith("Notes: ")


def test_more_hostile_junk_reaches_no_caption(project):
    """Review round: schemes other than http (file:, s3://, mailto:, data:), e-mail
    addresses, bare system paths, file names, percent-encoding, shell and template
    expansion, a terminal colour code and invisible formatting characters were kept as tags
    and written into the composed caption, unflagged."""
    junk = ["file:/etc/passwd", "s3://bucket/key", "mailto:a@b.cz", "data:text/html;x",
            "evil@example.cz", "etc/passwd", "x.exe", "%2e%2e%2fetc", "${jndi:ldap://x}",
            "$(rm -rf ~)", "`whoami`", "\x1b[31mred", "\u202eevil", "zero\u200bwidth",
            "ftp.example.cz/x"]
    make_folder(project, {"girl": ", ".join(["1girl", "spacesuit", *junk])})
    with FakeOpenAI(draft_reply) as server:
        assert run(project, server) == 0
    meta = json.loads((project / "captions" / "girl.json").read_text(encoding="utf-8"))
    text = (project / "captions" / "girl.txt").read_text(encoding="utf-8")
    assert meta["tags_used"] == ["1girl", "spacesuit"], meta["tags_used"]
    assert all(d["reason"].startswith("junk") for d in meta["tags_dropped"])
    assert len(meta["tags_dropped"]) == len(junk)
    for word in ("passwd", "bucket", "mailto", "evil", "exe", "%2e", "jndi", "rm", "whoami",
                 "31m", "zero", "ftp", "\u202e", "\u200b"):
        assert word not in text, (word, text)


@pytest.mark.parametrize("tag", ["fate/stay_night", ".hack//", "idolm@ster", "steins;gate",
                                 "re:zero_kara_hajimeru_isekai_seikatsu", "d.va_(overwatch)",
                                 "mr._game_&_watch", "ac/dc", "c.c."])
def test_real_tags_with_odd_characters_are_no_junk(tag):
    assert sift_tags([tag]).dropped == []


def test_a_face_the_sifter_keeps_is_evidence_for_the_verifier(project):
    """Review round: the sifter kept `:d` on a kitten, a puppy or a maid (its animal and
    person lists), the verifier's shorter lists did not, so every such caption, the
    composed one included, was flagged `doubted` for the smile the tags state."""
    make_folder(project, {"kitten": "kitten, :d", "maid": "maid, ^_^"})
    with FakeOpenAI(draft_reply) as server:
        assert run(project, server) == 0
    for name in ("kitten", "maid"):
        meta = json.loads((project / "captions" / f"{name}.json").read_text(encoding="utf-8"))
        assert "smiling" in meta["caption"] and meta["flags"] == [], (name, meta["caption"],
                                                                     meta["reasons"])
