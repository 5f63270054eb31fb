"""Shared fixtures: a local OpenAI-compatible server, a temp project folder, config helpers."""

from __future__ import annotations

import shutil
import socket
import sys
from pathlib import Path

import hypothesis  # noqa: F401  (see below)
import pytest

# Import hypothesis at collection: its pytest plugin otherwise imports it in the terminal
# summary, where CPython 3.11's parser can fail with "AST constructor recursion depth
# mismatch" after deep recursion elsewhere in the run, failing a green run at the end.

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from fakes import FakeOpenAI  # noqa: E402


@pytest.fixture
def fake_llm():
    with FakeOpenAI() as server:
        yield server


@pytest.fixture
def refused_port():
    """A local port that refuses connections: bound (so no other process can take it while
    the test runs) but never listening."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A temp copy of the repository's config, templates, data and sample images."""
    for name in ("templates", "data", "images"):
        if (ROOT / name).exists():
            shutil.copytree(ROOT / name, tmp_path / name)
    shutil.copy(ROOT / "config.ini", tmp_path / "config.ini")
    return tmp_path


@pytest.fixture
def bench(project: Path) -> Path:
    """`project` with the small DrawBench-style prompt file db.csv of test_refine_e2e."""
    from test_refine_e2e import write_drawbench

    write_drawbench(project / "db.csv")
    return project


def llm_overrides(url: str, **extra: str) -> list[str]:
    """--set values that point the LLM at a test server with fast retries."""
    values = {"llm.base_url": url, "llm.backoff": "0.01", "llm.timeout": "5",
              "llm.retries": "3", "run.progress": "false", **extra}
    return [f"{k}={v}" for k, v in values.items()]
