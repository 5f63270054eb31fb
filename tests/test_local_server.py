"""The embedded default: llama.cpp's server with the packaged SmolLM2 GGUF, for real."""

from __future__ import annotations

import asyncio
import urllib.request

import pytest

from stages.backends.chat import CallStats, ChatBackend
from stages.backends.local_server import LocalServer, find_gguf
from stages.config import LLMConfig
from stages.errors import FatalError
from stages.store import CallCache

SCHEMA = {"type": "object", "required": ["colour"],
          "properties": {"colour": {"type": "string"}}}


@pytest.mark.slow
def test_embedded_server_answers_plain_and_structured_then_stops(tmp_path):
    cfg = LLMConfig(base_url=("local",), local_parallel=2, local_ctx=1024, max_tokens=24)
    backend = ChatBackend(cfg, CallCache(tmp_path / "calls"), CallStats(), cache_dir=tmp_path)

    async def go():
        try:
            plain, structured = await asyncio.gather(
                backend.chat([{"role": "user", "content": "Name a fruit."}], template_hash="t"),
                backend.chat([{"role": "user", "content": "What colour is the sky?"}],
                             template_hash="t", schema=SCHEMA))
            return plain, structured, backend.local.base_url
        finally:
            await backend.aclose()

    plain, structured, url = asyncio.run(go())
    name, digest = backend.model_id.rsplit(":", 1)
    assert name == "gguf:SmolLM2-135M-Instruct.Q4_1.gguf" and len(digest) == 16   # file name + content
    assert plain.text.strip()
    assert isinstance(structured.data["colour"], str)
    assert backend.stats.calls >= 2
    log = tmp_path / "llama-server.log"
    assert log.exists() and log.stat().st_size > 0
    with pytest.raises(OSError):
        urllib.request.urlopen(url + "/models", timeout=2)


def test_missing_gguf_path_is_a_clear_error(tmp_path):
    with pytest.raises(FatalError, match="GGUF file .* not found"):
        find_gguf(str(tmp_path / "nope.gguf"))


def test_packaged_gguf_is_found():
    assert find_gguf("").name == "SmolLM2-135M-Instruct.Q4_1.gguf"


def test_a_server_that_exits_at_start_is_one_clear_fatal_error(tmp_path):
    """A GGUF llama.cpp cannot load: the child exits, and the run stops with the exit code
    and the log's path (it raised AttributeError reading the cleared process handle)."""
    pytest.importorskip("xllamacpp")
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"not a gguf file at all")
    server = LocalServer(bad, parallel=1, ctx_per_slot=256, threads=1,
                         log_path=tmp_path / "llama-server.log", start_timeout=60)  # hang guard
    with pytest.raises(FatalError, match=r"exited with code -?\d+; see .*llama-server\.log"):
        server.start()
    assert server.proc is None
