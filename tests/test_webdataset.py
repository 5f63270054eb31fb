"""caption.py over WebDataset shards and Parquet tables in img2dataset's layout: shards
written here with tarfile, tables with pyarrow, real photos, the local OpenAI-compatible
server. Every valid sample is captioned once, into one Parquet per input shard; a rerun
makes no call; bad input fails only itself; a killed run resumes inside a shard; --shard
splits by shard."""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import subprocess
import sys
import tarfile
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import llm_overrides
from fakes import FakeOpenAI
from PIL import Image

import caption
from stages.io.samples import InputColumns, dataset_items, expand_braces, safe_key

ROOT = Path(__file__).resolve().parent.parent
PHOTOS = ("chelsea", "coffee", "astronaut", "rocket", "camera")
TAGS = ("cat, animal, highres", "coffee_cup, table", "1girl, long_hair, rating:safe",
        "rocket, sky", "1boy, camera")


def photo_bytes(i: int) -> bytes:
    from skimage import data

    img = Image.fromarray(getattr(data, PHOTOS[i % len(PHOTOS)])()).convert("RGB")
    img = img.resize((40 + i, 48))                      # every sample's bytes differ
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=85)
    return buf.getvalue()


def add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def write_shard(path: Path, first: int, n: int, extra=None) -> list[str]:
    """KEY.jpg, KEY.txt, KEY.json per sample, as img2dataset writes them; returns the keys."""
    keys = []
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tar:
        for i in range(first, first + n):
            key = f"{i:09d}"
            keys.append(key)
            add(tar, f"{key}.jpg", photo_bytes(i))
            add(tar, f"{key}.txt", TAGS[i % len(TAGS)].encode())
            add(tar, f"{key}.json", json.dumps({"key": key, "status": "success",
                                                "tags": TAGS[i % len(TAGS)].split(", ")}).encode())
        if extra:
            extra(tar)
    return keys


def write_table(path: Path, first: int, n: int) -> list[str]:
    keys = [f"t{i:08d}" for i in range(first, first + n)]
    table = pa.table({"key": keys, "jpg": [photo_bytes(i) for i in range(first, first + n)],
                      "txt": [TAGS[i % len(TAGS)] for i in range(first, first + n)],
                      "url": [f"https://example.invalid/{k}.jpg" for k in keys]})
    pq.write_table(table, path, row_group_size=4)
    return keys


def reply(request: dict) -> str:
    if isinstance(request["messages"][-1]["content"], list):
        return "A photo of an animal, a cup, a person or a rocket."
    return "A picture of the subject on a plain background."


def run(images: str, root: Path, server: FakeOpenAI, *extra: str, flags: tuple = ()) -> int:
    args = ["--config", str(ROOT / "config.ini"), "--quiet", *flags]
    sets = llm_overrides(server.url, **{
        "vision.backend": "openai", "paths.images": images, "paths.captions": str(root / "captions"),
        "paths.cache": str(root / "cache"), "tags.wiki_file": str(ROOT / "data" / "wiki.json")})
    for item in sets + list(extra):
        args += ["--set", item]
    return caption.main(args)


def vision_images(server: FakeOpenAI) -> Counter:
    """How many times each distinct image was sent to the vision model."""
    sent = Counter()
    for request in server.chat_requests:
        content = request["messages"][-1]["content"]
        if isinstance(content, list):
            sent[content[1]["image_url"]["url"]] += 1
    return sent


def rows(captions: Path) -> dict[str, list[dict]]:
    return {p.relative_to(captions).with_suffix("").as_posix(): pq.read_table(p).to_pylist()
            for p in sorted(captions.rglob("*.parquet"))}


@pytest.fixture
def dataset(tmp_path: Path) -> tuple[Path, dict[str, list[str]]]:
    """Three shards and one Parquet table in one folder: {shard name: keys}."""
    data = tmp_path / "data"
    expected = {f"{s:05d}": write_shard(data / f"{s:05d}.tar", s * 10, 4) for s in range(3)}
    expected["table"] = write_table(data / "table.parquet", 100, 6)
    return data, expected


