"""Nothing mixed up (issue 19, caption side): a swapped image is seen, an export never
pairs a new image with an old caption, a renamed shard leaves no Parquet behind, dry runs
predict what runs do, and every WebDataset sample ends captioned or failed. CLI runs in
temp folders against the local OpenAI-compatible server, real photos."""

from __future__ import annotations

import json
import os
import tarfile
from pathlib import Path

import pytest
from fakes import FakeOpenAI
from PIL import Image
from test_inputs_cli import reply, run  # the same scripted answers and CLI runner
from test_webdataset import add, photo_bytes

import caption
from stages.store import sha256_file


@pytest.fixture
def server():
    with FakeOpenAI(reply) as s:
        yield s


def picture(name: str, path: Path) -> None:
    from skimage import data

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(getattr(data, name)()).convert("RGB").resize((160, 120)).save(path)


def vision_calls(server: FakeOpenAI) -> int:
    return sum(isinstance(r["messages"][-1]["content"], list) for r in server.chat_requests)


def test_an_image_swapped_with_the_same_size_and_mtime_is_seen(project, server, tmp_path):
    folder = project / "swap"
    picture("coffee", folder / "cup.bmp")                   # BMP: the size is the dimensions'
    (folder / "cup.txt").write_text("coffee_cup, table")
    picture("astronaut", tmp_path / "other.bmp")
    assert run(project, server, str(folder)) == 0
    before = vision_calls(server)
    st = os.stat(folder / "cup.bmp")
    assert os.path.getsize(tmp_path / "other.bmp") == st.st_size
    os.utime(tmp_path / "other.bmp", ns=(st.st_atime_ns, st.st_mtime_ns))
    os.replace(tmp_path / "other.bmp", folder / "cup.bmp")     # as an archive tool swaps it
    assert run(project, server, str(folder)) == 0
    assert vision_calls(server) == before + 1                  # the new picture was looked at
    record = json.loads((project / "cache" / "interrogate" / "cup.json").read_text())
    assert record["image_sha256"] == sha256_file(folder / "cup.bmp")
    meta = json.loads((project / "swap-captions" / "cup.json").read_text())
    assert meta["image_sha256"] == sha256_file(folder / "cup.bmp")


def encoded(i: int, fmt: str) -> bytes:
    import io

    out = io.BytesIO()
    Image.open(io.BytesIO(photo_bytes(i))).save(out, fmt)
    return out.getvalue()


def test_a_shard_mixing_jpg_png_webp_and_a_dotted_name_ends_every_sample(project, server, capsys):
    import pyarrow as pa
    import pyarrow.parquet as pq

    data = project / "mixed"
    data.mkdir()
    with tarfile.open(data / "00000.tar", "w") as tar:
        for key, ext, fmt in (("a", "jpg", "JPEG"), ("b", "png", "PNG"), ("c", "webp", "WEBP"),
                              (".d", "jpg", "JPEG")):
            add(tar, f"{key}.{ext}", encoded(len(key), fmt))
            add(tar, f"{key}.txt", b"coffee_cup, table")
    pq.write_table(pa.table({"key": ["t1"], "png": [encoded(5, "PNG")], "txt": ["cat"]}),
                   data / "table.parquet")
    assert run(project, server, str(data)) == 1                # .d fails, with its reason
    out = capsys.readouterr().out
    assert "FAILED 00000/~%2Ed: .d.jpg, .d.txt in 00000.tar: a name that starts with a dot" in out
    captions = project / "mixed-captions"
    shard = pq.read_table(captions / "00000.parquet").to_pylist()
    assert sorted(r["key"] for r in shard) == ["a", "b", "c"]
    assert [r["key"] for r in pq.read_table(captions / "table.parquet").to_pylist()] == ["t1"]
    assert "interpret: 4 ok, 0 reused, 1 failed" in out


def test_image_column_alternatives_are_checked_at_load(project, capsys):
    argv = ["--config", str(project / "config.ini"), "--dry-run", "--set",
            "input.image_column=jpg;txt"]
    assert caption.main(argv) == 2
    assert "input.image_column = 'jpg;txt': the same as input.tags_column" in capsys.readouterr().err


