"""refine.py keeps its outputs tied to the inputs they were made from (issue 19, refine side):
a judge of its own on the embedded server, content-derived prompt ids, keys that change only
where outputs do, --set paths and quotes, evaluations of current upstream rows only, and a
stage left without input by a flag that says which flag. Each test drives the CLI."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from fakes import FakeOpenAI
from test_refine_e2e import Script, run

import refine

ROOT = Path(__file__).resolve().parent.parent


def cli(project: Path, *sets: str, extra: tuple[str, ...] = ()) -> int:
    args = ["--config", str(project / "config.ini"), "--quiet", *extra]
    for item in ("run.progress=false", *sets):
        args += ["--set", item]
    return refine.main(args)


def test_a_judge_of_its_own_on_the_embedded_server_plans_without_crashing(project, capsys):
    """evaluate.judge_model = some.gguf with llm.base_url = local: the judge backend reads the
    embedded server's context size, which its spec did not declare (UndeclaredSetting)."""
    judge = project / "judge.gguf"
    judge.write_bytes(b"GGUF stand-in: hashed, never loaded by a dry run")
    assert cli(project, "llm.base_url=local", f"evaluate.judge_model={judge}",
               extra=("--dry-run",)) == 0
    assert "evaluate: would process" in capsys.readouterr().out


def stage_counts(project: Path, run: str = "default") -> dict[str, tuple[int, int]]:
    """(made, reused) per stage of the last run, from its summary."""
    summary = json.loads((project / "runs" / run / "summary.json").read_text())
    return {s["name"]: (s["ok"], s["reused"]) for s in summary["stages"]}


def test_reordered_metrics_and_more_seeds_redo_nothing_they_do_not_change(bench):
    """Reordering evaluate.metrics redid every evaluation, and adding a seed redid every
    Socratic trace although the loop uses only the first seed (issue 19.10)."""
    with FakeOpenAI(Script(accept=False)) as server:
        assert run(bench, server, "socratic.iterations=1", "generate.seeds=11",
                   "evaluate.metrics=clipscore, llm_judge") == 0
        assert stage_counts(bench)["evaluate"] == (3, 0)
        calls = len(server.chat_requests)
        assert run(bench, server, "socratic.iterations=1", "generate.seeds=11",
                   "evaluate.metrics=llm_judge, clipscore") == 0
        assert stage_counts(bench)["evaluate"] == (0, 3)
        assert len(server.chat_requests) == calls
        assert run(bench, server, "socratic.iterations=1", "generate.seeds=11, 12",
                   "evaluate.metrics=llm_judge,clipscore") == 0
        counts = stage_counts(bench)
        assert counts["socratic"] == (0, 3)
        assert counts["generate"] == (3, 0) and counts["evaluate"] == (3, 0)   # new images: new rows


def test_a_blank_line_on_top_of_the_prompt_file_redoes_nothing(bench):
    """Prompt ids held the line number: one blank line on top re-rendered every image and
    redid every trace (issue 19.9). Ids come from the text now."""
    prompts = bench / "mine.txt"
    prompts.write_text("a red cube on top of a blue sphere\nthree cats sitting on a sofa\n")
    sets = (f"upsample.benchmark={prompts}", "socratic.iterations=1", "generate.seeds=11",
            "evaluate.metrics=clipscore")
    with FakeOpenAI(Script(accept=False)) as server:
        assert run(bench, server, *sets) == 0
        before = sorted(p.name for p in (bench / "runs" / "default" / "images").iterdir())
        prompts.write_text("\n" + prompts.read_text())
        calls = len(server.chat_requests)
        assert run(bench, server, *sets) == 0
        assert len(server.chat_requests) == calls
    counts = stage_counts(bench)
    assert {name: counts[name] for name in ("upsample", "generate", "socratic", "evaluate")} == {
        name: (0, 2) for name in ("upsample", "generate", "socratic", "evaluate")}
    assert sorted(p.name for p in (bench / "runs" / "default" / "images").iterdir()) == before


def test_set_paths_resolve_against_the_current_folder_and_lose_their_quotes(project, tmp_path_factory,
                                                                             monkeypatch, capsys):
    """`--set upsample.benchmark=mine.txt` was read from the config's folder, although --set
    paths resolve against the current folder (README), and `--set 'KEY="value"'` kept the
    quotes that the config file drops (issue 19.11)."""
    here = tmp_path_factory.mktemp("elsewhere")
    (here / "mine.txt").write_text("a red cube on top of a blue sphere\nthree cats on a sofa\n")
    (here / "judge.gguf").write_bytes(b"GGUF stand-in")
    monkeypatch.chdir(here)
    for value in ("mine.txt", '"mine.txt"'):
        assert cli(project, "llm.base_url=local", f"upsample.benchmark={value}", "upsample.limit=0",
                   "evaluate.judge_model=judge.gguf", extra=("--dry-run",)) == 0, value
        out = capsys.readouterr().out
        assert "upsample: would process 2, reuse 0" in out, out


