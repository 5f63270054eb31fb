"""Benchmark loading: every file format, the merge/filter/limit rules, stable safe ids, errors."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stages.benchmarks import Prompt, load_benchmark, make_id, write_prompts_jsonl
from stages.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent

GENERATED_ID = re.compile(r"^[0-9a-f]{12}(-[0-9a-f]{8})?$")


def write(path: Path, text: str, *, bom: bool = False, crlf: bool = False) -> Path:
    if crlf:
        text = text.replace("\n", "\r\n")
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8"))
    return path


def load(path: Path | str, **kw) -> list[Prompt]:
    return load_benchmark(str(path), base_dir=kw.pop("base_dir", Path("/")), **kw)


def config_error(fn, *args, **kw) -> str:
    with pytest.raises(ConfigError) as info:
        fn(*args, **kw)
    message = str(info.value)
    assert "\n" not in message, "errors are one line"
    return message


# -- the shipped PartiPrompts -----------------------------------------------------------------

def test_parti_loads_every_prompt_with_categories_and_content_ids(tmp_path):
    prompts = load_benchmark("parti", base_dir=tmp_path)   # no data/ there: the repository copy
    assert len(prompts) == 1632
    assert prompts[0] == Prompt(make_id("bond"), "bond", "Abstract")
    assert len({p.id for p in prompts}) == len(prompts)
    giggle = [p for p in prompts if "G I G G L E" in p.prompt]
    assert giggle[0].prompt.startswith('"G I G G L E" painted'), "a TSV quote is an ordinary character"
    assert any(p.prompt == "Salvador Dalí" for p in prompts)


def test_parti_category_filter_is_case_insensitive_and_keeps_ids(tmp_path):
    everything = {p.prompt: p.id for p in load_benchmark("parti", base_dir=tmp_path)}
    food = load_benchmark("parti", base_dir=tmp_path, categories=("FOOD & beverage",))
    assert len(food) == 74 and {p.category for p in food} == {"Food & Beverage"}
    assert all(everything[p.prompt] == p.id for p in food)
    two = load_benchmark("parti", base_dir=tmp_path, categories=("food & beverage", "vehicles"), limit=80)
    assert len(two) == 80 and {p.category for p in two} == {"Food & Beverage", "Vehicles"}


# -- text files -------------------------------------------------------------------------------

def test_txt_skips_blank_lines_collapses_space_and_keeps_non_ascii(tmp_path):
    text = "  a red   car \n\n\t\nCafé crème à Zürich\n東京の夜景 🌃\n"
    path = write(tmp_path / "p.txt", text, bom=True, crlf=True)
    prompts = load(path)
    assert [p.prompt for p in prompts] == ["a red car", "Café crème à Zürich", "東京の夜景 🌃"]
    assert [p.id for p in prompts] == [make_id("a red car"), make_id("Café crème à Zürich"),
                                       make_id("東京の夜景 🌃")]
    assert all(p.category == "" and p.reference is None for p in prompts)


def test_txt_merges_duplicates_after_normalising_whitespace_and_unicode(tmp_path):
    decomposed = "cafe\u0301 at night"
    path = write(tmp_path / "p.txt", f"café at night\nx\n  café   at night \n{decomposed}\nx\n")
    prompts = load(path)
    assert [p.prompt for p in prompts] == ["café at night", "x"]
    assert prompts[0].id == make_id("café at night") and prompts[1].id == make_id("x")


def test_old_mac_line_ends_count_as_lines(tmp_path):
    path = tmp_path / "p.txt"
    path.write_bytes(b"one\rtwo\r\rthree")
    assert [p.prompt for p in load(path)] == ["one", "two", "three"]
    assert [p.id for p in load(path)] == [make_id("one"), make_id("two"), make_id("three")]


# -- CSV / TSV ----------------------------------------------------------------------------------

def test_csv_quotes_commas_and_multiline_fields(tmp_path):
    text = ('Prompts,Category\n'
            '"A sign that says ""Hello, world""",Text\n'
            '"apples, pears,\nand plums",Food\n'
            'plain prompt,  Colors  \n'
            ',Empty\n'
            'after the multi-line one,Food\n')
    prompts = load(write(tmp_path / "db.csv", text, bom=True, crlf=True))
    assert [(p.prompt, p.category) for p in prompts] == [
        ('A sign that says "Hello, world"', "Text"), ("apples, pears, and plums", "Food"),
        ("plain prompt", "Colors"), ("after the multi-line one", "Food")]
    assert [p.id for p in prompts] == [make_id(p.prompt) for p in prompts], "ids come from the text"


