"""Which input a run works on: `caption.py FOLDER_OR_SHARDS` and `refine.py PROMPT_FILE`,
where a new input's captions go, and a captions folder that refuses another input's
captions (issues 19.1 and 22.1). Real CLI runs in temp folders against the local
OpenAI-compatible server, real photos."""

from __future__ import annotations

import json
import shutil
import tarfile
from pathlib import Path

import pytest
from conftest import llm_overrides
from fakes import FakeOpenAI
from PIL import Image
from test_webdataset import add, photo_bytes

import caption
import refine


def photo(name: str, folder: Path, stem: str, tags: str) -> None:
    from skimage import data

    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(getattr(data, name)()).convert("RGB").resize((160, 120)).save(folder / f"{stem}.jpg")
    (folder / f"{stem}.txt").write_text(tags, encoding="utf-8")


def reply(request: dict) -> str:
    if isinstance(request["messages"][-1]["content"], list):
        return "A photo of a cup or a flower on a plain background."
    return "A picture of the subject on a plain background."


@pytest.fixture
def server():
    with FakeOpenAI(reply) as s:
        yield s


def run(project: Path, server: FakeOpenAI, *args: str, sets: tuple[str, ...] = ()) -> int:
    argv = ["--config", str(project / "config.ini"), "--quiet", *args]
    for item in llm_overrides(server.url, **{"vision.backend": "openai"}) + list(sets):
        argv += ["--set", item]
    return caption.main(argv)


@pytest.fixture
def two_inputs(project: Path) -> tuple[Path, Path]:
    """Two folders with the same file name, other pictures: a's cup.jpg is a coffee."""
    a, b = project / "a", project / "b"
    photo("coffee", a, "cup", "coffee_cup, table")
    photo("astronaut", b, "cup", "flower, orange")
    return a, b


