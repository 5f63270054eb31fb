"""run.executor = ray: the caption stages mapped over a Ray Dataset on a local Ray instance."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fakes import FakeOpenAI
from test_faults import make_images

import caption

ray = pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'ray[data]'")
ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_caption_on_a_local_ray_instance_resumes_like_local(tmp_path):
    make_images(tmp_path / "images", 8)
    (tmp_path / "images" / "broken.png").write_text("not an image")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    try:
        with FakeOpenAI() as server:
            args = ["--config", str(ROOT / "config.ini"), "--quiet"]
            for item in (f"llm.base_url={server.url}", f"paths.images={tmp_path / 'images'}",
                         f"paths.captions={tmp_path / 'captions'}", f"paths.cache={tmp_path / 'cache'}",
                         "vision.backend=openai", "run.executor=ray", "llm.backoff=0.01",
                         f"tags.wiki_file={ROOT / 'data' / 'wiki.json'}"):
                args += ["--set", item]
            assert caption.main(args) == 1                      # the broken file fails
            captions = sorted(p.stem for p in (tmp_path / "captions").glob("*.txt"))
            assert captions == [f"img{i:03d}" for i in range(8)]
            summary = json.loads((tmp_path / "cache" / "summary-caption.json").read_text())
            stages = {s["name"]: s for s in summary["stages"]}
            assert stages["interpret"]["ok"] == 8
            assert [f["id"] for f in stages["interrogate"]["failed"]] == ["broken"]
            assert summary["calls"]["calls"] >= 16
            calls = len(server.chat_requests)
            # The local executor sees the Ray run's work as done: zero calls.
            local = [a if a != "run.executor=ray" else "run.executor=local" for a in args]
            assert caption.main(local) == 1
            assert len(server.chat_requests) == calls
    finally:
        ray.shutdown()