def test_three_shards_and_a_table_caption_every_sample_once(dataset, tmp_path, capsys):
    import datasets

    data, expected = dataset
    with FakeOpenAI(reply) as server:
        assert run(str(data), tmp_path, server) == 0
        out = capsys.readouterr().out
        assert "4 shard Parquet files written" in out
        sent = vision_images(server)
        assert len(sent) == sum(map(len, expected.values())) and set(sent.values()) == {1}
        calls = len(server.chat_requests)
        written = rows(tmp_path / "captions")
        assert {unit: [r["key"] for r in got] for unit, got in written.items()} == expected
        for unit, got in written.items():
            for row in got:
                assert row["id"] == f"{unit}/{row['key']}" and row["caption"].strip()
                assert row["tags"] and "highres" not in row["tags"] and "rating:safe" not in row["tags"]
                provenance = json.loads(row["provenance"])
                assert provenance["key"] and provenance["image_sha256"] and row["score"] is not None
        assert not list((tmp_path / "captions").glob("*.txt"))          # no loose files
        mtimes = {p: p.stat().st_mtime_ns for p in (tmp_path / "captions").glob("*.parquet")}
        # A rerun makes no call and leaves the Parquet files as they are.
        assert run(str(data), tmp_path, server) == 0
        assert len(server.chat_requests) == calls
        assert "0 shard Parquet files written, 4 unchanged" in capsys.readouterr().out
        assert mtimes == {p: p.stat().st_mtime_ns for p in (tmp_path / "captions").glob("*.parquet")}
        # A brace pattern naming two of the shards: the same ids, all reused.
        assert run(str(data / "{00000,00002}.tar"), tmp_path, server) == 0
        assert len(server.chat_requests) == calls
        assert "interpret: 0 ok, 8 reused" in capsys.readouterr().out
    loaded = datasets.load_dataset("parquet", data_files=str(tmp_path / "captions" / "*.parquet"),
                                   split="train", cache_dir=str(tmp_path / "hf"))
    assert len(loaded) == sum(map(len, expected.values()))
    assert {"key", "caption", "tags", "provenance", "score", "flags"} <= set(loaded.column_names)
    # --export hf reads the captions back with the images from the shards.
    with FakeOpenAI(reply) as server:
        assert run(str(data), tmp_path, server, flags=("--export", "hf", str(tmp_path / "out"))) == 0
        assert not server.chat_requests
    saved = datasets.load_from_disk(str(tmp_path / "out" / "dataset"))
    assert sorted(saved["key"]) == sorted(k for keys in expected.values() for k in keys)
    assert saved[0]["image"].size[1] == 48


