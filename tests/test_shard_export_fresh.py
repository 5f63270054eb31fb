"""Hole found in review (issue 19.3, shard side): `--only tags --export hf` on shards must
not pair a sample with a caption made from its old tags, as the folder export does not.
Real CLI runs in temp folders against the local OpenAI-compatible server, real photos."""

from __future__ import annotations

import tarfile

from fakes import FakeOpenAI
from test_webdataset import TAGS, add, photo_bytes, reply, run, write_shard


def test_shard_export_refuses_a_caption_older_than_its_tags(tmp_path, capsys):
    data = tmp_path / "data"
    write_shard(data / "00000.tar", 0, 2)
    out = tmp_path / "out"
    with FakeOpenAI(reply) as server:
        assert run(str(data), tmp_path, server) == 0
        with tarfile.open(data / "00000.tar", "w") as tar:     # same pictures, new tags for 1
            for i, key in enumerate(("000000000", "000000001")):
                add(tar, f"{key}.jpg", photo_bytes(i))
                add(tar, f"{key}.txt", (TAGS[i] if i == 0 else "rocket, sky").encode())
        capsys.readouterr()
        code = run(str(data), tmp_path, server, flags=("--only", "tags", "--export", "hf", str(out)))
    err = capsys.readouterr().err
    assert code == 2, err
    assert "the tags of 00000/000000001 changed after its caption" in err
    assert not (out / "dataset").exists()                      # no row with the old caption
