"""Hole found in review (issue 19.3): `--only tags --export hf` after interpret.trigger_words
changed exported captions without the trigger words the config now asks for (exit 0).
The trigger words are part of a caption's text: such a caption is not current, in a folder
export or a shard export. Real CLI runs against the local OpenAI-compatible server."""

from __future__ import annotations

import json

from fakes import FakeOpenAI
from test_inputs_cli import photo, run, server  # noqa: F401  (fixture)
from test_webdataset import reply as shard_reply
from test_webdataset import run as run_shards
from test_webdataset import write_shard


def test_folder_export_leaves_out_captions_made_with_other_trigger_words(project, server,  # noqa: F811
                                                                        capsys):
    folder = project / "photos"
    photo("coffee", folder, "cup", "coffee_cup, table")
    photo("chelsea", folder, "cat", "cat, animal")
    assert run(project, server, str(folder), sets=("interpret.trigger_words=ohwx",)) == 0
    out = project / "out"
    capsys.readouterr()
    assert run(project, server, str(folder), "--only", "tags", "--export", "hf", str(out),
               sets=("interpret.trigger_words=sks",)) == 2
    err = capsys.readouterr().err
    assert "interpret.trigger_words changed after its caption was written (made with ohwx, " \
        "now sks)" in err, err
    assert not (out / "imagefolder" / "metadata.jsonl").exists()
    # the same trigger words: exported, with them in the text
    assert run(project, server, str(folder), "--only", "tags", "--export", "hf", str(out),
               sets=("interpret.trigger_words=ohwx",)) == 0
    rows = [json.loads(x) for x in (out / "imagefolder" / "metadata.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all("ohwx" in r["caption"] for r in rows)


def test_shard_export_refuses_captions_made_with_other_trigger_words(tmp_path, capsys):
    data = tmp_path / "data"
    write_shard(data / "00000.tar", 0, 2)
    out = tmp_path / "out"
    with FakeOpenAI(shard_reply) as s:
        assert run_shards(str(data), tmp_path, s, "interpret.trigger_words=ohwx") == 0
        capsys.readouterr()
        code = run_shards(str(data), tmp_path, s, "interpret.trigger_words=sks",
                          flags=("--only", "tags", "--export", "hf", str(out)))
    err = capsys.readouterr().err
    assert code == 2 and "interpret.trigger_words changed after its caption" in err, err
    assert not (out / "dataset").exists()
