"""refine.py end to end: a DrawBench-format CSV, the local test server as LLM, the tiny SDXL,
a tiny CLIP and the packaged sentence embedder."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from conftest import llm_overrides
from fakes import FakeOpenAI
from PIL import Image

import refine

PROMPTS = [("a red cube on top of a blue sphere", "Positional"),
           ("three cats sitting on a sofa", "Counting"),
           ('a sign that says "hello, world"', "Text")]


class Script:
    """Scripted LLM: upsample rewrites, judge verdicts (never/always match), ratings."""

    def __init__(self, accept: bool):
        self.accept = accept
        self.verdicts = 0

    def __call__(self, request: dict) -> str:
        system = request["messages"][0]["content"]
        if "rewrite short prompts" in system:
            return "detailed: " + request["messages"][-1]["content"]
        if "help a text-to-image model" in system:
            self.verdicts += 1
            return json.dumps({"matches": self.accept, "missing": [] if self.accept else ["the colour"],
                               "revised_prompt": f"a red cube, a blue sphere, revision {self.verdicts}"})
        if "grade text-to-image" in system:
            return json.dumps({"score": 6, "reasons": "mostly there"})
        return "unexpected"


def write_drawbench(path: Path) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["Prompts", "Category"])
        writer.writerows(PROMPTS)
    return path


def run(project: Path, server: FakeOpenAI, *extra: str) -> int:
    args = ["--config", str(project / "config.ini"), "--quiet"]
    sets = llm_overrides(server.url, **{
        "upsample.benchmark": "drawbench", "upsample.benchmark_path": str(project / "db.csv"),
        "upsample.candidates": "2", "socratic.iterations": "3", "generate.seeds": "11, 12"})
    for item in sets + list(extra):
        args += ["--set", item]
    return refine.main(args)


def test_full_refine_run_with_a_judge_that_never_accepts(bench, monkeypatch):
    monkeypatch.setenv("REFINE_TEST_KEY", "sk-refine-SECRET-42")
    script = Script(accept=False)
    with FakeOpenAI(script) as server:
        assert run(bench, server, "llm.api_key_env=REFINE_TEST_KEY") == 0
        assert server.headers[-1]["authorization"] == "Bearer sk-refine-SECRET-42"
        for path in bench.rglob("*"):                 # traces, reports, caches, images
            if path.is_file():
                assert b"sk-refine-SECRET" not in path.read_bytes(), path
        run_dir = bench / "runs" / "default"
        rows = [json.loads(line) for line in (run_dir / "upsampled.jsonl").read_text().splitlines()]
        assert len(rows) == 3 and len({r["id"] for r in rows}) == 3
        assert all(r["upsampled"].startswith("detailed: ") for r in rows)
        assert all(len(r["candidates"]) == 2 and len(r["clip_tokens"]) == 2 for r in rows)
        for row in rows:
            images = run_dir / "images" / row["id"]
            for seed in (11, 12):
                a = Image.open(images / f"original-s{seed}.png")
                b = Image.open(images / f"upsampled-s{seed}.png")
                assert a.text["seed"] == b.text["seed"] == str(seed)
                assert a.text["prompt"] == row["prompt"] and b.text["prompt"] == row["upsampled"]
            trace = json.loads((run_dir / "socratic" / f"{row['id']}.json").read_text())
            its = trace["iterations"]
            assert len(its) == 3 and not trace["stopped_early"]
            assert its[0]["prompt"] == row["prompt"]
            for before, after in zip(its, its[1:], strict=False):
                assert after["prompt"] == before["verdict"]["revised_prompt"]
            seeds = {Image.open(run_dir / it["image"]).text["seed"] for it in its}
            assert seeds == {"11"}
            scores = [it["scores"]["select_clip"] for it in its]
            assert trace["best"] == scores.index(max(scores))
            assert trace["selection"]["by"] == "clip"
        judge_requests = [r for r in server.chat_requests
                          if "help a text-to-image model" in r["messages"][0]["content"]]
        third = [r for r in judge_requests if "revision 2" in r["messages"][-1]["content"]]
        assert third and "Round 0" in third[0]["messages"][-1]["content"]
        assert "Round 1" in third[0]["messages"][-1]["content"]
        metrics = list(csv.DictReader(open(run_dir / "metrics.csv")))
        assert {m["metric"] for m in metrics} >= {"clipscore", "caption_score", "llm_judge"}
        assert {m["variant"] for m in metrics} >= {"original", "upsampled", "iter00", "iter02", "best"}
        page = (run_dir / "report.html").read_text()
        assert "same scorer" in page.lower() or "both selected" in page.lower() or "warning" in page.lower()
        assert (run_dir / "compare.html").exists()
        assert list((run_dir / "plots").glob("*.png"))
        calls = len(server.chat_requests)
        assert run(bench, server, "llm.api_key_env=REFINE_TEST_KEY") == 0
        assert len(server.chat_requests) == calls


class Seeing(Script):
    """The scripted LLM, also the vision model: every image shows a red cube on a blue sphere."""

    def __call__(self, request: dict) -> str:
        if isinstance(request["messages"][-1]["content"], list):
            return "a photo of a red cube and a blue sphere"
        return super().__call__(request)


def test_judge_that_accepts_at_once_stops_after_one_round(bench):
    """Where the caption names what the prompt asks for; the judge's "matches" for the two
    prompts whose caption names none of it is overruled, so those loops go on."""
    with FakeOpenAI(Seeing(accept=True)) as server:
        assert run(bench, server, "evaluate.skip=true", "vision.backend=openai") == 0
    found = {}
    for path in (bench / "runs" / "default" / "socratic").glob("*.json"):
        trace = json.loads(path.read_text())
        found[trace["prompt"]] = trace
    cube = found.pop(PROMPTS[0][0])
    assert len(cube["iterations"]) == 1 and cube["stopped_early"] and cube["best"] == 0
    assert len(found) == 2
    for trace in found.values():
        assert len(trace["iterations"]) == 3 and not trace["stopped_early"]
        assert trace["iterations"][0]["verdict"]["overruled"].startswith("the caption names none of")


def test_resume_after_interrupted_socratic_loop(bench):
    with FakeOpenAI(Script(accept=False)) as server:
        assert run(bench, server, "socratic.iterations=1", "evaluate.skip=true") == 0
        first = len(server.chat_requests)
        assert run(bench, server, "socratic.iterations=3", "evaluate.skip=true") == 0
        new = server.chat_requests[first:]
        judge = [r for r in new if "help a text-to-image model" in r["messages"][0]["content"]]
        assert len(judge) == 3 * 2           # rounds 1 and 2 only, for 3 prompts
        assert not [r for r in new if "rewrite short prompts" in r["messages"][0]["content"]]


def test_a_changed_image_setting_redoes_the_socratic_traces(bench, capsys):
    """The loop's rounds judged images made with the old settings: a change of
    generate.guidance redoes every trace (it once re-did 0 of them)."""
    def keys() -> dict[str, str]:
        return {p.stem: json.loads(p.read_text())["key"]
                for p in sorted((bench / "runs" / "default" / "socratic").glob("*.json"))}

    with FakeOpenAI(Script(accept=False)) as server:
        assert run(bench, server, "socratic.iterations=2", "evaluate.skip=true") == 0
        first, before = len(server.chat_requests), keys()
        assert run(bench, server, "socratic.iterations=2", "evaluate.skip=true") == 0
        assert len(server.chat_requests) == first and keys() == before   # nothing changed
        capsys.readouterr()
        assert run(bench, server, "socratic.iterations=2", "evaluate.skip=true",
                   "generate.guidance=3.5") == 0
    out = capsys.readouterr().out
    after = keys()
    assert "socratic: 3 ok, 0 reused" in out and "generate: 3 ok, 0 reused" in out
    assert len(after) == 3 and all(after[k] != before[k] for k in before)