def test_a_captions_folder_refuses_another_inputs_captions(project, server, two_inputs, capsys):
    a, b = two_inputs
    captions = project / "captions"
    assert run(project, server, sets=(f"paths.images={a}",)) == 0
    first = (captions / "cup.txt").read_text()
    page = (captions / "index.html").read_text()
    assert json.loads((captions / ".tagcap-input.json").read_text())["input"] == str(a.resolve())
    capsys.readouterr()

    assert run(project, server, sets=(f"paths.images={b}",)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(a.resolve()) in err and "--adopt-captions" in err
    assert (captions / "cup.txt").read_text() == first          # nothing of b written
    assert (captions / "index.html").read_text() == page        # the page still shows a only

    assert run(project, server, "--adopt-captions", sets=(f"paths.images={b}",)) == 0
    assert (captions / "cup.txt").read_text() != first
    assert json.loads((captions / ".tagcap-input.json").read_text())["input"] == str(b.resolve())


def test_a_copy_or_a_move_of_the_input_keeps_its_captions_folder(project, server, two_inputs, capsys):
    a, _ = two_inputs
    assert run(project, server, sets=(f"paths.images={a}",)) == 0
    copy = project / "copy of a"
    shutil.copytree(a, copy)
    calls = len(server.chat_requests)
    capsys.readouterr()
    assert run(project, server, sets=(f"paths.images={copy}",)) == 0
    out = capsys.readouterr().out
    assert "interpret: 0 ok, 1 reused" in out and "same images" in out
    assert len(server.chat_requests) == calls                  # reused, no call


def test_a_folder_with_spaces_as_the_argument_gets_its_own_captions_folder(project, server, capsys):
    folder = project / "my photos"
    photo("coffee", folder, "cup", "coffee_cup, table")
    photo("chelsea", folder, "cat", "cat, animal")
    assert run(project, server, str(folder)) == 0
    out = capsys.readouterr().out.strip().splitlines()
    own = project / "my photos-captions"
    assert sorted(p.name for p in own.glob("*.txt")) == ["cat.txt", "cup.txt"]
    assert (own / "index.html").exists()
    assert not (project / "captions").exists()                 # paths.captions is not touched
    assert any(line.startswith(f"captions: {own}") for line in out[-2:])


def test_the_configs_own_folder_as_the_argument_writes_to_paths_captions(project, server, capsys):
    assert run(project, server, str(project / "images"), "--only", "tags,interrogate") == 0
    assert (project / "captions" / ".tagcap-input.json").exists()
    assert not (project / "images-captions").exists()


def test_a_shard_pattern_as_the_argument(project, server, capsys):
    shards = project / "shards"
    shards.mkdir()
    for s in range(2):
        with tarfile.open(shards / f"{s:05d}.tar", "w") as tar:
            add(tar, f"k{s}.jpg", photo_bytes(s))
            add(tar, f"k{s}.txt", b"coffee_cup, table")
    assert run(project, server, str(shards / "*.tar")) == 0
    own = project / "shards-captions"
    assert sorted(p.name for p in own.glob("*.parquet")) == ["00000.parquet", "00001.parquet"]
    assert f"captions: {own}" in capsys.readouterr().out


def test_refine_takes_a_prompt_file(project, server, tmp_path):
    prompts = tmp_path / "my prompts.txt"
    prompts.write_text("a red cube on a blue sphere\nthree cats on a sofa\n", encoding="utf-8")
    argv = ["--config", str(project / "config.ini"), "--quiet", str(prompts), "--only", "upsample"]
    for item in llm_overrides(server.url):
        argv += ["--set", item]
    assert refine.main(argv) == 0
    rows = [json.loads(line) for line in
            (project / "runs" / "default" / "prompts.jsonl").read_text().splitlines()]
    assert [r["prompt"] for r in rows] == ["a red cube on a blue sphere", "three cats on a sofa"]


def test_help_shows_the_first_commands_and_the_rule(capsys):
    with pytest.raises(SystemExit):
        caption.main(["--help"])
    text = capsys.readouterr().out
    assert "FOLDER_OR_SHARDS" in text and "FOLDER-captions/ beside it" in text
    assert text.count("python caption.py") >= 3
    with pytest.raises(SystemExit):
        refine.main(["--help"])
    text = capsys.readouterr().out
    assert "PROMPT_FILE" in text and text.count("python refine.py") >= 3


@pytest.mark.parametrize("name", ["photos [2023]", "raw {old}"])
def test_a_folder_named_with_brackets_is_a_folder_not_a_pattern(project, server, capsys, name):
    """A folder that exists is the folder, whatever its name holds: `photos [2023]` was read
    as a glob (`[2023]` a character class) and refused as "no .tar shard or .parquet table"."""
    folder = project / name
    photo("coffee", folder, "cup", "coffee_cup, table")
    assert run(project, server, str(folder), "--only", "tags,interrogate") == 0
    own = project / f"{name}-captions"
    assert json.loads((own / ".tagcap-input.json").read_text())["input"] == str(folder)
    assert f"captions: {own}" in capsys.readouterr().out


def test_a_folder_named_like_an_option_is_printed_so_that_it_reads_back(project, server, capsys):
    """`caption.py -- -pics` printed "python caption.py -pics ... --review", which argparse
    refuses ("unrecognized arguments: -pics")."""
    import shlex

    photo("coffee", project / "-pics", "cup", "coffee_cup, table")
    argv = ["--config", str(project / "config.ini"), "--quiet", "--only", "tags,interpret"]
    for item in llm_overrides(server.url, **{"vision.backend": "openai"}):
        argv += ["--set", item]
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(project)
        assert caption.main([*argv, "--", "-pics"]) == 0
        out = capsys.readouterr().out
        hint = next(line for line in out.splitlines() if "--review" in line)
        command = shlex.split(hint.split(" to look at: ", 1)[1].split(" (accept")[0])
        assert command[:2] == ["python", "caption.py"]
        again = [arg for arg in command[2:] if arg != "--review"]
        assert caption.main([*again, "--dry-run", "--only", "tags"]) == 0
        assert f"captions: {project / '-pics-captions'}" in capsys.readouterr().out


def test_the_refusals_suggested_set_reads_back_for_a_path_with_spaces(project, server, capsys):
    """The refusal's "--set paths.captions=/x/b photos-captions" was not quoted: pasted into
    a shell it set paths.captions to "/x/b" and passed "photos-captions" as the input."""
    import shlex

    a, b = project / "a", project / "b photos"
    photo("coffee", a, "cup", "coffee_cup, table")
    photo("astronaut", b, "cup", "flower, orange")
    assert run(project, server, "--only", "tags", sets=(f"paths.images={a}",)) == 0
    capsys.readouterr()
    assert run(project, server, "--only", "tags", sets=(f"paths.images={b}",)) == 2
    err = capsys.readouterr().err
    said = shlex.split(err.split(" with ", 1)[1].split(", or pass", 1)[0])
    assert said == ["--set", f"paths.captions={project / 'b photos-captions'}"]


def test_a_captions_folder_is_refused_as_the_input(project, server, capsys):
    """`caption.py captions` found "no tags" and made captions-captions/ (a marker, a page):
    a captions folder is never read as input, so naming it is a mistake said in one line."""
    assert run(project, server, "--only", "tags") == 0
    capsys.readouterr()
    assert run(project, server, str(project / "captions"), "--only", "tags") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "captions folder" in err and str(project / "images") in err
    assert not (project / "captions-captions").exists()


def test_captions_in_the_images_folder_itself_are_refused(project, server, capsys):
    """paths.captions = paths.images put the marker, thumbnails and index.html among the
    pictures (the page then counted 12 images of 6, thumbnails included)."""
    assert run(project, server, "--only", "tags", sets=(f"paths.captions={project / 'images'}",)) == 2
    err = capsys.readouterr().err
    assert "interpret.write_beside_images" in err
    assert not (project / "images" / ".tagcap-input.json").exists()


def test_the_review_command_repeats_the_input_settings_it_reads_with():
    """The printed `caption.py ... --review` repeated only paths.* sets: a table read with
    `--set input.image_column=image` was then listed with the default columns, its samples
    failed, and the page showed none of them."""
    from argparse import Namespace

    args = Namespace(input="table.parquet", config=None,
                     user_sets=["input.image_column=image", "llm.base_url=http://x/v1",
                                "paths.cache=c", "Input.key_column=name"])
    said = caption.where(args)
    assert "--set input.image_column=image" in said and "--set Input.key_column=name" in said
    assert "--set paths.cache=c" in said and "llm.base_url" not in said


def test_a_folder_whose_parent_cannot_be_written_is_one_line(project, server, capsys, monkeypatch):
    """FOLDER-captions/ goes beside the folder: where that is read-only (a mount, another
    user's folder) the run ended in a PermissionError traceback. (Simulated: tests run as
    root, who may write anywhere.)"""
    import errno

    import stages.io.owner as owner

    def refuse(path, *args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.setattr(owner, "atomic_write_json", refuse)
    folder = project / "photos"
    photo("coffee", folder, "cup", "coffee_cup, table")
    assert run(project, server, str(folder), "--only", "tags") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Permission denied" in err and "paths.captions" in err


@pytest.mark.parametrize("folder, pattern", [("data [v2]", "*.tar"), ("raw {old}", "{00000..00001}.tar")])
def test_a_shard_pattern_under_a_folder_named_with_brackets(project, server, capsys, folder, pattern):
    """The folder part of a pattern is taken as it is: `data [v2]/*.tar` globbed `[v2]` as a
    character class, and `raw {old}/...` expanded `{old}` as a brace list (no shard found)."""
    shards = project / folder
    shards.mkdir()
    for s in range(2):
        with tarfile.open(shards / f"{s:05d}.tar", "w") as tar:
            add(tar, f"k{s}.jpg", photo_bytes(s))
            add(tar, f"k{s}.txt", b"coffee_cup, table")
    assert run(project, server, str(shards / pattern), "--only", "tags,interpret") == 0
    own = project / f"{folder}-captions"
    assert sorted(p.name for p in own.glob("*.parquet")) == ["00000.parquet", "00001.parquet"]


def test_captions_made_without_a_vision_answer_say_which_flag_left_it_out(project, server, capsys):
    """`caption.py NEW --only tags,interpret` captioned from the tags alone (no interrogate
    answer exists yet) and the summary said nothing of it."""
    folder = project / "photos"
    photo("coffee", folder, "cup", "coffee_cup, table")
    assert run(project, server, str(folder), "--only", "tags,interpret") == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("interpret:"))
    assert "1 captions made without a vision answer (--only tags,interpret leaves out the " \
           "interrogate stage)" in line
    assert "tags never looked up" not in line                 # the tags stage ran
    assert run(project, server, str(folder), "--only", "interpret",
               sets=("interpret.overwrite=true", "paths.cache=" + str(project / "fresh"))) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("interpret:"))
    assert "1 captions made with tags never looked up, so without their summaries (--only " \
           "interpret leaves out the tags stage)" in line
    other = project / "others"
    photo("astronaut", other, "face", "1girl, smile")
    assert run(project, server, str(other)) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("interpret:"))
    assert "without a vision answer" not in line and "never looked up" not in line


