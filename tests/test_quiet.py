"""--quiet is quiet everywhere: with --export, the `datasets` library's own bars ("Saving the
dataset", "Generating train split") and logs print nothing either. caption.py runs as a
fresh process (the library's bars are on by default there) against the local server."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import llm_overrides
from test_webdataset import write_shard

ROOT = Path(__file__).resolve().parent.parent
OURS = ("tags:", "interrogate:", "interpret:", "model calls:", "export:", "review:", "captions:",
        "  FAILED", "  SKIPPED")          # the summary and the last lines: ours, printed even with --quiet


def caption_run(project: Path, url: str, images: str, *flags: str) -> subprocess.CompletedProcess:
    args = [sys.executable, str(ROOT / "caption.py"), "--config", str(project / "config.ini"), *flags]
    for item in llm_overrides(url, **{"vision.backend": "openai", "paths.images": images,
                                      "run.progress": "true"}):      # our bars on: --quiet must hide them
        args += ["--set", item]
    return subprocess.run(args, cwd=project, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("layout", ["folder", "shards"])
def test_quiet_export_prints_only_the_summary(project, fake_llm, layout):
    images = str(project / "images")
    if layout == "shards":
        write_shard(project / "shards" / "00000.tar", 0, 3)
        images = str(project / "shards")
    quiet = caption_run(project, fake_llm.url, images, "--quiet", "--export", "hf",
                        str(project / "out"))
    assert quiet.returncode == 0, quiet.stderr
    assert (project / "out" / "dataset").is_dir()
    assert quiet.stderr == ""
    assert [line for line in quiet.stdout.splitlines() if not line.startswith(OURS)] == []
    # the same export without --quiet shows the library's bar: the check above can fail
    loud = caption_run(project, fake_llm.url, images, "--export", "hf", str(project / "out"))
    assert loud.returncode == 0 and "Saving the dataset" in loud.stderr