def test_quoted_set_values_read_as_in_the_config_file(project):
    from stages.config import load_config

    (project / "quoted.ini").write_text((project / "config.ini").read_text().replace(
        "trigger_words =", 'trigger_words = "ohwx" ;'))
    from_file = load_config(project / "quoted.ini").interpret.trigger_words
    from_set = load_config(project / "config.ini", ['interpret.trigger_words="ohwx"']).interpret.trigger_words
    assert from_file == from_set == ("ohwx",)


class BrokenUpsampler(Script):
    """The scripted LLM, with an upsample template it cannot answer (empty replies)."""

    def __call__(self, request: dict) -> str:
        if "NEW TEMPLATE" in json.dumps(request["messages"]):
            return ""
        return super().__call__(request)


def test_upsampled_scores_and_traces_follow_the_current_upsampled_rows(bench):
    """After a template change whose upsampling fails, upsampled.jsonl dropped the rows but
    metrics.csv kept their old "upsampled" scores, and with socratic.start = upsampled a new
    trace said "upsampled" while round 0 used the original prompt (issue 19.5)."""
    sets = ("socratic.start=upsampled", "socratic.iterations=1", "generate.seeds=11",
            "evaluate.metrics=clipscore")
    run_dir = bench / "runs" / "default"
    with FakeOpenAI(BrokenUpsampler(accept=False)) as server:
        assert run(bench, server, *sets) == 0
        assert "upsampled" in {r["variant"] for r in csv.DictReader(open(run_dir / "metrics.csv"))}
        template = bench / "templates" / "upsample.txt"
        template.write_text(template.read_text() + "\nNEW TEMPLATE\n")
        assert run(bench, server, *sets) == 1
    assert (run_dir / "upsampled.jsonl").read_text() == ""
    summary = json.loads((run_dir / "summary.json").read_text())
    socratic = next(s for s in summary["stages"] if s["name"] == "socratic")
    assert len(socratic["failed"]) == 3
    assert all("no current upsampled prompt" in f["reason"] for f in socratic["failed"])
    rows = list(csv.DictReader(open(run_dir / "metrics.csv")))
    assert rows and {r["variant"] for r in rows} == {"original"}
    for path in (run_dir / "socratic").glob("*.json"):
        trace = json.loads(path.read_text())
        assert trace["iterations"][0]["prompt"] != trace["prompt"] or trace["start"] == "original"


def test_a_stage_left_without_input_by_a_flag_says_which_flag(project, capsys):
    """`--only generate` on a new run printed "no prompts.jsonl ... (or set it skip = false)"
    and exited 0 (issue 22.6). Asked for by --only, it is an error that names --only; left
    without input by upsample.skip = true in a full run, its note names that setting."""
    assert cli(project, "run.name=new", extra=("--only", "generate")) == 2
    err = capsys.readouterr().err
    assert "--only generate" in err and "prompts.jsonl" in err and "skip = false" not in err
    assert cli(project, "run.name=new", extra=("--only", "generate,socratic", "--dry-run")) == 2
    assert cli(project, "run.name=new", "upsample.skip=true", "socratic.skip=true",
               "evaluate.skip=true") == 0
    out = capsys.readouterr().out
    assert "generate: 0 ok" in out and "upsample.skip = true skips it" in out


def test_the_default_benchmark_is_the_five_prompt_demo(project, capsys):
    """The defaults upsample five concrete PartiPrompts, not the file's first five lines."""
    assert cli(project, extra=("--dry-run", "--only", "upsample")) == 0
    assert "upsample: would process 5, reuse 0\n" in capsys.readouterr().out
    from stages.config import load_config
    from stages.upsample import load_prompts

    prompts, total = load_prompts(load_config(project / "config.ini"))
    assert total == 5 and "bond" not in {p.prompt for p in prompts}
    assert "two baseballs to the left of three tennis balls" in {p.prompt for p in prompts}