def test_the_refusal_never_suggests_the_folder_it_refuses(project, server, capsys):
    """b/photos-captions copied from a/photos (other pictures): `caption.py b/photos` is
    refused, and suggested "--set paths.captions=b/photos-captions", the very folder refused."""
    a, b = project / "a" / "photos", project / "b" / "photos"
    photo("coffee", a, "cup", "coffee_cup, table")
    photo("astronaut", b, "cup", "flower, orange")
    assert run(project, server, str(a), "--only", "tags") == 0
    shutil.copytree(project / "a" / "photos-captions", project / "b" / "photos-captions")
    capsys.readouterr()
    assert run(project, server, str(b), "--only", "tags") == 2
    err = capsys.readouterr().err
    assert "--adopt-captions" in err and f"paths.captions={project / 'b' / 'photos-captions'}" not in err


def test_a_moved_folder_named_with_brackets_is_a_move(project, server, capsys):
    """The old path of a moved `photos [1]` is gone, and a gone path with [ ] read as a
    pattern: the move was taken for a copy, the marker kept the old path, and a new folder
    made there later was the owner by its path."""
    old, moved = project / "photos [1]", project / "moved [1]"
    photo("coffee", old, "cup", "coffee_cup, table")
    assert run(project, server, "--only", "tags", sets=(f"paths.images={old}",)) == 0
    old.rename(moved)
    assert run(project, server, "--only", "tags", sets=(f"paths.images={moved}",)) == 0
    assert "moved from" in capsys.readouterr().out
    assert json.loads((project / "captions" / ".tagcap-input.json").read_text())["input"] == str(moved)
    photo("astronaut", old, "cup", "flower, orange")              # another folder, the old name
    assert run(project, server, "--only", "tags", sets=(f"paths.images={old}",)) == 2


def test_one_shard_file_named_with_brackets_is_that_file(project, server, capsys):
    """A shard file `take [1].tar` named alone was globbed (`[1]` a character class) and
    not found."""
    shard = project / "take [1].tar"
    with tarfile.open(shard, "w") as tar:
        add(tar, "k0.jpg", photo_bytes(0))
        add(tar, "k0.txt", b"coffee_cup, table")
    assert run(project, server, str(shard), "--only", "tags,interpret") == 0
    assert (project / "take [1]-captions" / "take [1].parquet").exists()


def test_review_before_any_caption_names_the_command_for_this_input(project, server, capsys):
    """`caption.py photos --review` before captioning said "run caption.py first": that
    captions the config's images/, not photos."""
    folder = project / "photos"
    photo("coffee", folder, "cup", "coffee_cup, table")
    assert run(project, server, str(folder), "--review", "--no-browser") == 2
    err = capsys.readouterr().err
    assert f"python caption.py {folder}" in err, err
