"""What the Ray driver owns (issue 19.4, 19.15): the actors use the config the driver read
at launch, never config.ini again, and a shard's Parquet is written as soon as its last
sample is done, under Ray as in a local run. On this module's own simulated cluster
(tests/test_ray.py's fixture), with the local OpenAI-compatible server."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from fakes import FakeOpenAI

import caption

ray = pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'ray[data]'")
from test_ray import cli, cluster, make_folder  # noqa: E402,F401 (the cluster fixture)

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def test_actors_use_the_config_the_driver_read_not_an_edited_file(cluster, tmp_path):  # noqa: F811
    config = tmp_path / "config.ini"
    text = (ROOT / "config.ini").read_text()
    config.write_text(re.sub(r"(?m)^trigger_words =.*$", "trigger_words = ohwx", text))
    shutil.copytree(ROOT / "templates", tmp_path / "templates")
    shutil.copytree(ROOT / "data", tmp_path / "data")
    make_folder(tmp_path / "images", 3)

    def reply(request: dict) -> str:
        if isinstance(request["messages"][-1]["content"], list):    # interrogate: edit the file
            config.write_text(re.sub(r"(?m)^trigger_words =.*$", "trigger_words = edited", text))
            return "A photo of a cat on a plain background."
        return "A cat on a plain background."

    with FakeOpenAI(reply) as server:
        args = cli(tmp_path, server.url, "run.ray_actors=1", "llm.concurrency=1")
        args[args.index("--config") + 1] = str(config)
        assert caption.main(args) == 0
    for meta in (tmp_path / "captions").glob("img*.json"):
        record = json.loads(meta.read_text())
        assert record["trigger_words"] == ["ohwx"], record["trigger_words"]
        assert record["caption"].startswith("ohwx"), record["caption"]


def test_under_ray_a_shards_parquet_is_written_when_its_last_sample_is_done(cluster, tmp_path):  # noqa: F811
    """The driver kills itself right after the first shard Parquet it writes (a fault point
    in the run, not at the end): that shard's Parquet is there, whole; the rerun finishes
    the rest with no call for what was done."""
    import pyarrow.parquet as pq
    from test_webdataset import reply, write_shard

    data = tmp_path / "data"
    expected = {f"{s:05d}": write_shard(data / f"{s:05d}.tar", s * 10, 4) for s in range(3)}
    with FakeOpenAI(reply) as server:
        args = cli(tmp_path, server.url, f"paths.images={data}", "run.ray_actors=1",
                   "llm.concurrency=1", "run.progress=false")
        env = {**os.environ, "RAY_ADDRESS": cluster.address,
               "TAGCAP_KILL_AT": "interpret.shard_written",
               "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")])}
        killed = subprocess.run([sys.executable, str(ROOT / "caption.py"), *args], env=env,
                                capture_output=True, text=True, timeout=300)
        assert killed.returncode == -9, killed.stderr[-2000:]
        written = sorted((tmp_path / "captions").glob("*.parquet"))
        assert len(written) == 1
        keys = [r["key"] for r in pq.read_table(written[0]).to_pylist()]
        assert keys == expected[written[0].stem]
        assert caption.main(args) == 0
        written = {p.stem: [r["key"] for r in pq.read_table(p).to_pylist()]
                   for p in (tmp_path / "captions").glob("*.parquet")}
        assert written == expected