def test_a_renamed_shard_leaves_no_parquet_behind(project, server, capsys):
    import datasets

    data = project / "shards"
    data.mkdir()
    for shard in ("00000", "00005"):
        with tarfile.open(data / f"{shard}.tar", "w") as tar:
            for i in range(2):
                add(tar, f"k{i}.jpg", photo_bytes(i + int(shard)))
                add(tar, f"k{i}.txt", b"coffee_cup, table")
    assert run(project, server, str(data)) == 0
    os.replace(data / "00000.tar", data / "00001.tar")
    assert run(project, server, str(data)) == 0
    assert "1 shard Parquet files removed, their shards are gone from the input: 00000" \
        in capsys.readouterr().out
    captions = project / "shards-captions"
    assert sorted(p.name for p in captions.glob("*.parquet")) == ["00001.parquet", "00005.parquet"]
    rows = datasets.load_dataset("parquet", data_files=str(captions / "*.parquet"))["train"]
    assert sorted(rows["id"]) == ["00001/k0", "00001/k1", "00005/k0", "00005/k1"]
    # a narrower input into the same folder keeps the Parquet of a shard that still exists
    assert run(project, server, "--set", f"paths.images={data / '00001.tar'}",
               "--set", f"paths.captions={captions}") == 0
    assert sorted(p.name for p in captions.glob("*.parquet")) == ["00001.parquet", "00005.parquet"]


def test_export_leaves_out_captions_older_than_their_image_tags_or_a_failed_interpret(
        project, server, capsys):
    from fakes import Fault

    folder = project / "photos"
    for name, stem, tags in (("chelsea", "cat", "cat, animal"), ("coffee", "cup", "coffee_cup"),
                             ("rocket", "rocket", "rocket, sky"), ("camera", "man", "1boy")):
        picture(name, folder / f"{stem}.jpg")
        (folder / f"{stem}.txt").write_text(tags)
    assert run(project, server, str(folder)) == 0
    picture("astronaut", folder / "cup.jpg")                   # a new picture, same name
    (folder / "rocket.txt").write_text("flower, orange")        # new tags
    out = project / "out"
    capsys.readouterr()
    assert run(project, server, str(folder), "--only", "tags", "--export", "hf", str(out)) == 1
    text = capsys.readouterr().out
    assert "SKIPPED cup: the image changed after its caption was written" in text
    assert "SKIPPED rocket: the tags changed after its caption was written" in text
    exported = [json.loads(line)["id"] for line in
                (out / "imagefolder" / "metadata.jsonl").read_text().splitlines()]
    assert exported == ["cat", "man"]

    # interpret fails for man now (another temperature makes new calls; the server refuses):
    # its old caption is not exported as if it were current
    picture("coffee", folder / "cup.jpg")
    (folder / "rocket.txt").write_text("rocket, sky")
    last = lambda r: r["messages"][-1]["content"]                      # noqa: E731
    server.fault_when = lambda r: (Fault("status", status=400) if isinstance(last(r), str)
                                   and "boy" in last(r) else None)
    assert run(project, server, str(folder), "--export", "hf", str(out),
               sets=("llm.temperature=0.3", "llm.retries=0")) == 1
    text = capsys.readouterr().out
    assert "FAILED man" in text and "SKIPPED man: interpret failed for it in the last run" in text
    exported = [json.loads(line)["id"] for line in
                (out / "imagefolder" / "metadata.jsonl").read_text().splitlines()]
    assert exported == ["cat", "cup", "rocket"]


def failures(text: str, word: str) -> set[tuple[str, str]]:
    """(stage, id) of the FAILED / WOULD FAIL lines of a summary."""
    found, stage = set(), ""
    for line in text.splitlines():
        if not line.startswith(" "):
            stage = line.partition(":")[0]
        elif line.strip().startswith(word):
            found.add((stage, line.strip()[len(word):].partition(":")[0].strip()))
    return found


def test_a_dry_run_predicts_the_runs_failures(project, server, capsys):
    folder = project / "photos"
    picture("coffee", folder / "cup.jpg")
    (folder / "cup.txt").write_text("coffee_cup, table")
    assert run(project, server, str(folder)) == 0
    picture("astronaut", folder / "cup.jpg")        # its vision answer is now of an earlier image
    (folder / "broken.jpg").write_bytes(b"not an image at all")
    (folder / "broken.txt").write_text("cat")
    capsys.readouterr()
    assert run(project, server, str(folder), "--dry-run") == 1
    plan = capsys.readouterr().out
    assert run(project, server, str(folder)) == 1
    real = capsys.readouterr().out
    expected = {("interrogate", "broken"), ("interpret", "broken")}
    assert failures(plan, "WOULD FAIL") == expected, plan
    assert failures(real, "FAILED") == expected, real
    assert "interpret: would process 1" in plan and "interpret: 1 ok" in real