def test_bad_input_fails_only_itself(tmp_path, capsys):
    data = tmp_path / "data"

    def oddities(tar):
        add(tar, "notimage.jpg", b"this is text, not a picture")
        add(tar, "notimage.txt", b"cat")
        add(tar, "twice.jpg", photo_bytes(1))
        add(tar, "twice.txt", b"cup")
        add(tar, "twice.jpg", photo_bytes(2))
        add(tar, "noimage.txt", b"cat")
        add(tar, "badtags.jpg", photo_bytes(3))
        add(tar, "badtags.txt", b"caf\xe9")

    good = write_shard(data / "00000.tar", 0, 3, extra=oddities)
    cut_keys = write_shard(data / "00001.tar", 10, 4)
    whole = (data / "00001.tar").read_bytes()
    (data / "00001.tar").write_bytes(whole[: len(whole) // 2])          # cut mid-shard
    table = write_table(data / "table.parquet", 20, 3)
    pq.write_table(pa.table({"key": ["a"], "image": [photo_bytes(0)]}), data / "nojpg.parquet")
    pq.write_table(pa.table({"key": ["x", "y", "x"], "jpg": [photo_bytes(i) for i in range(3)],
                             "txt": ["cat"] * 3}), data / "dupes.parquet")
    with FakeOpenAI(reply) as server:
        assert run(str(data), tmp_path, server) == 1
    out = capsys.readouterr().out
    summary = json.loads((tmp_path / "cache" / "summary-caption.json").read_text())
    failed = {f["id"]: f["reason"] for s in summary["stages"] if s["name"] == "interpret"
              for f in s["failed"]}
    assert "not an image" in failed.pop("00000/notimage")
    assert "duplicate key" in failed.pop("00000/twice")
    assert "no noimage.jpg" in failed.pop("00000/noimage")
    assert "not UTF-8" in failed.pop("00000/badtags")
    assert "truncated" in failed.pop("00001.tar")
    assert "input.image_column = jpg" in failed.pop("nojpg.parquet")
    assert "duplicate key" in failed.pop("dupes/x")
    assert not failed, failed
    assert "FAILED 00001.tar: truncated" in out
    written = rows(tmp_path / "captions")
    assert [r["key"] for r in written["00000"]] == good
    kept = [r["key"] for r in written["00001"]]
    assert kept and kept == cut_keys[:len(kept)] and len(kept) < len(cut_keys)
    assert [r["key"] for r in written["table"]] == table
    assert [r["key"] for r in written["dupes"]] == ["y"]
    assert "nojpg" not in written


def test_killed_mid_shard_resumes_inside_it(tmp_path):
    data = tmp_path / "data"
    keys = write_shard(data / "00000.tar", 0, 10)
    with FakeOpenAI(reply) as server:
        args = [sys.executable, str(ROOT / "caption.py"), "--quiet", "--config", str(ROOT / "config.ini")]
        for item in llm_overrides(server.url, **{
                "vision.backend": "openai", "paths.images": str(data / "00000.tar"),
                "paths.captions": str(tmp_path / "captions"), "paths.cache": str(tmp_path / "cache"),
                "tags.wiki_file": str(ROOT / "data" / "wiki.json"), "llm.concurrency": "1"}):
            args += ["--set", item]
        killed = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=240,
                                env={**os.environ, "TAGCAP_KILL_AT": "interpret.sample_recorded"})
        assert killed.returncode == -9, killed.stderr
        records = list((tmp_path / "cache" / "interpret").rglob("*.json"))
        assert len(records) == 1
        assert not (tmp_path / "captions" / "00000.parquet").exists()   # the shard is not done
        before = len(server.chat_requests)
        resumed = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=240)
        assert resumed.returncode == 0, resumed.stdout + resumed.stderr
        assert "interpret: 9 ok, 1 reused" in resumed.stdout
        assert len(vision_images(server)) == 10 and set(vision_images(server).values()) == {1}
        assert len(server.chat_requests) > before
    assert [r["key"] for r in rows(tmp_path / "captions")["00000"]] == keys


def test_a_complete_shard_is_written_before_the_run_ends(tmp_path):
    """Killed right after the first shard's Parquet is written: it is there and whole, the
    other shard's is not; the rerun writes the other and leaves the first as it is."""
    data = tmp_path / "data"
    expected = {f"{s:05d}": write_shard(data / f"{s:05d}.tar", s * 10, 3) for s in range(2)}
    with FakeOpenAI(reply) as server:
        args = [sys.executable, str(ROOT / "caption.py"), "--quiet", "--config", str(ROOT / "config.ini")]
        for item in llm_overrides(server.url, **{
                "vision.backend": "openai", "paths.images": str(data),
                "paths.captions": str(tmp_path / "captions"), "paths.cache": str(tmp_path / "cache"),
                "tags.wiki_file": str(ROOT / "data" / "wiki.json"), "llm.concurrency": "1"}):
            args += ["--set", item]
        killed = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=240,
                                env={**os.environ, "TAGCAP_KILL_AT": "interpret.shard_written"})
        assert killed.returncode == -9, killed.stderr
        written = {u: [r["key"] for r in got] for u, got in rows(tmp_path / "captions").items()}
        assert len(written) == 1                         # whichever finished first, whole
        (unit, keys), = written.items()
        assert keys == expected[unit]
        first = (tmp_path / "captions" / f"{unit}.parquet").stat().st_mtime_ns
        resumed = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=240)
        assert resumed.returncode == 0, resumed.stdout + resumed.stderr
        assert "1 shard Parquet files written, 1 unchanged" in resumed.stdout
    assert {u: [r["key"] for r in got] for u, got in rows(tmp_path / "captions").items()} == expected
    assert (tmp_path / "captions" / f"{unit}.parquet").stat().st_mtime_ns == first
    # A plan writes nothing, even for a shard whose samples are all captioned.
    (tmp_path / "captions" / f"{unit}.parquet").unlink()
    with FakeOpenAI(reply) as server:
        assert run(str(data), tmp_path, server, flags=("--dry-run",)) == 0
        assert not server.chat_requests
    assert not (tmp_path / "captions" / f"{unit}.parquet").exists()


