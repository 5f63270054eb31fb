"""refine.py's report claims only what its data supports (issue 12), end to end through the CLI:
the selection-bias warning on every selector path, only current rows and traces, and round 0
reusing the original image."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pytest
from fakes import FakeOpenAI
from test_refine_e2e import Script, run


class VisionScript(Script):
    """The scripted LLM, also answering image requests: captions, and 1-10 ratings when asked
    for a score (the `select = judge` path)."""

    def __call__(self, request: dict) -> str:
        content = request["messages"][-1]["content"]
        if isinstance(content, list):
            text = " ".join(p.get("text", "") for p in content if p.get("type") == "text")
            if request.get("response_format") or "JSON" in text:
                return json.dumps({"score": 3 + len(text) % 5})
            return "a photo of a red cube and a blue sphere"
        return super().__call__(request)


def run_dir(bench: Path) -> Path:
    return bench / "runs" / "default"


def metric_rows(bench: Path) -> list[dict]:
    with open(run_dir(bench) / "metrics.csv", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.parametrize("model", ["", "fake-model"])
def test_select_judge_on_the_loop_llm_warns(bench, model):
    """`select = judge` with the vision model defaulting to the loop's LLM: the selector, the
    loop's judge and the llm_judge metric are one model, whatever the labels say, and with an
    empty llm.model too."""
    with FakeOpenAI(VisionScript(accept=False)) as server:
        assert run(bench, server, "vision.backend=openai", "socratic.select=judge",
                   f"llm.model={model}") == 0
    page = (run_dir(bench) / "report.html").read_text(encoding="utf-8")
    assert '<div class="warn">' in page
    warning = page[page.index('<div class="warn">'):]
    warning = warning[:warning.index("</div>")]
    assert "llm_judge" in warning and "not independent" in warning
    trace = json.loads(next((run_dir(bench) / "socratic").glob("*.json")).read_text())
    assert trace["selection"]["by"] == "judge"
    assert trace["selection"]["scorer"]["role"] == "selector"


def test_metrics_csv_holds_exactly_the_current_metrics(bench):
    """Switching to clipscore only while one prompt fails must not keep that prompt's old
    caption_score and llm_judge rows."""
    with FakeOpenAI(Script(accept=False)) as server:
        assert run(bench, server) == 0
        assert {r["metric"] for r in metric_rows(bench)} >= {"clipscore", "caption_score", "llm_judge"}
        victim = sorted(p.name for p in (run_dir(bench) / "images").iterdir())[0]
        (run_dir(bench) / "images" / victim / "original-s11.png").write_bytes(b"not a png")
        assert run(bench, server, "evaluate.metrics=clipscore", "generate.skip=true",
                   "socratic.skip=true") == 1
    rows = metric_rows(bench)
    assert {r["metric"] for r in rows} == {"clipscore"}
    assert victim not in {r["id"] for r in rows}
    assert len({r["scorer"] for r in rows}) == 1


def test_a_trace_from_another_selection_is_not_reported_as_current(bench):
    """After a change of socratic.select with the loop skipped, the old traces no longer match:
    evaluate ignores them instead of describing them with the new setting."""
    with FakeOpenAI(VisionScript(accept=False)) as server:
        assert run(bench, server, "vision.backend=openai") == 0
        assert any(r["variant"] == "best" for r in metric_rows(bench))
        assert run(bench, server, "vision.backend=openai", "socratic.select=judge",
                   "socratic.skip=true") == 0
    page = (run_dir(bench) / "report.html").read_text(encoding="utf-8")
    assert "vision-language judge" not in page.lower()
    assert not [r for r in metric_rows(bench) if r["variant"].startswith("iter") or r["variant"] == "best"]
    summary = json.loads((run_dir(bench) / "summary.json").read_text())
    note = next(s["note"] for s in summary["stages"] if s["name"] == "evaluate")
    assert "stale" in note


def test_round_zero_is_the_original_image(bench):
    with FakeOpenAI(Script(accept=False)) as server:
        assert run(bench, server, "evaluate.skip=true") == 0
    for trace_path in (run_dir(bench) / "socratic").glob("*.json"):
        trace = json.loads(trace_path.read_text())
        images = run_dir(bench) / "images" / trace["id"]
        original, first = images / "original-s11.png", images / "iter00-s11.png"
        assert first.read_bytes() == original.read_bytes()
        reuse = trace["iterations"][0]["reused"]
        assert reuse["from"] == f"images/{trace['id']}/original-s11.png"
        assert reuse["how"] in ("hard link", "copy")
        if reuse["how"] == "hard link":
            assert os.path.samefile(first, original)
        assert "reused" not in trace["iterations"][1]


def test_an_independent_evaluation_reads_fresh_captions_and_its_own_judge(bench):
    """evaluate.vision_backend and evaluate.judge_model: the loop captions with the VLM and
    selects with it, the evaluation captions with the classifier and judges with another
    model, so no metric shares a model or captions with the loop and nothing warns."""
    loop_caption = "a photo of a red cube and a blue sphere"
    with FakeOpenAI(VisionScript(accept=False), models=("fake-model", "judge-model")) as server:
        assert run(bench, server, "llm.model=fake-model", "vision.backend=openai",
                   "socratic.select=judge", "evaluate.vision_backend=classifier",
                   "evaluate.judge_model=judge-model") == 0
        grading = [r for r in server.chat_requests
                   if "grade text-to-image" in r["messages"][0]["content"]]
    assert grading and {r["model"] for r in grading} == {"judge-model"}
    assert not any(loop_caption in json.dumps(r["messages"]) for r in grading)
    page = (run_dir(bench) / "report.html").read_text(encoding="utf-8")
    assert '<div class="warn">' not in page
    summary = json.loads((run_dir(bench) / "summary.json").read_text())
    note = next(s["note"] for s in summary["stages"] if s["name"] == "evaluate")
    assert "not independent" not in note
    loop_captions = {it["caption"] for p in (run_dir(bench) / "socratic").glob("*.json")
                     for it in json.loads(p.read_text())["iterations"]}
    assert loop_captions == {loop_caption}
    for path in (run_dir(bench) / "eval").glob("*.json"):
        assert loop_caption not in json.loads(path.read_text())["captions"]


def test_the_same_run_with_the_loops_own_judge_warns(bench):
    """The control of the test above: only evaluate.judge_model left empty, and llm_judge is
    the loop's judge again (caption_score stays independent: classifier captions)."""
    with FakeOpenAI(VisionScript(accept=False), models=("fake-model",)) as server:
        assert run(bench, server, "vision.backend=openai", "socratic.select=judge",
                   "evaluate.vision_backend=classifier") == 0
    summary = json.loads((run_dir(bench) / "summary.json").read_text())
    note = next(s["note"] for s in summary["stages"] if s["name"] == "evaluate")
    warning = note[note.index("warning:"):]
    assert "llm_judge" in warning and "caption_score" not in warning and "clipscore" not in warning


