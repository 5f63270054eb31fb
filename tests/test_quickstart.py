"""The README's quick start, run as written: every command of its code blocks, in order, in a
temp copy of the project whose config.ini points the LLM at the scripted test server (the
embedded model would take many minutes here). `/path/to/folder`, `OUT` and `prompts.txt`
become real temp paths; `bash setup.sh` is what this suite already runs under."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from fakes import FakeOpenAI

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def quick_start_commands() -> list[str]:
    """The commands of the README's "Quick start" section, comments dropped."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("\n## Quick start", 1)[1].split("\n## ", 1)[0]
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", section, flags=re.S):
        for line in block.splitlines():
            line = line.split("  #", 1)[0].strip()
            if line:
                commands.append(line)
    return commands


def reply(request: dict) -> str:
    system = request["messages"][0]["content"] if request["messages"] else ""
    last = request["messages"][-1]["content"]
    if isinstance(last, list):                                  # a vision request
        return "a photo"
    if "rewrite short prompts" in system:
        return f"A detailed photograph of {last.strip().rstrip('.')}, soft daylight, wide shot."
    if "help a text-to-image model" in system:
        return json.dumps({"missing": [], "matches": True, "revised_prompt": last})
    if "what a tag shows" in system:                           # its definition's first sentence
        return last.split("Definition:", 1)[-1].strip().split(". ")[0].rstrip(".") + "."
    if "grade text-to-image" in system:
        return json.dumps({"score": 6, "reasons": "mostly there"})
    draft = re.search(r"^(?:Notes|Draft from the tags): (.+)$", last, flags=re.M)
    if draft:                                                  # a caption: the draft as a sentence
        notes = draft.group(1).strip()
        return notes[:1].upper() + notes[1:] + "."
    return "unexpected request"


def project_copy(tmp: Path, url: str) -> Path:
    repo = tmp / "tagcap"
    for name in ("stages", "templates", "data", "images"):
        shutil.copytree(ROOT / name, repo / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("caption.py", "refine.py"):
        shutil.copy(ROOT / name, repo / name)
    config = (ROOT / "config.ini").read_text(encoding="utf-8")
    swaps = {"base_url": url, "timeout": "20", "retries": "1", "backoff": "0.01"}
    out = []
    for section in re.split(r"(?m)^(?=\[)", config):
        if section.startswith("[llm]"):
            for key, value in swaps.items():
                section = re.sub(rf"(?m)^{key}\s*=.*$", f"{key} = {value}", section)
        if section.startswith("[run]"):
            section = re.sub(r"(?m)^progress\s*=.*$", "progress = false", section)
        out.append(section)
    (repo / "config.ini").write_text("".join(out), encoding="utf-8")
    return repo


def test_the_readme_quick_start_runs_as_written(tmp_path):
    commands = quick_start_commands()
    assert any("caption.py" in c for c in commands) and any("refine.py" in c for c in commands)
    folder = tmp_path / "my photos"
    shutil.copytree(ROOT / "images", folder)
    out = tmp_path / "OUT"
    with FakeOpenAI(reply) as server:
        repo = project_copy(tmp_path, server.url)
        (repo / "prompts.txt").write_text("a red box next to a blue box\nthree children on a couch\n")
        env = {**os.environ, "CI": "true"}                 # --review opens no browser
        for command in commands:
            argv = shlex.split(command)
            if argv[:2] == ["bash", "setup.sh"]:
                continue
            assert argv[0] == ".venv/bin/python", command
            argv = [sys.executable] + [str(folder) if a == "/path/to/folder" else
                                       str(out) if a == "OUT" else a for a in argv[1:]]
            if "--review" in argv:
                served = subprocess.Popen(argv, cwd=repo, env=env, stdout=subprocess.PIPE,
                                          stderr=subprocess.STDOUT, text=True)
                line = served.stdout.readline()
                assert "http://127.0.0.1:" in line, (command, line)
                served.send_signal(signal.SIGINT)
                said = served.communicate(timeout=60)[0]
                assert served.returncode == 0, (command, line + said)
                continue
            done = subprocess.run(argv, cwd=repo, env=env, capture_output=True, text=True,
                                  timeout=900)
            print(f"$ {command}\n{done.stdout}{done.stderr}")
            assert done.returncode == 0, command
    # what the quick start promises to leave behind
    assert len(list((repo / "captions").glob("*.txt"))) == 6
    assert len(list(Path(f"{folder}-captions").glob("*.txt"))) == 6
    assert (out / "imagefolder" / "metadata.jsonl").exists()
    assert (repo / "runs" / "default" / "report.html").exists()
