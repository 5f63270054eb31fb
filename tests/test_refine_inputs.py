"""refine.py keeps its outputs tied to the inputs they were made from (issue 19, refine side):
a judge of its own on the embedded server, content-derived prompt ids, keys that change only
where outputs do, --set paths and quotes, evaluations of current upstream rows only, and a
stage left without input by a flag that says which flag. Each test drives the CLI."""

from __future__ import annotations

from pathlib import Path

import refine


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
