"""The chat backend against a real local OpenAI-compatible server, through the openai client."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import replace

import pytest
from fakes import FakeOpenAI, Fault

from stages.backends.chat import CallStats, ChatBackend
from stages.config import LLMConfig
from stages.errors import CapabilityError, FatalError, ItemError
from stages.store import CallCache

SCHEMA = {"type": "object", "required": ["matches", "revised_prompt"],
          "properties": {"matches": {"type": "boolean"}, "revised_prompt": {"type": "string"}}}
MSGS = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello"}]


def make(tmp_path, urls, **cfg) -> ChatBackend:
    base = LLMConfig(base_url=tuple(urls), model=cfg.pop("model", "fake-model"), backoff=0.01,
                     timeout=cfg.pop("timeout", 5.0), retries=cfg.pop("retries", 3))
    return ChatBackend(replace(base, **cfg), CallCache(tmp_path / "calls"), CallStats(),
                       cache_dir=tmp_path)


def ask(backend: ChatBackend, messages=MSGS, **kw):
    async def go():
        try:
            return await backend.chat(messages, template_hash="t1", **kw)
        finally:
            await backend.aclose()
    return asyncio.run(go())


def test_sampling_parameters_reach_the_server(tmp_path, fake_llm):
    backend = make(tmp_path, [fake_llm.url], temperature=0.4, top_p=0.8, max_tokens=33,
                   seed=7, stop=("END",))
    result = ask(backend)
    assert result.text.startswith("caption for: hello") and not result.cached
    req = fake_llm.chat_requests[0]
    assert (req["model"], req["temperature"], req["top_p"], req["max_tokens"], req["seed"],
            req["stop"]) == ("fake-model", 0.4, 0.8, 33, 7, ["END"])


def test_cache_hit_makes_no_request_and_never_stores_the_key(tmp_path, fake_llm, monkeypatch):
    monkeypatch.setenv("MY_SECRET_ENV", "sk-test-SECRET-123456")
    first = make(tmp_path, [fake_llm.url], api_key_env="MY_SECRET_ENV")
    ask(first)
    assert fake_llm.headers[-1]["authorization"] == "Bearer sk-test-SECRET-123456"
    second = make(tmp_path, [fake_llm.url], api_key_env="MY_SECRET_ENV")
    again = ask(second)
    assert again.cached and second.stats.cache_hits == 1 and second.stats.calls == 0
    assert len(fake_llm.chat_requests) == 1
    files = list((tmp_path / "calls").rglob("*.json"))
    assert len(files) == 1 and files[0].parent.name == files[0].stem[:2]
    for path in tmp_path.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert b"SECRET" not in data and fake_llm.url.encode() not in data


def test_cache_key_changes_with_template_and_parameters(tmp_path, fake_llm):
    ask(make(tmp_path, [fake_llm.url]))
    ask(make(tmp_path, [fake_llm.url], temperature=0.9))
    backend = make(tmp_path, [fake_llm.url])

    async def other_template():
        try:
            return await backend.chat(MSGS, template_hash="t2")
        finally:
            await backend.aclose()
    asyncio.run(other_template())
    assert len(fake_llm.chat_requests) == 3


def test_429_honours_retry_after_then_succeeds(tmp_path, fake_llm):
    fake_llm.inject(Fault("status", 429, headers={"Retry-After": "1"}))
    backend = make(tmp_path, [fake_llm.url])
    started = time.monotonic()
    result = ask(backend)
    assert time.monotonic() - started >= 0.95
    assert result.text and backend.stats.retries == 1 and len(fake_llm.chat_requests) == 2


@pytest.mark.parametrize("fault", [
    Fault("status", 500), Fault("status", 503), Fault("malformed"), Fault("drop"),
    Fault("truncated")])
def test_transient_faults_are_retried(tmp_path, fake_llm, fault):
    fake_llm.inject(fault, fault)
    backend = make(tmp_path, [fake_llm.url])
    assert ask(backend).text.startswith("caption for")
    assert backend.stats.retries == 2


def test_timeout_is_retried(tmp_path, fake_llm):
    fake_llm.inject(Fault("slow", seconds=1.5))
    backend = make(tmp_path, [fake_llm.url], timeout=0.5)
    assert ask(backend).text
    assert backend.stats.retries == 1


def test_retries_exhausted_is_an_item_error_with_the_reason(tmp_path, fake_llm):
    fake_llm.inject(*[Fault("status", 500, body="boom")] * 4)
    with pytest.raises(ItemError, match="gave up after 4 attempts: HTTP 500"):
        ask(make(tmp_path, [fake_llm.url], retries=3))


def test_client_errors_are_not_retried(tmp_path, fake_llm):
    fake_llm.inject(Fault("status", 404, body="model not found"))
    with pytest.raises(ItemError, match="HTTP 404"):
        ask(make(tmp_path, [fake_llm.url]))
    assert len(fake_llm.chat_requests) == 1


def test_structured_json_schema(tmp_path, fake_llm):
    result = ask(make(tmp_path, [fake_llm.url]), schema=SCHEMA)
    assert result.data == {"matches": False, "missing": [], "revised_prompt": "a test prompt"}
    fmt = fake_llm.chat_requests[0]["response_format"]
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["schema"] == SCHEMA


def test_structured_falls_back_and_remembers_per_endpoint(tmp_path):
    with FakeOpenAI(reject_json_schema=True) as server:
        backend = make(tmp_path, [server.url])

        async def two_calls():
            try:
                a = await backend.chat(MSGS, template_hash="t", schema=SCHEMA)
                b = await backend.chat(MSGS + [{"role": "user", "content": "again"}],
                                       template_hash="t", schema=SCHEMA)
                return a, b
            finally:
                await backend.aclose()
        a, b = asyncio.run(two_calls())
        kinds = [(r.get("response_format") or {}).get("type") for r in server.chat_requests]
        assert kinds == ["json_schema", "json_object", "json_object"]
        assert a.data["revised_prompt"] == "a test prompt" and b.data is not None
        assert "JSON Schema" in server.chat_requests[1]["messages"][0]["content"]


def test_prompt_mode_extracts_json_from_prose_and_repairs_once(tmp_path):
    replies = iter(["Sure! Here it is: {\"matches\": true, \"revised_prompt\": \"x\"} hope it helps",
                    "no json at all", '{"matches": false, "revised_prompt": "fixed"}'])
    with FakeOpenAI(lambda req: next(replies), reject_json_schema=True,
                    reject_json_object=True) as server:
        first = ask(make(tmp_path / "a", [server.url]), schema=SCHEMA)
        assert first.data == {"matches": True, "revised_prompt": "x"}
        second = ask(make(tmp_path / "b", [server.url], structured="prompt"), schema=SCHEMA,
                     sample=1)
        assert second.data == {"matches": False, "revised_prompt": "fixed"}
        repair = server.chat_requests[-1]["messages"]
        assert repair[-2] == {"role": "assistant", "content": "no json at all"}
        assert "not usable" in repair[-1]["content"]


def test_schema_violation_after_repair_fails_the_item(tmp_path):
    with FakeOpenAI(lambda req: json.dumps({"matches": "yes", "revised_prompt": "x"})) as server:
        with pytest.raises(ItemError, match="matches should be boolean"):
            ask(make(tmp_path, [server.url]), schema=SCHEMA)
        assert len(server.chat_requests) == 2


def test_an_answer_cut_off_mid_object_says_so_instead_of_reading_its_inner_list(tmp_path):
    cut = '{"missing": ["a red box", "a blue box"], "matches": fal'      # max_tokens reached
    with FakeOpenAI(lambda req: cut) as server:
        with pytest.raises(ItemError, match="cut off before its end") as failed:
            ask(make(tmp_path, [server.url]), schema=SCHEMA)
        assert "got list" not in str(failed.value)
        assert len(server.chat_requests) == 2                  # asked once, repaired once


def test_image_capability_error_is_not_retried(tmp_path):
    with FakeOpenAI(reject_images=True) as server:
        msgs = [{"role": "user", "content": [
            {"type": "text", "text": "what is this"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}]
        with pytest.raises(CapabilityError, match="image input is not supported"):
            ask(make(tmp_path, [server.url]), messages=msgs)
        assert len(server.chat_requests) == 1


def test_unreachable_server_is_fatal_and_names_the_url(tmp_path):
    with FakeOpenAI() as server:
        url = server.url
    with pytest.raises(FatalError) as info:
        ask(make(tmp_path, [url]))
    assert url in str(info.value) and "base_url = local" in str(info.value)


def test_several_base_urls_share_the_load_and_skip_a_dead_one(tmp_path):
    with FakeOpenAI() as a, FakeOpenAI() as b:
        with FakeOpenAI() as dead:
            dead_url = dead.url
        a.latency = b.latency = 0.05
        backend = make(tmp_path, [a.url, b.url, dead_url])

        async def many():
            try:
                return await asyncio.gather(*(backend.chat(
                    [{"role": "user", "content": f"q{i}"}], template_hash="t")
                    for i in range(12)))
            finally:
                await backend.aclose()
        results = asyncio.run(many())
        assert len(results) == 12
        assert len(a.chat_requests) >= 3 and len(b.chat_requests) >= 3
        assert len(a.chat_requests) + len(b.chat_requests) == 12


def test_model_discovered_from_server_when_not_configured(tmp_path):
    with FakeOpenAI(models=("served-model",)) as server:
        ask(make(tmp_path, [server.url], model=""))
        assert server.chat_requests[0]["model"] == "served-model"


def test_a_server_that_dies_mid_run_is_backed_off_and_the_others_finish(tmp_path):
    with FakeOpenAI() as a, FakeOpenAI() as b:
        a.latency = b.latency = 0.05
        backend = make(tmp_path, [a.url, b.url], retries=4)
        seen_by_b = {}

        async def many():
            async def killer():
                while len(b.chat_requests) < 4:
                    await asyncio.sleep(0.01)
                seen_by_b["n"] = b.kill()
            try:
                kill = asyncio.create_task(killer())
                results = await asyncio.gather(*(backend.chat(
                    [{"role": "user", "content": f"q{i}"}], template_hash="t") for i in range(40)))
                await kill
                return results
            finally:
                await backend.aclose()
        results = asyncio.run(many())
        assert len(results) == 40 and all(r.text.startswith("caption for: q") for r in results)
        assert len(b.chat_requests) == seen_by_b["n"]          # nothing reached b after its death
        assert len(a.chat_requests) >= 40 - seen_by_b["n"]     # a carried everything else


def test_public_url_drops_the_login_and_never_raises():
    from stages.errors import public_url

    assert public_url("http://user:s3cret@host:7860/v1?key=s3cret#x") == "http://host:7860/v1"
    assert public_url("https://[::1]:8000/v1") == "https://[::1]:8000/v1"
    # a malformed port is shown as written, not turned into a crash inside an error message
    assert public_url("http://me:s3cret@127.0.0.1:7860-alt/") == "http://127.0.0.1:7860-alt/"
