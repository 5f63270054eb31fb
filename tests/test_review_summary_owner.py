"""Hole found in review (issue 19.1): the cache (and its summary-caption.json, the last
caption run's failures) is shared by every input of a config; `caption.py a --review`
after a run on b showed b's failures on a's cards with the same ids. Real CLI runs
against the local OpenAI-compatible server; the review server in its own process."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import urllib.request

from conftest import ROOT, llm_overrides
from fakes import Fault
from test_inputs_cli import run, server, two_inputs  # noqa: F401  (fixtures)


def test_review_of_one_input_shows_no_failure_of_another(project, server, two_inputs):  # noqa: F811
    a, b = two_inputs
    assert run(project, server, str(a)) == 0
    last = lambda r: r["messages"][-1]["content"]                      # noqa: E731
    server.fault_when = lambda r: (Fault("status", status=400) if isinstance(last(r), str)
                                   and "flower" in last(r) else None)
    assert run(project, server, str(b), sets=("llm.retries=0",)) == 1   # b's cup fails
    args = [sys.executable, str(ROOT / "caption.py"), str(a), "--config",
            str(project / "config.ini"), "--review", "--no-browser"]
    for item in llm_overrides(server.url, **{"vision.backend": "openai"}):
        args += ["--set", item]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=project)
    try:
        line = proc.stdout.readline()
        found = re.search(r"at (http://127\.0\.0\.1:\d+/)", line)
        assert found, line + proc.stderr.read()
        page = urllib.request.urlopen(found.group(1), timeout=60).read().decode()
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=60)
    assert "cup" in page
    at = page.find("interpret: ")
    assert at < 0, page[at - 200:at + 200]
