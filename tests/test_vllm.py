"""In-process vLLM backend.

The contract tests run everywhere: a stand-in module (tests/standins/vllm, on sys.path only
inside them) has vLLM's `LLM` / `SamplingParams` / structured-output signatures without
**kwargs, records every call and answers from a script, so they check what our backend
sends to vLLM and how it batches. The last test needs vLLM, a GPU and weights.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import sys
import threading
from pathlib import Path

import pytest

from stages.backends.chat import CallStats
from stages.backends.vllm_local import VllmChat
from stages.config import LLMConfig
from stages.errors import FatalError, ItemError
from stages.store import CallCache

STANDINS = Path(__file__).resolve().parent / "standins"
SCHEMA = {"type": "object", "required": ["colour"], "properties": {"colour": {"type": "string"}}}
HANG_GUARD_S = 60          # hang guard, not a performance bound


def _drop_vllm_modules() -> None:
    for name in [n for n in sys.modules if n == "vllm" or n.startswith("vllm.")]:
        del sys.modules[name]


@pytest.fixture(params=["0.11", "0.10"])
def standin(request, monkeypatch):
    """The stand-in vLLM, fresh for this test, as the API of vLLM >= 0.11
    (StructuredOutputsParams) or <= 0.10 (GuidedDecodingParams)."""
    saved = {n: m for n, m in sys.modules.items() if n == "vllm" or n.startswith("vllm.")}
    _drop_vllm_modules()
    monkeypatch.syspath_prepend(str(STANDINS))
    vllm = importlib.import_module("vllm")
    assert vllm.__file__.startswith(str(STANDINS))
    if request.param == "0.10":
        monkeypatch.delattr(vllm.sampling_params, "StructuredOutputsParams")
        monkeypatch.setattr(vllm, "SamplingParams", vllm.sampling_params.LegacySamplingParams)
    yield vllm
    _drop_vllm_modules()
    sys.modules.update(saved)


def _backend(tmp_path, **cfg) -> VllmChat:
    return VllmChat(LLMConfig(model="org/some-instruct", backend="vllm", **cfg),
                    CallCache(tmp_path / "calls"), CallStats(), cache_dir=tmp_path)


def _ask(backend, prompts, schema=SCHEMA, **kw):
    async def go():
        try:
            return await asyncio.wait_for(asyncio.gather(*(backend.chat(
                [{"role": "user", "content": p}], template_hash="t", schema=schema, **kw)
                for p in prompts)), HANG_GUARD_S)
        finally:
            await backend.aclose()
    return asyncio.run(go())


def _colour_script(standin, prose: bool = False):
    """Answers as a model under each constraint would: the schema's JSON, any JSON object,
    or (no constraint) prose around the JSON, which our side must parse."""
    def script(conversation, params):
        colour = conversation[-1]["content"].split()[-1]
        kind = standin.sampling_params.constraint(params)
        if kind is None:
            return f"Sure! Here it is: {json.dumps({'colour': colour})} Hope that helps."
        return json.dumps({"colour": colour})
    return script


def _sent(standin) -> list[tuple[list[dict], object]]:
    """(conversation, SamplingParams) of every request the engine was given, in order."""
    (engine,) = standin.ENGINES
    return [(c, p) for kind, convs, params in engine.calls for c, p in zip(convs, params, strict=True)]


@pytest.mark.parametrize("structured", ["auto", "json_schema"])
def test_schema_answers_use_vllm_json_schema_constraint(tmp_path, standin, structured):
    standin.script = _colour_script(standin)
    backend = _backend(tmp_path, structured=structured, temperature=0.3, top_p=0.9,
                       max_tokens=40, seed=7, stop=("###",))
    results = _ask(backend, ["Name colour red"])
    assert results[0].data == {"colour": "red"}
    (engine,) = standin.ENGINES
    assert (engine.model, engine.seed) == ("org/some-instruct", 7)
    ((conversation, params),) = _sent(standin)
    assert conversation == [{"role": "user", "content": "Name colour red"}]   # schema not in prompt
    assert standin.sampling_params.constraint(params) == ("json", SCHEMA)
    assert (params.temperature, params.top_p, params.max_tokens, params.seed, params.stop) == (
        0.3, 0.9, 40, 7, ["###"])
    assert params.frequency_penalty == 0.5 and params.presence_penalty == 0.0
    assert backend.stats.calls == 1


def test_json_object_mode_asks_vllm_for_any_json_object(tmp_path, standin):
    standin.script = _colour_script(standin)
    results = _ask(_backend(tmp_path, structured="json_object"), ["Name colour blue"])
    assert results[0].data == {"colour": "blue"}
    ((conversation, params),) = _sent(standin)
    assert standin.sampling_params.constraint(params) == ("json_object", True)
    assert conversation[0]["role"] == "system" and '"colour"' in conversation[0]["content"]


def test_prompt_mode_sends_no_constraint_and_parses_the_prose(tmp_path, standin):
    standin.script = _colour_script(standin)
    results = _ask(_backend(tmp_path, structured="prompt"), ["Name colour green"])
    assert results[0].data == {"colour": "green"}
    assert "Here it is" in results[0].text
    ((conversation, params),) = _sent(standin)
    assert standin.sampling_params.constraint(params) is None
    assert conversation[0]["role"] == "system" and "JSON Schema" in conversation[0]["content"]


def test_unusable_answer_gets_one_repair_turn_then_fails_only_its_item(tmp_path, standin):
    def script(conversation, params):
        if "broken" in conversation[-1]["content"] and len(conversation) == 2:
            return "no json at all"                        # first answer: prose, no JSON
        if "hopeless" in conversation[-1]["content"] or "hopeless" in str(conversation[1]):
            return "still no json"
        return json.dumps({"colour": "grey"})
    standin.script = script

    async def go(backend):
        try:
            return await asyncio.gather(*(backend.chat([{"role": "user", "content": p}],
                                                       template_hash="t", schema=SCHEMA)
                                          for p in ("fine", "broken", "hopeless")),
                                        return_exceptions=True)
        finally:
            await backend.aclose()
    fine, broken, hopeless = asyncio.run(go(_backend(tmp_path, structured="prompt")))
    assert fine.data == {"colour": "grey"} and broken.data == {"colour": "grey"}
    assert isinstance(hopeless, ItemError) and "after one repair" in str(hopeless)
    repairs = [c for c, _ in _sent(standin) if c[-1]["role"] == "user" and "not usable" in c[-1]["content"]]
    assert len(repairs) == 2


def test_concurrent_requests_go_to_one_engine_in_batches(tmp_path, standin):
    """Eight requests at once: one engine, every request sent exactly once, in at most two
    `LLM.chat` calls. The first call is held until all eight are queued, so the batching
    does not depend on timing."""
    release = threading.Event()
    colour = _colour_script(standin)

    def script(conversation, params):
        assert release.wait(HANG_GUARD_S), "the test never released the engine"
        return colour(conversation, params)
    standin.script = script
    backend = _backend(tmp_path)
    prompts = [f"Name colour c{i}" for i in range(8)]

    async def go():
        tasks = [asyncio.create_task(backend.chat([{"role": "user", "content": p}],
                                                  template_hash="t", schema=SCHEMA)) for p in prompts]
        async with asyncio.timeout(HANG_GUARD_S):
            while backend.stats.calls < len(prompts):      # all queued (one call each)
                await asyncio.sleep(0.001)
        release.set()
        try:
            return await asyncio.wait_for(asyncio.gather(*tasks), HANG_GUARD_S)
        finally:
            await backend.aclose()
    results = asyncio.run(go())
    assert [r.data["colour"] for r in results] == [f"c{i}" for i in range(8)]
    (engine,) = standin.ENGINES
    assert all(kind == "chat" for kind, _, _ in engine.calls)
    assert 1 <= len(engine.calls) <= 2
    sent = sorted(c[-1]["content"] for c, _ in _sent(standin))
    assert sent == sorted(prompts)
    assert all(standin.sampling_params.constraint(p) == ("json", SCHEMA) for _, p in _sent(standin))
    # Asked again: every answer comes from the cache, no engine call.
    again = _ask(_backend(tmp_path), prompts)
    assert all(r.cached for r in again) and len(engine.calls) <= 2 and len(standin.ENGINES) == 1


def test_a_request_vllm_refuses_fails_only_its_own_item(tmp_path, standin):
    release = threading.Event()
    colour = _colour_script(standin)

    def script(conversation, params):
        assert release.wait(HANG_GUARD_S)
        if "bad" in conversation[-1]["content"]:
            raise ValueError("vLLM refuses this request")
        return colour(conversation, params)
    standin.script = script
    backend = _backend(tmp_path)

    async def go():
        tasks = [asyncio.create_task(backend.chat([{"role": "user", "content": p}],
                                                  template_hash="t", schema=SCHEMA))
                 for p in ("Name colour a", "bad one", "Name colour b")]
        async with asyncio.timeout(HANG_GUARD_S):
            while backend.stats.calls < 3:
                await asyncio.sleep(0.001)
        release.set()
        try:
            return await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), HANG_GUARD_S)
        finally:
            await backend.aclose()
    a, bad, b = asyncio.run(go())
    assert a.data == {"colour": "a"} and b.data == {"colour": "b"}
    assert isinstance(bad, ValueError) and "refuses" in str(bad)


def test_the_standin_refuses_wrong_argument_names(standin):
    """The contract tests can fail: misspelt or unknown keywords raise as in vLLM."""
    with pytest.raises(TypeError):
        standin.SamplingParams(guided_json=SCHEMA)
    with pytest.raises(TypeError):
        standin.SamplingParams(structured_outputs=SCHEMA)          # not the params object
    with pytest.raises(TypeError):
        standin.LLM(model="m", random_seed=1)
    with pytest.raises(ValueError):
        standin.SamplingParams(top_p=0.0)
    engine = standin.LLM(model="m")
    with pytest.raises(TypeError):
        engine.chat([{"role": "user", "content": "hi"}], params=standin.SamplingParams())
    if hasattr(standin.sampling_params, "StructuredOutputsParams"):
        with pytest.raises(TypeError):
            standin.sampling_params.StructuredOutputsParams(json_schema=SCHEMA)
        with pytest.raises(ValueError):
            standin.sampling_params.StructuredOutputsParams()
        with pytest.raises(TypeError):
            standin.SamplingParams(guided_decoding=standin.sampling_params.GuidedDecodingParams(json=SCHEMA))
    else:
        with pytest.raises(TypeError):
            standin.SamplingParams(structured_outputs=None)


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