def test_shard_split_has_no_gap_and_no_overlap(dataset, tmp_path, capsys):
    data, expected = dataset
    seen: list[str] = []
    with FakeOpenAI(reply) as server:
        for part in ("0/2", "1/2"):
            before = set(rows(tmp_path / "captions"))
            assert run(str(data), tmp_path, server, flags=("--shard", part)) == 0
            seen += sorted(set(rows(tmp_path / "captions")) - before)
        sent = vision_images(server)
    assert sorted(seen) == sorted(expected)                      # every shard once, whole
    assert set(sent.values()) == {1} and len(sent) == sum(map(len, expected.values()))
    out = capsys.readouterr().out
    oks = [int(line.split()[1]) for line in out.splitlines() if line.startswith("interpret:")]
    assert sum(oks) == sum(map(len, expected.values()))


def test_listing_keys_tags_from_json_and_patterns(tmp_path):
    write_shard(tmp_path / "s" / "00000.tar", 0, 2)
    items = list(dataset_items(tmp_path / "s" / "*.tar",
                               InputColumns(tags_json_field="tags")))
    assert [i.id for i in items] == ["00000/000000000", "00000/000000001"]
    from stages.io.inputs import ImageInput

    class View:                           # what ImageInput reads of a config
        class tags:
            blacklist, drop_meta, drop_copyright = (), True, True

    source = ImageInput.__new__(ImageInput)
    source.dataset, source.columns, source.cfg = True, InputColumns(tags_json_field="tags"), View
    assert source.tags(items[0]) == ["cat", "animal"]               # from KEY.json, hygiene applied
    assert expand_braces("s/{00000..00002}.tar") == ["s/00000.tar", "s/00001.tar", "s/00002.tar"]
    assert expand_braces("{a,b}{1..2}") == ["a1", "a2", "b1", "b2"]
    assert safe_key("../x/y") == "%2E.%2Fx%2Fy" and safe_key("a b") == "a%20b"
    assert len({safe_key(k) for k in ("a/b", "a_b", "a%2Fb")}) == 3
    with tarfile.open(tmp_path / "dot.tar", "w") as tar:            # as `tar -C dir .` writes
        add(tar, "./sub.v1/k1.jpg", photo_bytes(0))
        add(tar, "./sub.v1/k1.txt", b"cat")
    assert [i.id for i in dataset_items(tmp_path / "dot.tar", InputColumns())] == ["dot/sub.v1%2Fk1"]


@pytest.mark.parametrize("setting, problem", [
    ("input.image_column=txt", "the same as input.tags_column"),
    ("input.image_column=my jpg", "input.image_column = 'my jpg': 'my jpg' is not accepted"),
    ("input.key_column=", "input.key_column = '': '' is not accepted"),
])
def test_input_settings_are_checked_at_load(setting, problem):
    from stages.config import load_config
    from stages.errors import ConfigError

    with pytest.raises(ConfigError, match=re.escape(problem)):
        load_config(ROOT / "config.ini", [setting])


def test_captions_inside_the_input_folder_are_never_read_as_input(tmp_path, capsys):
    data = tmp_path / "data"
    write_shard(data / "00000.tar", 0, 2)
    with FakeOpenAI(reply) as server:
        for _ in range(2):
            assert run(str(data), tmp_path, server, f"paths.captions={data / 'out'}") == 0
    assert "interpret: 0 ok, 2 reused, 0 failed" in capsys.readouterr().out
    assert (data / "out" / "00000.parquet").exists()


def test_no_shard_found_is_one_clear_line(tmp_path, capsys):
    with FakeOpenAI(reply) as server:
        assert run(str(tmp_path / "shards" / "{00000..00003}.tar"), tmp_path, server) == 1
        assert run(str(tmp_path / "none" / "*.tar"), tmp_path, server) == 2
    captured = capsys.readouterr()
    assert "FAILED 00000.tar: shard file not found" in captured.out
    assert "no .tar shard or .parquet table found" in captured.err