def test_a_hub_model_that_cannot_be_loaded_fails_the_dry_run_as_the_run(project, tmp_path_factory,
                                                                        monkeypatch, capsys):
    """A hub id as generate.model passed the dry run, then the run exited 2 when the
    generate stage loaded it (issue 19.8). Offline with an empty cache both stop, with why."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path_factory.mktemp("empty-hf-home")))
    (project / "runs" / "default").mkdir(parents=True)
    (project / "runs" / "default" / "prompts.jsonl").write_text(
        '{"id": "p1", "prompt": "two red balls on a table", "category": ""}\n')
    for extra in (("--dry-run",), ()):
        assert cli(project, "generate.model=someone/some-sdxl", extra=("--only", "generate", *extra)) == 2
        err = capsys.readouterr().err
        assert "generate.model = someone/some-sdxl" in err and "HF_HUB_OFFLINE" in err, err


def test_the_embedded_servers_slots_bound_the_requests_in_flight(tmp_path):
    """8 client requests queued for 4 embedded-server slots, their 120 s timeout running in
    the queue: the first refine.py on its defaults lost 2 of 5 prompts to timeouts under load
    (issue 19.12). The client sends no more requests at once than the server has slots."""
    from stages.backends.chat import CallStats, ChatBackend
    from stages.config import load_config
    from stages.store import CallCache

    def slots(*sets: str) -> int:
        cfg = load_config(ROOT / "config.ini", list(sets))
        return ChatBackend(cfg.llm, CallCache(tmp_path), CallStats(), cache_dir=tmp_path).request_slots

    assert slots("llm.base_url=local", "llm.concurrency=8", "llm.local_parallel=4") == 4
    assert slots("llm.base_url=local", "llm.concurrency=2", "llm.local_parallel=4") == 2
    assert slots("llm.base_url=http://127.0.0.1:9/v1", "llm.concurrency=8", "llm.local_parallel=4") == 8


def two_prompt_files(tmp_path: Path) -> tuple[Path, Path]:
    """a.txt (two prompts) and b.txt (another one)."""
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("a red cube on a blue sphere\nthree cats on a sofa\n", encoding="utf-8")
    b.write_text("a lighthouse at night\n", encoding="utf-8")
    return a, b


def upsample_only(project: Path, source: Path) -> None:
    """`refine.py SOURCE --only upsample` against the scripted server: the run's prompts.jsonl
    becomes SOURCE's."""
    from conftest import llm_overrides

    with FakeOpenAI() as server:
        assert cli(project, *llm_overrides(server.url), extra=(str(source), "--only", "upsample")) == 0


def test_a_prompt_file_with_the_upsample_stage_left_out_must_be_the_runs(project, tmp_path, capsys):
    """`refine.py b.txt --only generate` generated the prompts of a.txt, upsampled into the
    same run before: the argument was dropped without a word. The run's prompts.jsonl is
    what the later stages read, so another file is refused, naming the flag."""
    a, b = two_prompt_files(tmp_path)
    upsample_only(project, a)
    capsys.readouterr()
    assert cli(project, extra=(str(a), "--only", "generate", "--dry-run")) == 0
    assert "generate: would process 2" in capsys.readouterr().out
    assert cli(project, extra=(str(b), "--only", "generate", "--dry-run")) == 2
    err = capsys.readouterr().err
    assert "--only generate" in err and "b.txt" in err and "prompts.jsonl" in err
    assert cli(project, "upsample.skip=true", extra=(str(b), "--dry-run")) == 2
    assert "upsample.skip = true" in capsys.readouterr().err


def test_a_plan_over_a_run_of_other_prompts_counts_the_new_ones(project, tmp_path, capsys):
    """`refine.py b.txt --dry-run` over a run upsampled from a.txt planned "generate: would
    process 2" (a.txt's prompts.jsonl), while the run rewrites prompts.jsonl first and would
    generate b.txt's one prompt."""
    a, b = two_prompt_files(tmp_path)
    upsample_only(project, a)
    capsys.readouterr()
    assert cli(project, extra=(str(b), "--dry-run")) == 0
    out = capsys.readouterr().out
    assert "upsample: would process 1, reuse 0" in out
    assert "generate: would process 2" not in out and "socratic: would process 2" not in out
    assert cli(project, extra=(str(a), "--dry-run")) == 0         # the run's own prompts: counted
    assert "generate: would process 2" in capsys.readouterr().out


def test_a_plan_whose_upsample_answers_from_its_cache_says_it_replaces_the_runs_prompts(
        project, tmp_path, capsys):
    """The demo upsampled, then b.txt run into the same run folder, then `refine.py --dry-run`
    (the demo again, every upsample reused): the later stages said "no prompts in
    prompts.jsonl", though it held b.txt's prompt and the plan's upsample stage writes the
    demo's back."""
    from conftest import llm_overrides

    a, b = two_prompt_files(tmp_path)
    with FakeOpenAI() as server:
        llm = llm_overrides(server.url)
        for source in (a, b):
            assert cli(project, *llm, extra=(str(source), "--only", "upsample")) == 0
        capsys.readouterr()
        assert cli(project, *llm, extra=(str(a), "--dry-run")) == 0
        out = capsys.readouterr().out
        assert "upsample: would process 0, reuse 2" in out
        assert "no prompts in prompts.jsonl" not in out
        assert out.count("which replaces the 1 prompt now in prompts.jsonl with the benchmark's") == 3
        for upsample_left_out in (("--only", "generate,socratic,evaluate"),
                                  ("--set", "upsample.skip=true"), ()):
            assert cli(project, *llm, extra=(str(b), "--dry-run", *upsample_left_out)) == 0
            out = capsys.readouterr().out      # b.txt's prompt is the run's own: counted
            assert "which replaces" not in out and "generate: would process 1" in out, out


def test_a_benchmark_name_and_the_same_name_set_in_another_case_are_one_benchmark(project, capsys):
    """Benchmark names are read in any case: `refine.py parti --set upsample.benchmark=Parti`
    was refused as naming two benchmarks."""
    assert cli(project, "upsample.benchmark=Parti", extra=("parti", "--dry-run", "--only", "upsample")) == 0
    assert cli(project, "upsample.benchmark=drawbench", extra=("parti", "--dry-run")) == 2
    assert "name two benchmarks" in capsys.readouterr().err
