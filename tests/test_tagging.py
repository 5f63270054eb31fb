"""Booru tag hygiene: parsing, normalisation, the emoticon rule, dedup, meta and blacklist."""

from __future__ import annotations

import pytest

from stages.language.tagging import (
    DEFAULT_META_TAGS,
    MAX_TAG_LENGTH,
    clean_tags,
    is_emoticon,
    normalise,
    parse_tag_text,
)


def test_parse_splits_on_commas_and_newlines_mixed():
    text = "\ufeff1girl, long_hair,blue_eyes\nsmile\r\n\n  cat_ears ,, ^_^\n"
    assert [t.strip() for t in parse_tag_text(text) if t.strip()] == \
        ["1girl", "long_hair", "blue_eyes", "smile", "cat_ears", "^_^"]
    assert parse_tag_text("") == []


def test_normalise_trims_lowers_and_turns_underscores_into_spaces():
    assert normalise("  Long_Hair ") == "long hair"
    assert normalise("looking_at__viewer") == "looking at viewer"
    assert normalise("tiger_\\(animal\\)") == "tiger (animal)"
    assert normalise("red\tscarf\u00a0knot") == "red scarf knot"
    assert normalise("a\x00b\x1bc") == "a b c"


@pytest.mark.parametrize("face", ["^_^", ">_<", "o_o", "0_0", "x_x", "u_u", "=_=", "-_-", ";_;",
                                  "t_t", "@_@", "._.", "^_^;", ">_o", "+_+", "x_x;", "ಠ_ಠ", "O_O"])
def test_emoticons_keep_their_underscores(face):
    assert normalise(face) == face.lower()
    assert is_emoticon(face.lower())


@pytest.mark.parametrize("tag,expected", [
    ("no_u", "no u"), ("cat_ears", "cat ears"), ("tiger_(animal)", "tiger (animal)"),
    ("1girl_", "1girl"), ("_", ""), ("__", ""), ("^_^ smile", "^ ^ smile"), ("on_x_y", "on x y"),
    ("猫_耳", "猫 耳"), ("solo_focus", "solo focus"), ("ab_cd", "ab cd"),
])
def test_ordinary_tags_are_not_emoticons(tag, expected):
    assert normalise(tag) == expected


def test_dedupe_keeps_first_occurrence_after_normalisation():
    tags = ["Blue_Eyes", "smile", "blue eyes", "BLUE_EYES ", "^_^", "^_^", "", "  ", "Smile"]
    assert clean_tags(tags) == ["blue eyes", "smile", "^_^"]


def test_default_meta_tags_are_dropped_only_when_asked():
    tags = ["rating:safe", "rating_explicit", "score_9", "score_8_up", "highres", "absurdres",
            "commentary_request", "english_commentary", "translated", "partially_translated",
            "bad_id", "bad_pixiv_id", "md5_mismatch", "general", "cat", "scoreboard",
            "commentary_cat_sign", "sourced_water"]
    cleaned = clean_tags(tags, drop=DEFAULT_META_TAGS)
    assert cleaned == ["cat", "scoreboard", "sourced water"]
    assert len(clean_tags(tags)) == len(tags)


def test_blacklist_matches_normalised_names_and_wildcards():
    tags = ["Cat_Ears", "dog", "hot_dog", "dog_tags", "sunset"]
    assert clean_tags(tags, blacklist=["cat ears", "dog*"]) == ["hot dog", "sunset"]
    assert clean_tags(tags, blacklist=["*dog"]) == ["cat ears", "dog tags", "sunset"]
    # regex characters in a user's list are literal
    assert clean_tags(["a.b", "axb", "c[1]"], blacklist=["a.b", "c[1]"]) == ["axb"]


def test_hostile_tags_are_just_data():
    tags = ["../../etc/passwd", "<script>alert(1)</script>", "猫耳", "🐱", "👨‍👩‍👧", "C:\\Windows",
            "x" * (MAX_TAG_LENGTH + 1), "y" * MAX_TAG_LENGTH, "%2e%2e%2f", "rm -rf /"]
    cleaned = clean_tags(tags, drop=DEFAULT_META_TAGS)
    assert cleaned == ["../../etc/passwd", "<script>alert(1)</script>", "猫耳", "🐱", "👨‍👩‍👧",
                       "c:\\windows", "y" * MAX_TAG_LENGTH, "%2e%2e%2f", "rm -rf /"]
    assert clean_tags(parse_tag_text("a,b," * 5000)) == ["a", "b"]


def test_sample_tag_files_clean_to_a_useful_set_with_a_wiki_text_for_every_tag():
    import json
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    wiki = json.loads((root / "data" / "wiki.json").read_text(encoding="utf-8"))
    files = sorted((root / "images").glob("*.txt"))
    assert len(files) >= 6
    for path in files:
        raw = [t.strip() for t in parse_tag_text(path.read_text(encoding="utf-8")) if t.strip()]
        cleaned = clean_tags(raw, drop=DEFAULT_META_TAGS)
        assert 8 <= len(cleaned) <= 15 and len(cleaned) < len(clean_tags(raw)) < len(raw), path.name
        assert any(t.startswith("rating:") for t in raw) and any("_" in t for t in raw), path.name
        missing = [t for t in cleaned if t not in wiki]
        assert not missing, f"{path.name}: no wiki text for {missing}"
    assert all(isinstance(v, str) and 20 < len(v) < 300 and "[[" not in v for v in wiki.values())
