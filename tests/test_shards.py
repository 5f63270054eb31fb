"""Two shards of one folder, run at the same time over a shared cache, caption every image
exactly once and merge the shared tag store."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

from fakes import FakeOpenAI
from test_faults import make_images

from stages.language.tagging import DEFAULT_META_TAGS, clean_tags, parse_tag_text

ROOT = Path(__file__).resolve().parent.parent


def test_two_concurrent_shards_caption_every_image_once(tmp_path):
    make_images(tmp_path / "images", 10)
    with FakeOpenAI() as server:
        server.latency = 0.02
        procs = []
        for shard in ("0/2", "1/2"):
            args = [sys.executable, str(ROOT / "caption.py"), "--quiet", "--shard", shard]
            for item in (f"llm.base_url={server.url}", f"paths.images={tmp_path / 'images'}",
                         f"paths.captions={tmp_path / 'captions'}", f"paths.cache={tmp_path / 'cache'}",
                         "vision.backend=openai", f"tags.wiki_file={ROOT / 'data' / 'wiki.json'}"):
                args += ["--set", item]
            procs.append(subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.PIPE, text=True))
        outputs = [p.communicate(timeout=240)[0] for p in procs]
        assert [p.returncode for p in procs] == [0, 0], outputs
        vision = Counter()
        for request in server.chat_requests:
            content = request["messages"][-1]["content"]
            if isinstance(content, list):
                vision[content[1]["image_url"]["url"][-40:]] += 1
    captions = sorted(p.stem for p in (tmp_path / "captions").glob("*.txt"))
    assert captions == [f"img{i:03d}" for i in range(10)]
    interpreted = [line for out in outputs for line in out.splitlines() if line.startswith("interpret:")]
    assert sum(int(line.split()[1]) for line in interpreted) == 10      # "interpret: N ok"
    store = json.loads((tmp_path / "cache" / "tags.json").read_text())["tags"]
    expected = set()
    for path in (tmp_path / "images").glob("*.txt"):
        expected |= set(clean_tags(parse_tag_text(path.read_text()), drop=DEFAULT_META_TAGS))
    assert set(store) == expected          # both shards' entries merged, none lost