@pytest.mark.slow
def test_shards_on_a_local_ray_instance_then_local_rerun_makes_no_call(tmp_path):
    """The stage code is executor-generic: Ray actors read samples by their offsets, the
    driver writes the shard Parquet files from the per-sample records."""
    ray = pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'ray[data]'")
    data = tmp_path / "data"
    expected = {f"{s:05d}": write_shard(data / f"{s:05d}.tar", s * 10, 3) for s in range(2)}
    # address="local": a new instance even when another Ray cluster runs on this machine
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             ignore_reinit_error=True)
    try:
        with FakeOpenAI(reply) as server:
            assert run(str(data / "*.tar"), tmp_path, server, "run.executor=ray") == 0
            assert {u: [r["key"] for r in got] for u, got in rows(tmp_path / "captions").items()} == expected
            calls = len(server.chat_requests)
            assert run(str(data / "*.tar"), tmp_path, server) == 0
            assert len(server.chat_requests) == calls
    finally:
        ray.shutdown()


def test_table_images_as_bytes_paths_structs_and_urls_read_back_by_row(tmp_path):
    from stages.errors import ItemError
    from stages.io.samples import SampleReader

    (tmp_path / "pics").mkdir()
    (tmp_path / "pics" / "a.jpg").write_bytes(photo_bytes(0))
    pq.write_table(pa.table({"key": ["p", "s", "u"], "jpg": [
        "pics/a.jpg", None, "https://example.invalid/x.jpg"]}), tmp_path / "mixed.parquet")
    items = list(dataset_items(tmp_path / "mixed.parquet", InputColumns(tags="")))
    reader = SampleReader(InputColumns(tags=""))
    assert reader.image_bytes(items[0].data) == photo_bytes(0)           # a path beside the table
    with pytest.raises(ItemError, match="no image"):
        reader.image_bytes(items[1].data)
    with pytest.raises(ItemError, match="does not download"):
        reader.image_bytes(items[2].data)
    # Many batches, read out of order: each row's own bytes (the window restarts as needed).
    n = 700
    pq.write_table(pa.table({"key": [str(i) for i in range(n)],
                             "jpg": [{"bytes": f"row{i}".encode(), "path": None} for i in range(n)]}),
                   tmp_path / "big.parquet", row_group_size=100)
    items = {i.data.key: i.data for i in dataset_items(tmp_path / "big.parquet", InputColumns(tags=""))}
    for row in (0, 650, 5, 699, 64, 63, 1, 400):
        assert reader.image_bytes(items[str(row)]) == f"row{row}".encode()


def test_a_changed_image_file_named_by_a_table_is_captioned_again(tmp_path):
    """A table whose image column holds paths: editing a picture beside the table (the
    table itself untouched) changes that sample's digest and key; the other is reused."""
    data = tmp_path / "data"
    (data / "pics").mkdir(parents=True)
    for i in range(2):
        (data / "pics" / f"{i}.jpg").write_bytes(photo_bytes(i))
    pq.write_table(pa.table({"key": ["a", "b"], "jpg": ["pics/0.jpg", "pics/1.jpg"],
                             "txt": [TAGS[0], TAGS[1]]}), data / "table.parquet")
    with FakeOpenAI(reply) as server:
        assert run(str(data / "table.parquet"), tmp_path, server) == 0
        first = {r["key"]: json.loads(r["provenance"])["image_sha256"]
                 for r in rows(tmp_path / "captions")["table"]}
        (data / "pics" / "0.jpg").write_bytes(photo_bytes(7))          # a new picture
        before = len(vision_images(server))
        assert run(str(data / "table.parquet"), tmp_path, server) == 0
        assert len(vision_images(server)) == before + 1                 # that one, only
    again = {r["key"]: json.loads(r["provenance"])["image_sha256"]
             for r in rows(tmp_path / "captions")["table"]}
    assert again["b"] == first["b"] and again["a"] != first["a"]
    assert again["a"] == hashlib.sha256(photo_bytes(7)).hexdigest()