def test_csv_prompt_column_names_and_optional_category(tmp_path):
    for column in ("prompt", "PROMPTS", "Text", "caption"):
        path = write(tmp_path / f"{column}.csv", f"id,{column}\n7,a blue bus\n")
        assert load(path) == [Prompt(make_id("a blue bus"), "a blue bus", "")]


def test_csv_duplicates_keep_first_and_filter_on_any_category(tmp_path):
    text = "prompt,category\na cat,Animals\nsomething,Misc\n a  cat ,Counting\na dog,Animals\n"
    path = write(tmp_path / "d.csv", text)
    prompts = load(path)
    assert [(p.prompt, p.category, p.id) for p in prompts] == [
        ("a cat", "Animals", make_id("a cat")), ("something", "Misc", make_id("something")),
        ("a dog", "Animals", make_id("a dog"))]
    counting = load(path, categories=("counting",))
    assert [(p.prompt, p.category, p.id) for p in counting] == [("a cat", "Animals", prompts[0].id)]


def test_csv_reference_images_resolve_beside_the_file(tmp_path):
    from PIL import Image
    from skimage import data

    (tmp_path / "refs").mkdir()
    Image.fromarray(data.chelsea()).save(tmp_path / "refs" / "cat.png")
    path = write(tmp_path / "r.csv", "prompt,image\na cat,refs/cat.png\na bus,\n")
    cat, bus = load(path)
    assert cat.reference == str((tmp_path / "refs" / "cat.png").resolve()) and bus.reference is None
    assert cat.to_json()["reference"] == cat.reference and "reference" not in bus.to_json()
    write(tmp_path / "r.csv", "prompt,reference\na cat,refs/cat.png\na bus,refs/bus.png\n")
    message = config_error(load, tmp_path / "r.csv")
    assert f"{tmp_path / 'r.csv'}:3" in message and "bus.png" in message


def test_tsv_without_quoting_keeps_quotes(tmp_path):
    text = 'Prompt\tCategory\tNote\n"Stop" on a sign\tText\tx\nsay "hi, there"\tText\t\n'
    prompts = load(write(tmp_path / "t.tsv", text))
    assert [p.prompt for p in prompts] == ['"Stop" on a sign', 'say "hi, there"']


# -- JSON lines ---------------------------------------------------------------------------------

def test_jsonl_ids_categories_images_and_blank_lines(tmp_path):
    from PIL import Image
    from skimage import data

    Image.fromarray(data.coffee()).save(tmp_path / "coffee.jpg")
    first = {"prompt": "a cup of coffee", "category": "Food", "id": "coffee-1", "image": "coffee.jpg"}
    lines = [json.dumps(first),
             "", json.dumps({"prompt": "  a rocket  ", "category": None}),
             json.dumps({"prompt": "Ünïcödé ✓", "id": "u.2"}, ensure_ascii=False)]
    prompts = load(write(tmp_path / "p.jsonl", "\n".join(lines) + "\n", crlf=True))
    coffee = str((tmp_path / "coffee.jpg").resolve())
    assert prompts == [Prompt("coffee-1", "a cup of coffee", "Food", coffee),
                       Prompt(make_id("a rocket"), "a rocket", ""), Prompt("u.2", "Ünïcödé ✓", "")]


