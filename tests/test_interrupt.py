"""Ctrl-C in the middle of a run: what it prints (items finished, kept, not done, the command
that resumes), a progress bar that stays where the work is, and a rerun that finishes the rest.

caption.py runs as a real subprocess against the local OpenAI-compatible server; SIGINT is
sent once some captions are on disk and the server has gone slow, so the run is mid-stage.
"""

from __future__ import annotations

import json
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import llm_overrides

ROOT = Path(__file__).resolve().parent.parent
IMAGES = 6          # the sample folder


def captions_on_disk(project: Path) -> int:
    return len(list((project / "captions").glob("*.txt")))


def wait_for(condition, proc: subprocess.Popen, what: str, limit: float = 120) -> None:
    """Poll until `condition()`; the run must still be going (it is the thing interrupted)."""
    end = time.monotonic() + limit
    while not condition():
        assert proc.poll() is None, f"caption.py ended before {what}: {proc.communicate()}"
        assert time.monotonic() < end, f"no {what} after {limit} s"
        time.sleep(0.05)


def test_ctrl_c_says_what_finished_and_how_to_resume_and_the_rerun_finishes(project, fake_llm):
    args = [str(ROOT / "caption.py"), "--config", str(project / "config.ini"), "--only", "interpret"]
    for item in llm_overrides(fake_llm.url, **{"tags.skip": "true", "interrogate.skip": "true",
                                                "interpret.candidates": "1", "llm.concurrency": "1",
                                                "run.progress": "true"}):
        args += ["--set", item]
    fake_llm.latency = 0.3
    proc = subprocess.Popen([sys.executable, *args], cwd=project, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: captions_on_disk(project) >= 2, proc, "two captions")
        fake_llm.latency = 3600.0                  # the next request hangs: the run is mid-stage
        asked = len(fake_llm.chat_requests)
        wait_for(lambda: len(fake_llm.chat_requests) > asked, proc, "a hanging request")
        time.sleep(1.0)                            # let an answered item finish its writes
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    done = captions_on_disk(project)
    assert 2 <= done < IMAGES
    line = next(x for x in err.splitlines() if x.strip().startswith("interpret:") and "finished" in x)
    assert line.strip() == (f"interpret: {done} of {IMAGES} finished, 0 kept (reused), 0 failed, "
                            f"{IMAGES - done} not done")
    assert "interrupted during the interpret stage" in err
    # the bar's last state is what finished, not a jump to the end by cancelled items
    bars = re.findall(r"interpret:\s+\d+%\|[^|]*\| (\d+)/(\d+)", err)
    assert bars and bars[-1] == (str(done), str(IMAGES)), bars[-3:]
    assert f"{IMAGES}/{IMAGES}" not in err
    # the resume command is this very command line
    resume = err.splitlines()[err.splitlines().index(
        "finished items are kept; to resume, run the same command:") + 1].strip()
    command = shlex.split(resume)
    assert command[1:] == args
    assert Path(command[0]).resolve() == Path(sys.executable).resolve() or command[0] == "python"

    fake_llm.latency = 0.0
    rerun = subprocess.run([sys.executable, *command[1:], "--quiet"], cwd=project,
                           capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert captions_on_disk(project) == IMAGES
    summary = json.loads((project / "cache" / "summary-caption.json").read_text())
    interpret = next(s for s in summary["stages"] if s["name"] == "interpret")
    assert (interpret["ok"], interpret["reused"]) == (IMAGES - done, done)