def test_another_image_column_makes_one_round_of_calls_then_none(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    pq.write_table(pa.table({"key": ["a", "b"], "jpg": [photo_bytes(0), photo_bytes(1)],
                             "png": [photo_bytes(2), photo_bytes(3)],
                             "txt": [TAGS[0], TAGS[1]]}), data / "table.parquet")
    with FakeOpenAI(reply) as server:
        assert run(str(data / "table.parquet"), tmp_path, server) == 0
        assert run(str(data / "table.parquet"), tmp_path, server, "input.image_column=png") == 0
        digests = {json.loads(r["provenance"])["image_sha256"]
                   for r in rows(tmp_path / "captions")["table"]}
        assert digests == {hashlib.sha256(photo_bytes(i)).hexdigest() for i in (2, 3)}
        calls = len(server.chat_requests)
        assert run(str(data / "table.parquet"), tmp_path, server, "input.image_column=png") == 0
        assert len(server.chat_requests) == calls                       # nothing changed: no call


def test_a_shard_whose_every_sample_fails_now_keeps_no_old_captions(tmp_path, capsys):
    data = tmp_path / "data"
    write_shard(data / "00000.tar", 0, 2)
    write_shard(data / "00001.tar", 10, 2)
    with FakeOpenAI(reply) as server:
        assert run(str(data), tmp_path, server) == 0
        assert set(rows(tmp_path / "captions")) == {"00000", "00001"}
        whole = (data / "00001.tar").read_bytes()
        (data / "00001.tar").write_bytes(whole[:600])                   # cut in its first image
        assert run(str(data), tmp_path, server) == 1
    assert "FAILED 00001.tar: truncated" in capsys.readouterr().out
    assert set(rows(tmp_path / "captions")) == {"00000"}                # no stale 00001 rows


def test_concatenated_or_zero_filled_tars_are_reported_not_cut_silently(tmp_path):
    """tarfile stops at the first end-of-archive marker: what follows it (a second tar
    appended, or the zeros of an interrupted preallocated copy) is a shard failure."""
    write_shard(tmp_path / "a.tar", 0, 2)
    write_shard(tmp_path / "b.tar", 10, 2)
    both = tmp_path / "s" / "00000.tar"
    both.parent.mkdir()
    both.write_bytes((tmp_path / "a.tar").read_bytes() + (tmp_path / "b.tar").read_bytes())
    items = list(dataset_items(both, InputColumns()))
    assert [i.id for i in items if not i.error] == ["00000/000000000", "00000/000000001"]
    (failure,) = [i for i in items if i.error]
    assert failure.id == "00000.tar" and "after the end-of-archive marker" in failure.error
    zeros = tmp_path / "z" / "00000.tar"
    zeros.parent.mkdir()
    zeros.write_bytes((tmp_path / "a.tar").read_bytes() + bytes(3 << 20))
    assert [i.id for i in dataset_items(zeros, InputColumns()) if i.error] == ["00000.tar"]
    # A well-formed shard, padded as tarfile and GNU tar pad it, has no failure.
    assert not [i for i in dataset_items(tmp_path / "a.tar", InputColumns()) if i.error]


def test_failure_ids_never_take_a_samples_id_and_odd_names_fail_alone(tmp_path):
    """A row without a key, an over-long key and a member name that is not UTF-8 each fail
    under an id no sample can have (else the sample sharing it would be left out of the
    shard Parquet as failed), and the listing goes on."""
    long = ["x" * 200 + "a", "x" * 200 + "b"]
    pq.write_table(pa.table({"key": ["row-1", None, *long], "jpg": [photo_bytes(i) for i in range(4)],
                             "txt": ["cat"] * 4}), tmp_path / "t.parquet")
    items = list(dataset_items(tmp_path / "t.parquet", InputColumns()))
    assert len({i.id for i in items}) == len(items) == 4
    assert [i.id for i in items if not i.error] == ["t/row-1"]
    with tarfile.open(tmp_path / "n.tar", "w", format=tarfile.GNU_FORMAT, encoding="latin-1") as tar:
        add(tar, "caf\xe9.jpg", photo_bytes(0))
        add(tar, "ok.jpg", photo_bytes(1))
    items = list(dataset_items(tmp_path / "n.tar", InputColumns()))
    assert [(i.id, bool(i.error)) for i in items] == [("n/caf%E9", True), ("n/ok", False)]
    assert "not UTF-8" in items[0].error


def test_reading_many_tables_keeps_few_open(tmp_path):
    """Each table's reader holds its file open: the reader keeps a few, not one per table
    (memory and file descriptors would grow with the table count)."""
    from stages.io.samples import SampleReader

    reader = SampleReader(InputColumns(tags=""))
    samples = []
    for t in range(40):
        pq.write_table(pa.table({"key": ["a", "b"], "jpg": [b"a%d" % t, b"b%d" % t]}),
                       tmp_path / f"{t:03d}.parquet")
        samples += [i.data for i in dataset_items(tmp_path / f"{t:03d}.parquet", InputColumns(tags=""))]
    before = len(os.listdir("/proc/self/fd"))
    for sample in samples:
        assert reader.image_bytes(sample) == (b"%s%d" % (sample.key.encode(), int(Path(sample.shard).stem)))
    assert len(os.listdir("/proc/self/fd")) - before < 10


def test_shard_names_depend_on_the_setting_not_on_which_shards_are_found(tmp_path):
    """A shard added in another subfolder renames no other shard: ids (and so caches and
    outputs) are paths under paths.images, or under the pattern's folder part."""
    data = tmp_path / "data"
    write_shard(data / "a" / "00000.tar", 0, 1)
    assert [i.id for i in dataset_items(data, InputColumns())] == ["a/00000/000000000"]
    write_shard(data / "b" / "00000.tar", 10, 1)
    assert [i.id for i in dataset_items(data, InputColumns())] == [
        "a/00000/000000000", "b/00000/000000010"]
    assert [i.id for i in dataset_items(data / "*" / "00000.tar", InputColumns())] == [
        "a/00000/000000000", "b/00000/000000010"]
    assert [i.id for i in dataset_items(data / "a" / "{00000..00000}.tar", InputColumns())] == [
        "00000/000000000"]


def test_hard_links_read_their_targets_bytes_and_symlinks_fail_with_why(tmp_path):
    """`tar cf` of a folder stores a file met twice (hard-linked) as a link member with no
    bytes: the sample reads its target's; a symbolic link is not followed, and says so."""
    with tarfile.open(tmp_path / "00000.tar", "w") as tar:
        add(tar, "./a.jpg", photo_bytes(0))
        add(tar, "./a.txt", b"cat")
        for name, kind in (("./b.jpg", tarfile.LNKTYPE), ("./c.jpg", tarfile.SYMTYPE)):
            info = tarfile.TarInfo(name)
            info.type, info.linkname = kind, "./a.jpg"
            tar.addfile(info)
        add(tar, "./b.txt", b"cup")
    items = {i.id: i for i in dataset_items(tmp_path / "00000.tar", InputColumns())}
    assert set(items) == {"00000/a", "00000/b", "00000/c"}
    from stages.io.samples import SampleReader

    reader = SampleReader(InputColumns())
    assert reader.image_bytes(items["00000/b"].data) == photo_bytes(0)
    assert not items["00000/b"].error and items["00000/b"].data.tags == b"cup"
    assert "is a link to ./a.jpg" in items["00000/c"].error


def test_export_refuses_an_image_changed_since_its_caption(tmp_path, capsys):
    """--export pairs each caption with the shard's image bytes now: a shard rewritten with
    other pictures under the same keys, not all captioned again (here --limit 1, so its old
    Parquet stays), is an error, not a mismatched row."""
    data = tmp_path / "data"
    write_shard(data / "00000.tar", 0, 2)
    with FakeOpenAI(reply) as server:
        assert run(str(data), tmp_path, server) == 0
        with tarfile.open(data / "00000.tar", "w") as tar:       # same keys, other pictures
            for i, key in enumerate(("000000000", "000000001")):
                add(tar, f"{key}.jpg", photo_bytes(i + 5))
                add(tar, f"{key}.txt", TAGS[i].encode())
        assert run(str(data), tmp_path, server,
                   flags=("--limit", "1", "--export", "hf", str(tmp_path / "out"))) == 2
    assert "changed after its caption" in capsys.readouterr().err
    assert not (tmp_path / "out" / "dataset").exists()


def test_a_folder_of_shard_folders_is_a_dataset_and_an_image_folder_is_not(tmp_path):
    from stages.io.samples import is_dataset

    write_shard(tmp_path / "data" / "a" / "00000.tar", 0, 1)
    assert is_dataset(tmp_path / "data")                    # shards only in sub-folders
    (tmp_path / "pics" / "x").mkdir(parents=True)
    (tmp_path / "pics" / "x" / "a.jpg").write_bytes(photo_bytes(0))
    assert not is_dataset(tmp_path / "pics")                # images only in sub-folders