@pytest.mark.parametrize("line, expected", [
    ('{"prompt": "x", "id": "../etc"}', 'not a safe name'),
    ('{"prompt": "x", "id": "a b"}', 'not a safe name'),
    ('{"prompt": "x", "id": 5}', 'not a safe name'),
    ('{"prompt": "x", "id": "' + "a" * 65 + '"}', 'not a safe name'),
    ('{"prompt": "x",', "not valid JSON"),
    ('["x"]', 'expected an object with a "prompt" string'),
    ('{"text": "x"}', 'expected an object with a "prompt" string'),
    ('{"prompt": "x", "category": 3}', "must be strings"),
])
def test_jsonl_bad_lines_name_file_and_line(tmp_path, line, expected):
    path = write(tmp_path / "bad.jsonl", '{"prompt": "fine"}\n\n' + line + "\n")
    message = config_error(load, path)
    assert f"{path}:3" in message and expected in message and "upsample.benchmark" in message


def test_jsonl_duplicate_ids_are_an_error(tmp_path):
    path = write(tmp_path / "dup.jsonl", '{"prompt": "a", "id": "x1"}\n{"prompt": "b", "id": "x1"}\n')
    message = config_error(load, path)
    assert f"{path}:2" in message and "'x1'" in message and "line 1" in message


# -- ids ------------------------------------------------------------------------------------------

@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.text(min_size=1, max_size=40).filter(lambda s: "\n" not in s and "\r" not in s),
                min_size=1, max_size=6))
def test_ids_are_safe_unique_and_never_contain_the_prompt(tmp_path, lines):
    path = write(tmp_path / "h.txt", "\n".join(lines) + "\n")
    try:
        prompts = load(path)
    except ConfigError as exc:
        assert "contains no prompts" in str(exc)
        return
    assert len({p.id for p in prompts}) == len(prompts)
    for p in prompts:
        assert GENERATED_ID.match(p.id)
        assert p.prompt and p.prompt == " ".join(p.prompt.split())


def test_ids_do_not_change_with_filter_or_limit(tmp_path):
    rows = "".join(f"prompt {i},{'even' if i % 2 == 0 else 'odd'}\n" for i in range(20))
    path = write(tmp_path / "many.csv", "prompt,category\n" + rows)
    full = {p.prompt: p.id for p in load(path)}
    odd = load(path, categories=("ODD",), limit=3)
    assert [p.prompt for p in odd] == ["prompt 1", "prompt 3", "prompt 5"], "limit applies after filtering"
    assert all(full[p.prompt] == p.id for p in odd)


# -- drawbench ------------------------------------------------------------------------------------

def test_drawbench_reads_the_configured_csv_relative_to_the_config(tmp_path):
    write(tmp_path / "db.csv", "Prompts,Category\nA red colored car.,Colors\nA black colored car.,Colors\n")
    prompts = load_benchmark("DrawBench", path="db.csv", base_dir=tmp_path, limit=1)
    assert prompts == [Prompt(make_id("A red colored car."), "A red colored car.", "Colors")]