def evaluate_note(bench: Path) -> str:
    summary = json.loads((run_dir(bench) / "summary.json").read_text())
    return next(s["note"] for s in summary["stages"] if s["name"] == "evaluate")


def test_a_changed_category_and_an_unfinished_trace_are_not_reported_as_they_were(bench, monkeypatch):
    """Neither changes what evaluate scores, so its per-prompt files stay current; still the
    rows must carry the benchmark's category now, and a trace left without a best round
    (a loop killed mid-way) or unreadable is counted as left out, not silently dropped. The plots
    and the tables use evaluate.permutations resamples for the mean's interval alike."""
    import stages.report.analysis

    patterns, real = [], stages.report.analysis.paired_test
    monkeypatch.setattr(stages.report.analysis, "paired_test",
                        lambda *a, **kw: patterns.append(kw.get("resamples")) or real(*a, **kw))
    with FakeOpenAI(Script(accept=False)) as server:
        assert run(bench, server) == 0
        prompts = run_dir(bench) / "prompts.jsonl"
        rows = [json.loads(line) for line in prompts.read_text().splitlines()]
        moved = rows[0]["id"]
        rows[0]["category"] = "Renamed category"
        prompts.write_text("".join(json.dumps(r) + "\n" for r in rows))
        cut = run_dir(bench) / "socratic" / f"{rows[1]['id']}.json"
        trace = json.loads(cut.read_text())
        trace["best"] = None
        cut.write_text(json.dumps(trace))
        (run_dir(bench) / "socratic" / f"{rows[2]['id']}.json").write_text('["not a trace"]')
        patterns.clear()
        assert run(bench, server, "upsample.skip=true", "generate.skip=true", "socratic.skip=true",
                   "evaluate.permutations=1000") == 0
    assert patterns and set(patterns) == {1000}
    got = {r["category"] for r in metric_rows(bench) if r["id"] == moved}
    assert got == {"Renamed category"}
    assert not [r for r in metric_rows(bench) if r["id"] == rows[1]["id"] and r["variant"] == "best"]
    assert "2 stale Socratic trace(s) left out" in evaluate_note(bench)


def test_an_original_and_an_upsampled_image_of_other_generation_settings_are_not_paired(bench):
    """generate saves batch by batch: after a change of settings, a failed later batch leaves
    a prompt with a new original and an old upsampled image. That pair differs by more than
    the prompt, so evaluate leaves it out (and says so) instead of reporting it."""
    from PIL import Image

    from stages.backends.images import read_png_metadata, save_png

    with FakeOpenAI(Script(accept=False)) as server:
        assert run(bench, server, "socratic.skip=true") == 0
        before = [r for r in metric_rows(bench) if r["variant"] == "upsampled"]
        victim = sorted(p.name for p in (run_dir(bench) / "images").iterdir())[0]
        path = run_dir(bench) / "images" / victim / "upsampled-s11.png"
        meta = read_png_metadata(path)
        backend = json.loads(meta["backend"])
        backend["steps"] += 10                          # made with other settings
        meta.update(backend=json.dumps(backend, sort_keys=True), tagcap_key="older-key")
        with Image.open(path) as image:
            save_png(path, image.convert("RGB"), meta)
        assert run(bench, server, "upsample.skip=true", "generate.skip=true", "socratic.skip=true") == 0
    rows = metric_rows(bench)
    mixed = {(r["variant"], r["seed"]) for r in rows if r["id"] == victim}
    assert ("upsampled", "11") not in mixed and ("original", "11") not in mixed
    assert ("upsampled", "12") in mixed and ("original", "12") in mixed
    assert len([r for r in rows if r["variant"] == "upsampled"]) < len(before)
    assert "1 original/upsampled pair(s) made with different generation settings" in evaluate_note(bench)


def test_an_unreadable_trace_is_redone_by_the_loop(bench):
    """A trace file that holds JSON but not a trace (a list) is redone, not a crash."""
    with FakeOpenAI(Script(accept=False)) as server:
        assert run(bench, server, "evaluate.skip=true") == 0
        broken = sorted((run_dir(bench) / "socratic").glob("*.json"))[0]
        broken.write_text('["not a trace"]')
        assert run(bench, server, "upsample.skip=true", "generate.skip=true", "evaluate.skip=true") == 0
    assert json.loads(broken.read_text())["best"] is not None
