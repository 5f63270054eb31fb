"""Shard outputs are written from one thread: pyarrow's default memory pool keeps a store
per thread that built a table, so Parquets written from many threads (asyncio's default
executor, the event loop's thread) made a long run's memory step up with each new thread.

caption.py runs in a fresh process whose every thread is watched (threading.setprofile)
for the opening of a pyarrow.parquet.ParquetWriter (one per file); a shard with a failing
sample is written when the stage finishes, the clean shards as soon as their samples are
captioned. pandas is never imported (about 30 MB of a shard run's memory): tables are read
with pq.ParquetFile, not pq.read_table (pyarrow.dataset), and built by the JSON reader, not
Table.from_pylist.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
from conftest import llm_overrides
from fakes import FakeOpenAI
from test_webdataset import add, reply, write_shard

ROOT = Path(__file__).resolve().parent.parent

WATCH = """
import json, sys, threading
sys.path.insert(0, {root!r})
import pyarrow.parquet as pq
code, seen = pq.ParquetWriter.__init__.__code__, []     # one per file written

def watch(frame, event, arg):
    if event == "call" and frame.f_code is code:
        seen.append(threading.current_thread().name)

threading.setprofile(watch)
sys.setprofile(watch)
import caption
status = caption.main({args!r})
sys.setprofile(None)
print(json.dumps({{"status": status, "threads": seen, "pandas": "pandas" in sys.modules}}))
"""


def test_every_shard_parquet_is_written_from_one_thread(tmp_path):
    data = tmp_path / "data"
    for s in range(4):
        write_shard(data / f"{s:05d}.tar", s * 10, 3)
    write_shard(data / "00004.tar", 50, 2,
                extra=lambda tar: add(tar, "broken.jpg", b"not a picture") or add(tar, "broken.txt", b"cat"))
    with FakeOpenAI(reply) as server:
        args = ["--config", str(ROOT / "config.ini"), "--quiet"]
        for item in llm_overrides(server.url, **{
                "vision.backend": "openai", "paths.images": str(data), "llm.concurrency": "4",
                "paths.captions": str(tmp_path / "captions"), "paths.cache": str(tmp_path / "cache"),
                "tags.skip": "true"}):
            args += ["--set", item]
        result = subprocess.run([sys.executable, "-c", WATCH.format(root=str(ROOT), args=args)],
                                cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["status"] == 1                                  # the broken sample failed
    written = sorted((tmp_path / "captions").glob("*.parquet"))
    assert [p.stem for p in written] == [f"{s:05d}" for s in range(5)]
    assert [r["key"] for r in pq.read_table(written[-1]).to_pylist()] == ["000000050", "000000051"]
    assert len(report["threads"]) == len(written)                 # every write was seen
    assert len(set(report["threads"])) == 1, report["threads"]
    assert report["threads"][0] != "MainThread"                    # not on the event loop
    assert report["pandas"] is False          # pq.read_table / Table.from_pylist import it


DECIDE = """
import json, sys
sys.path.insert(0, {root!r})
from pathlib import Path
from stages.decisions import load_decisions, save_decisions
rows = {{"u/1": {{"id": "u/1", "unit": "u", "key": "1", "decision": "edited", "caption": "a cat\\non a mat",
                 "previous": None, "at": "2026-12-06T00:00:00Z", "image_sha256": "ab"}},
        "u/0": {{"id": "u/0", "unit": "u", "key": "0", "decision": "rejected", "caption": "",
                 "previous": "été  ", "at": "2026-12-06T00:00:01Z", "image_sha256": None}}}}
save_decisions(Path(sys.argv[1]), rows)
back = load_decisions(Path(sys.argv[1]))
save_decisions(Path(sys.argv[1]) / "none", {{}})
print(json.dumps({{"same": back == rows, "empty": load_decisions(Path(sys.argv[1]) / "none"),
                  "order": list(back), "pandas": "pandas" in sys.modules}}))
"""


def test_review_decisions_round_trip_through_parquet_without_pandas(tmp_path):
    result = subprocess.run([sys.executable, "-c", DECIDE.format(root=str(ROOT)), str(tmp_path)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report == {"same": True, "empty": {}, "order": ["u/0", "u/1"], "pandas": False}
