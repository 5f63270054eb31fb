"""Dry runs write nothing and call nothing: `caption.py --dry-run` and `refine.py --dry-run`
against real local servers leave the project tree as it was (no file, no folder, no
changed byte) and send no model, wiki or image request. The one request a plan makes is
the model listing (`GET /v1/models`), because keys name the model the server serves."""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

from conftest import llm_overrides
from fake_a1111 import CHECKPOINT, FakeA1111
from fakes import FakeDanbooru, FakeOpenAI

import caption
import refine


def tree(root: Path) -> dict[str, str]:
    """Every path under root with its content hash ('dir' for folders) and mtime."""
    out = {}
    for path in sorted(root.rglob("*")):
        st = path.stat()
        kind = "dir" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
        out[str(path.relative_to(root))] = f"{kind} {st.st_mtime_ns}"
    return out


def args_for(project: Path, sets: list[str]) -> list[str]:
    args = ["--config", str(project / "config.ini"), "--quiet", "--dry-run"]
    for item in sets:
        args += ["--set", item]
    return args


def test_caption_dry_run_writes_nothing_and_calls_no_model_or_wiki(project, capsys):
    wiki = {"cat": "A small domesticated carnivorous mammal.", "astronaut": "A person in space."}
    with FakeOpenAI() as llm, FakeDanbooru(wiki, posts={"cat": 100, "astronaut": 50}) as booru:
        sets = llm_overrides(llm.url, **{"vision.backend": "openai", "tags.source": "danbooru",
                                         "tags.url": booru.url, "tags.requests_per_second": "100"})
        before = tree(project)
        assert caption.main(args_for(project, sets)) == 0
        assert tree(project) == before
        assert not (project / "cache").exists() and not (project / "captions").exists()
        assert llm.requests == [], "no model call"
        assert set(llm.get_paths) == {"/v1/models"}, "only the model listing"
        assert booru.paths == [], "no wiki request"
    out = capsys.readouterr().out
    assert "nothing will be called" in out and "would process" in out


def test_refine_dry_run_writes_nothing_and_calls_neither_llm_nor_a1111(project, capsys):
    with open(project / "db.csv", "w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows([["Prompts", "Category"], ["a red cube", "Colors"],
                                  ["three cats on a sofa", "Counting"]])
    with FakeOpenAI() as llm, FakeA1111() as web_ui:
        sets = llm_overrides(llm.url, **{
            "upsample.benchmark": "drawbench", "upsample.benchmark_path": str(project / "db.csv"),
            "generate.backend": "a1111", "generate.url": web_ui.url, "generate.model": CHECKPOINT,
            "vision.backend": "openai", "evaluate.metrics": "llm_judge"})
        before = tree(project)
        assert refine.main(args_for(project, sets)) == 0
        assert tree(project) == before
        assert not (project / "runs").exists() and not (project / "cache").exists()
        assert llm.requests == [] and set(llm.get_paths) <= {"/v1/models"}
        assert web_ui.requests == [] and web_ui.auth_headers == [], "the web UI is never asked"
    out = capsys.readouterr().out
    assert "nothing will be called" in out and "upsample: would process 2" in out
