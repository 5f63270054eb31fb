"""In-process vLLM backend: only where vLLM, a GPU and weights exist."""

from __future__ import annotations

import asyncio
import os

import pytest

from stages.backends.chat import CallStats
from stages.backends.vllm_local import VllmChat
from stages.config import LLMConfig
from stages.errors import FatalError
from stages.store import CallCache


def test_without_vllm_the_error_says_what_to_do(tmp_path):
    try:
        import vllm  # noqa: F401
        pytest.skip("vLLM is installed here; the GPU test covers it")
    except ImportError:
        pass
    backend = VllmChat(LLMConfig(model="some/model", backend="vllm"), CallCache(tmp_path),
                       CallStats(), cache_dir=tmp_path)
    with pytest.raises(FatalError, match="pip install vllm"):
        asyncio.run(backend.chat([{"role": "user", "content": "hi"}], template_hash="t"))


@pytest.mark.gpu
@pytest.mark.weights
def test_batched_structured_generation_on_gpu(tmp_path):
    vllm = pytest.importorskip("vllm", reason="needs vLLM")
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    model = os.environ.get("TAGCAP_VLLM_MODEL")
    if not model:
        pytest.skip("set TAGCAP_VLLM_MODEL to a local instruct model folder")
    del vllm
    backend = VllmChat(LLMConfig(model=model, backend="vllm", max_tokens=32), CallCache(tmp_path),
                       CallStats(), cache_dir=tmp_path)
    schema = {"type": "object", "required": ["colour"], "properties": {"colour": {"type": "string"}}}

    async def go():
        try:
            return await asyncio.gather(*(backend.chat(
                [{"role": "user", "content": f"Name colour number {i}."}], template_hash="t",
                schema=schema) for i in range(8)))
        finally:
            await backend.aclose()
    results = asyncio.run(go())
    assert all(isinstance(r.data["colour"], str) for r in results)
