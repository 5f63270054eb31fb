"""Holes found in review (issue 19.1 / 22.1): the review server and a positional input
next to --set paths.images must not pair one input's images with another's captions.
Real CLI runs in temp folders against the local OpenAI-compatible server, real photos."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import ROOT
from test_inputs_cli import run, server, two_inputs  # noqa: F401  (fixtures)


def test_review_refuses_a_captions_folder_of_another_input(project, server, two_inputs):  # noqa: F811
    a, b = two_inputs
    assert run(project, server, sets=(f"paths.images={a}",)) == 0
    # b's cup.jpg is another picture: serving captions/ with b's images would show a's
    # caption under b's photo, and an accept would be recorded against it
    done = subprocess.run(
        [sys.executable, str(ROOT / "caption.py"), "--config", str(project / "config.ini"),
         "--set", f"paths.images={b}", "--review", "--no-browser"],
        capture_output=True, text=True, timeout=120, cwd=project)
    assert done.returncode == 2, done.stdout + done.stderr
    err = done.stderr.strip()
    assert len(err.splitlines()) == 1 and str(a.resolve()) in err and "--adopt-captions" in err
    assert "serving" not in done.stdout


def test_a_positional_input_and_another_set_paths_images_are_refused(
        project, server, two_inputs, capsys):  # noqa: F811
    a, b = two_inputs
    code = run(project, server, str(a), sets=(f"paths.images={b}",))
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and "paths.images" in err and str(a) in err
    assert not (project / "a-captions").exists()     # b's captions never land in a's folder
    # the same input both ways is no conflict
    assert run(project, server, str(a), sets=(f"paths.images={a}",)) == 0
    marker = json.loads((project / "a-captions" / ".tagcap-input.json").read_text())
    assert marker["input"] == str(a.resolve())


def test_the_printed_review_command_names_a_set_input(project, server, two_inputs, capsys):  # noqa: F811
    a, _ = two_inputs
    assert run(project, server, sets=(f"paths.images={a}",)) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if "--review" in x)
    # without paths.images the command would review the config's own images/ against a's
    # captions folder
    assert f"paths.images={a}" in line


def test_the_refusal_names_a_fix_that_works_for_the_configs_own_images(
        project, server, two_inputs, capsys):  # noqa: F811
    a, _ = two_inputs
    assert run(project, server, sets=(f"paths.images={a}",)) == 0   # a takes captions/
    capsys.readouterr()
    # the config's own images/ now meets a's captions/: `caption.py images` would write
    # captions/ again (the config's paths.images keeps paths.captions), so the line must
    # name a fix that does not lead back here
    assert run(project, server) == 2
    err = capsys.readouterr().err.strip()
    own = project / "images-captions"
    assert len(err.splitlines()) == 1 and f"--set paths.captions={own}" in err, err
    assert run(project, server, sets=(f"paths.captions={own}",)) in (0, 1)
    assert json.loads((own / ".tagcap-input.json").read_text())["input"] == \
        str((project / "images").resolve())


def test_refine_refuses_a_prompt_file_and_another_set_benchmark(project, tmp_path, capsys):
    import refine

    mine = tmp_path / "mine.txt"
    mine.write_text("a red cube on a blue sphere\n", encoding="utf-8")
    argv = ["--config", str(project / "config.ini"), "--dry-run", str(mine),
            "--set", "upsample.benchmark=parti"]
    assert refine.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "name two benchmarks" in err and "mine.txt" in err


def test_after_a_move_a_new_folder_at_the_old_path_is_another_input(
        project, server, two_inputs, capsys):  # noqa: F811
    import os
    import shutil

    a, b = two_inputs
    captions = project / "captions"
    assert run(project, server, sets=(f"paths.images={a}",)) == 0
    moved = project / "a moved"
    os.rename(a, moved)
    assert run(project, server, sets=(f"paths.images={moved}",)) == 0      # a move: reused
    first = (captions / "cup.txt").read_text()
    shutil.copytree(b, a)               # another dataset now lives at the old path
    capsys.readouterr()
    assert run(project, server, sets=(f"paths.images={a}",)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(moved.resolve()) in err, err
    assert (captions / "cup.txt").read_text() == first             # the moved one's caption
