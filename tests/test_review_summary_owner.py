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


def test_review_shows_no_vision_answer_about_another_inputs_picture(project, two_inputs):  # noqa: F811
    import hashlib

    from fakes import FakeOpenAI

    def answer(request: dict) -> str:             # each picture gets its own answer
        content = request["messages"][-1]["content"]
        if isinstance(content, list):
            url = next(p["image_url"]["url"] for p in content if p.get("type") == "image_url")
            return f"A photo numbered {hashlib.sha256(url.encode()).hexdigest()[:8]} here."
        return "A picture of the subject on a plain background."

    a, b = two_inputs
    with FakeOpenAI(answer) as s:
        last = lambda r: r["messages"][-1]["content"]                  # noqa: E731
        s.fault_when = lambda r: (Fault("status", status=400) if isinstance(last(r), str)
                                  and "coffee" in last(r) else None)
        assert run(project, s, str(a), sets=("llm.retries=0",)) == 1  # a's cup: no caption
        s.fault_when = None
        assert run(project, s, str(b)) == 0           # the cache now holds b's cup answer
        told = [last(r) for r in s.chat_requests if isinstance(last(r), list)]
        b_answer = answer({"messages": [{"content": told[-1]}]})
        page = (b.parent / "b-captions" / "index.html").read_text()
        assert b_answer in page                       # b's page shows it (sanity)
        assert run(project, s, str(a), "--only", "tags") == 0   # a's page written again
    page = (a.parent / "a-captions" / "index.html").read_text()
    assert b_answer not in page                      # not under a's coffee photo
