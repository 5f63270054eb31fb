"""Holes found in review (issue 22 / 19.8): a bad --export format was refused only after
the whole caption run (and --dry-run passed it); --port out of range was a traceback.
Each is one line, exit 2, before anything runs. CLI runs in a temp folder against the
local OpenAI-compatible server."""

from __future__ import annotations

from test_inputs_cli import photo, run, server  # noqa: F401  (fixture)


def test_an_unknown_export_format_is_refused_before_the_run_and_by_the_dry_run(
        project, server, capsys):  # noqa: F811
    folder = project / "photos"
    photo("coffee", folder, "cup", "coffee_cup, table")
    for flags in (("--dry-run",), ()):
        assert run(project, server, str(folder), *flags, "--export", "zip", str(project / "out")) == 2
        captured = capsys.readouterr()
        err = captured.err.strip()
        assert len(err.splitlines()) == 1 and "--export 'zip': unknown format; accepted: hf" in err
        assert "interpret" not in captured.out                     # no stage ran or planned
    assert server.chat_requests == []
    assert not (project / "photos-captions").exists()


def test_a_port_out_of_range_is_one_line(project, server, capsys):  # noqa: F811
    folder = project / "photos"
    photo("coffee", folder, "cup", "coffee_cup, table")
    assert run(project, server, str(folder)) == 0                  # a folder to review
    capsys.readouterr()
    assert run(project, server, str(folder), "--review", "--no-browser", "--port", "99999") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--port 99999" in err, err


def test_review_with_dry_run_or_export_is_refused_not_served(project, server, capsys):  # noqa: F811
    import subprocess
    import sys

    from conftest import ROOT

    folder = project / "photos"
    photo("coffee", folder, "cup", "coffee_cup, table")
    assert run(project, server, str(folder)) == 0
    # --dry-run promises nothing is done and the command ends; --export would be ignored.
    # In its own process: without the refusal it serves until killed
    for flags in (("--dry-run",), ("--export", "hf", str(project / "out"))):
        done = subprocess.run([sys.executable, str(ROOT / "caption.py"), str(folder), "--config",
                               str(project / "config.ini"), "--review", "--no-browser", *flags],
                              capture_output=True, text=True, timeout=120, cwd=project)
        err = done.stderr.strip()
        assert done.returncode == 2 and len(err.splitlines()) == 1, done.stdout + err
        assert f"--review with {flags[0]}" in err and "serving" not in done.stdout