def test_drawbench_offline_says_to_download_the_csv(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    message = config_error(load_benchmark, "drawbench", base_dir=tmp_path)
    assert "offline" in message and "upsample.benchmark_path" in message


def test_drawbench_with_an_unreachable_hub_fails_fast(tmp_path, monkeypatch, refused_port):
    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{refused_port}")
    started = time.monotonic()
    message = config_error(load_benchmark, "drawbench", base_dir=tmp_path)
    assert "cannot be reached" in message and "upsample.benchmark_path" in message
    assert time.monotonic() - started < 60    # hang guard, not a performance bound


# -- errors ---------------------------------------------------------------------------------------

def test_missing_files_name_the_path_and_the_key(tmp_path):
    message = config_error(load_benchmark, "prompts/mine.csv", base_dir=tmp_path)
    assert "upsample.benchmark:" in message and str(tmp_path / "prompts" / "mine.csv") in message
    message = config_error(load_benchmark, "drawbench", path="nope.csv", base_dir=tmp_path)
    assert "upsample.benchmark_path" in message and str(tmp_path / "nope.csv") in message


def test_unknown_benchmark_lists_accepted_values(tmp_path):
    for spec in ("partiprompts", "", "prompts.xlsx"):
        message = config_error(load_benchmark, spec, base_dir=tmp_path)
        assert "parti, drawbench" in message and ".jsonl" in message


def test_csv_without_prompt_column_names_found_and_accepted_columns(tmp_path):
    path = write(tmp_path / "x.csv", "Description,Category\nsomething,Misc\n")
    message = config_error(load, path)
    assert "'Description', 'Category'" in message and "prompt, prompts, text, caption" in message


def test_unknown_category_lists_the_categories_there(tmp_path):
    path = write(tmp_path / "c.csv", "prompt,category\na,Colors\nb,Counting\n")
    message = config_error(load, path, categories=("colors", "Spatial"))
    assert "Spatial" in message and "Colors, Counting" in message
    message = config_error(load, write(tmp_path / "n.txt", "a\n"), categories=("x",))
    assert "no categories" in message


def test_empty_and_undecodable_files(tmp_path):
    assert "contains no prompts" in config_error(load, write(tmp_path / "e.txt", "\n  \n"))
    assert "contains no prompts" in config_error(load, write(tmp_path / "e.csv", "prompt,category\n,x\n"))
    (tmp_path / "latin.txt").write_bytes("caf\xe9".encode("latin-1"))
    assert "not UTF-8" in config_error(load, tmp_path / "latin.txt")


# -- output -------------------------------------------------------------------------------------

def test_write_prompts_jsonl_round_trips(tmp_path):
    prompts = [Prompt("00001-abcdef12", "Ünïcödé prompt", "Cat"), Prompt("r-1", "x", "", "/data/r.png")]
    out = tmp_path / "run" / "prompts.jsonl"
    write_prompts_jsonl(prompts, out)
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert rows == [p.to_json() for p in prompts]
    assert "Ünïcödé" in out.read_text(encoding="utf-8")
    assert [p.name for p in out.parent.iterdir()] == ["prompts.jsonl"], "no temp files left behind"


def test_ids_come_from_the_text_and_colliding_ids_take_a_content_suffix(tmp_path, monkeypatch):
    """A blank line on top or another order changes no id (ids held the line number: issue
    19.9); prompts whose short ids agree both take the longer id, whatever their order."""
    from stages import benchmarks

    monkeypatch.setattr(benchmarks, "ID_DIGITS", 1)      # 16 possible short ids: collisions
    lines = [f"prompt number {i}" for i in range(20)]
    first = {p.prompt: p.id for p in load(write(tmp_path / "a.txt", "\n".join(lines) + "\n"))}
    moved = {p.prompt: p.id for p in load(write(tmp_path / "b.txt", "\n\n" + "\n".join(lines[::-1])))}
    assert first == moved and len(set(first.values())) == len(lines)
    longer = [i for i in first.values() if "-" in i]
    assert longer and all(len(i.split("-")[0]) == 1 for i in longer)


def test_the_demo_is_five_short_concrete_partiprompts_picked_by_content(tmp_path):
    """The default demo took the file's first five lines ("bond", "element": one abstract
    word each, nothing for upsampling to show; issue 22.7). It is five prompts with a count
    or a spatial relation, picked by content id: lines added to the file change nothing."""
    demo = load_benchmark("demo", base_dir=tmp_path)
    assert len(demo) == 5 and all(len(p.prompt.split()) <= 9 for p in demo)
    concrete = ("two", "three", "four", "next to", "left of", "above", "on a")
    assert all(any(word in p.prompt for word in concrete) for p in demo)
    parti = {p.id: p for p in load_benchmark("parti", base_dir=tmp_path)}
    assert all(parti[p.id] == p for p in demo)
    (tmp_path / "data").mkdir()
    original = (ROOT / "data" / "PartiPrompts.tsv").read_text(encoding="utf-8")
    header, _, rest = original.partition("\n")
    (tmp_path / "data" / "PartiPrompts.tsv").write_text(header + "\n\na new first prompt\tX\tY\t\n" + rest,
                                                        encoding="utf-8")
    assert load_benchmark("demo", base_dir=tmp_path) == demo
