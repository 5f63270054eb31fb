"""Hole found in review (issues 19.1 / 22.1): `caption.py photos/sub` puts its captions
folder inside photos/ (photos/sub-captions/, with the review page's thumbnails); a later
`caption.py photos` must not take that folder (or any captions folder: it holds
.tagcap-input.json) as input. Real CLI runs against the local OpenAI-compatible server."""

from __future__ import annotations

import tarfile

from test_inputs_cli import photo, run, server  # noqa: F401  (fixture)
from test_webdataset import add, photo_bytes


def test_a_nested_captions_folder_is_not_captioned_as_images(project, server, capsys):  # noqa: F811
    photos = project / "photos"
    photo("coffee", photos, "cup", "coffee_cup, table")
    photo("chelsea", photos / "sub", "cat", "cat, animal")
    assert run(project, server, str(photos / "sub")) == 0
    assert list((photos / "sub-captions" / "thumbs").glob("*.jpg"))   # thumbnails inside photos/
    capsys.readouterr()
    assert run(project, server, str(photos)) == 0
    out = capsys.readouterr().out
    assert "interpret: 2 ok, 0 reused, 0 failed" in out, out            # cup and sub/cat only
    captioned = sorted(p.relative_to(project / "photos-captions").as_posix()
                       for p in (project / "photos-captions").rglob("*.txt"))
    assert captioned == ["cup.txt", "sub/cat.txt"]


def test_a_nested_captions_folder_is_not_read_as_shards(project, server, capsys):  # noqa: F811
    shards = project / "shards"
    shards.mkdir()
    for name in ("00000", "00001"):
        with tarfile.open(shards / f"{name}.tar", "w") as tar:
            add(tar, "k.jpg", photo_bytes(int(name)))
            add(tar, "k.txt", b"coffee_cup, table")
    assert run(project, server, str(shards / "00000.tar")) == 0
    assert (shards / "00000-captions" / "00000.parquet").exists()       # inside shards/
    capsys.readouterr()
    assert run(project, server, str(shards)) == 0, capsys.readouterr().out
    assert sorted(p.name for p in (project / "shards-captions").glob("*.parquet")) == \
        ["00000.parquet", "00001.parquet"]
