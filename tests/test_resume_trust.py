"""A skeptical user's attempts to make a rerun trust something it should not, each from the
command line (caption.py's own main, the scripted OpenAI-compatible server, real photos).

Every test here reproduces a way the resume promise once broke: a cache answered for another
model, an edited wiki text never re-summarised, one odd file stopped the batch, a corrupt tag
store was silently replaced, identical requests in flight were sent twice, a crash left a
caption that looked hand-written, and a typo in a path looked like success.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, llm_overrides
from fakes import FakeOpenAI, Fault
from PIL import Image

import caption

LONG_WIKI = {
    "cat": "A small domesticated carnivorous mammal with soft fur. It is often kept as a pet.",
    "cup": "A small open container used for drinking. It usually has a handle.",
    "table": "A piece of furniture with a flat top on legs. People eat and work at it.",
}


def photo(name: str, size=(96, 64)) -> Image.Image:
    from skimage import data

    return Image.fromarray(getattr(data, name)()).resize(size)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A project with two tagged photos, a wiki file and the shipped config and templates."""
    import shutil

    shutil.copytree(ROOT / "templates", tmp_path / "templates")
    shutil.copy(ROOT / "config.ini", tmp_path / "config.ini")
    images = tmp_path / "images"
    images.mkdir()
    photo("chelsea").save(images / "cat.jpg")
    (images / "cat.txt").write_text("cat, table\n", encoding="utf-8")
    photo("coffee").save(images / "cup.jpg")
    (images / "cup.txt").write_text("cup, table\n", encoding="utf-8")
    (tmp_path / "wiki.json").write_text(json.dumps(LONG_WIKI), encoding="utf-8")
    return tmp_path


def run(project: Path, url: str, *sets: str, args: tuple[str, ...] = (), model: str = "") -> int:
    argv = ["--config", str(project / "config.ini"), "--quiet", *args]
    values = llm_overrides(url, **{"vision.backend": "openai", "llm.model": model,
                                   "tags.wiki_file": str(project / "wiki.json")})
    for item in values + list(sets):
        argv += ["--set", item]
    return caption.main(argv)


def captions(project: Path, folder_name: str = "captions") -> dict[str, str]:
    root = project / folder_name
    return {p.stem: p.read_text(encoding="utf-8") for p in sorted(root.glob("*.txt"))}


# -- 1. the served model is part of every key ---------------------------------------------------

def test_another_model_behind_the_same_url_is_asked_again(folder, capsys):
    with FakeOpenAI(models=("alpha",), reply=lambda r: f"answer from {r['model']}") as server:
        assert run(folder, server.url) == 0
        first = len(server.chat_requests)
        assert first and {r["model"] for r in server.chat_requests} == {"alpha"}
        assert run(folder, server.url) == 0
        assert len(server.chat_requests) == first               # same model: all reused
        server.models = ("beta",)
        assert run(folder, server.url, f"paths.captions={folder / 'captions-beta'}") == 0
        asked = server.chat_requests[first:]
        assert len(asked) == first and {r["model"] for r in asked} == {"beta"}
    meta = json.loads((folder / "captions-beta" / "cat.json").read_text())
    assert meta["llm"]["model"] == "beta"
    # every candidate came from beta (the verifier then keeps one or composes a fallback)
    for name in ("cat", "cup"):
        meta = json.loads((folder / "captions-beta" / f"{name}.json").read_text())
        assert all("beta" in c["caption"] for c in meta["candidates"])


def test_several_models_and_no_llm_model_is_one_line_exit_2(folder, capsys):
    with FakeOpenAI(models=("alpha", "beta")) as server:
        assert run(folder, server.url) == 2
        assert not server.chat_requests
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "alpha" in err[0] and "beta" in err[0] and "llm.model" in err[0]


def test_two_urls_serving_different_models_stop_the_run(folder, capsys):
    with FakeOpenAI(models=("alpha",)) as a, FakeOpenAI(models=("beta",)) as b:
        assert run(folder, f"{a.url},{b.url}") == 2
        assert not a.chat_requests and not b.chat_requests
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "alpha" in err[0] and "beta" in err[0]


# -- 2. the wiki text is an input of its tag ------------------------------------------------------

def test_editing_one_wiki_text_resummarises_that_tag_only(folder):
    with FakeOpenAI() as server:
        assert run(folder, server.url, args=("--only", "tags")) == 0
        assert len(server.chat_requests) == 3                   # cat, cup, table
        assert run(folder, server.url, args=("--only", "tags")) == 0
        assert len(server.chat_requests) == 3
        wiki = dict(LONG_WIKI, cup="A drinking vessel with a handle. It holds hot drinks.")
        (folder / "wiki.json").write_text(json.dumps(wiki))
        assert run(folder, server.url, args=("--only", "tags")) == 0
        again = server.chat_requests[3:]
        assert len(again) == 1 and "drinking vessel" in json.dumps(again[0])


def test_a_tag_without_wiki_is_summarised_once_its_text_is_added(folder):
    (folder / "wiki.json").write_text(json.dumps({k: v for k, v in LONG_WIKI.items() if k != "table"}))
    with FakeOpenAI() as server:
        assert run(folder, server.url, args=("--only", "tags")) == 0
        store = json.loads((folder / "cache" / "tags.json").read_text())["tags"]
        assert store["table"]["status"] == "no_wiki"
        before = len(server.chat_requests)
        (folder / "wiki.json").write_text(json.dumps(LONG_WIKI))
        assert run(folder, server.url, args=("--only", "tags")) == 0
        assert len(server.chat_requests) == before + 1
    store = json.loads((folder / "cache" / "tags.json").read_text())["tags"]
    assert store["table"]["status"] == "found" and store["table"]["summary"]


# -- 3. one odd entry is one failed item, in runs and in dry runs --------------------------------

def odd_entries(images: Path) -> set[str]:
    photo("astronaut").save(images / "odd.jpg")
    (images / "odd.txt").mkdir()                                # a folder named like a tag file
    photo("astronaut").save(images / "loop.jpg")
    os.symlink("loop.txt", images / "loop.txt")                 # a symlink to itself (ELOOP)
    photo("astronaut").save(images / "latin.jpg")
    (images / "latin.txt").write_bytes("caf\xe9, table\n".encode("latin-1"))
    return {"odd", "loop", "latin"}


@pytest.mark.parametrize("dry", [False, True])
def test_unreadable_tag_files_fail_their_item_and_the_rest_is_captioned(folder, capsys, dry):
    bad = odd_entries(folder / "images")
    with FakeOpenAI() as server:
        code = run(folder, server.url, args=("--dry-run",) if dry else ())
        if dry:
            assert not server.chat_requests
    out = capsys.readouterr().out
    assert code == 1
    word = "WOULD FAIL" if dry else "FAILED"
    for name in bad:
        assert any(line.strip().startswith(f"{word} {name}") for line in out.splitlines()), (name, out)
    assert "utf-8" in out.lower() and "latin" in out
    if not dry:
        assert set(captions(folder)) == {"cat", "cup"}
        summary = json.loads((folder / "cache" / "summary-caption.json").read_text())
        failed = {f["id"] for s in summary["stages"] for f in s["failed"]}
        assert bad <= failed
        assert "caf\ufffd" not in (folder / "cache" / "tags.json").read_text()


# -- 4. a corrupt tag store is kept, set aside and said --------------------------------------------

def test_a_truncated_tag_store_is_moved_aside_never_overwritten(folder, capsys, caplog):
    """The broken store is kept byte for byte beside the new one, the run says so, and the
    summaries already made come back from the call cache (no new model calls)."""
    with FakeOpenAI() as server:
        assert run(folder, server.url, args=("--only", "tags")) == 0
        store = folder / "cache" / "tags.json"
        broken = store.read_bytes()[: store.stat().st_size // 2]
        store.write_bytes(broken)
        capsys.readouterr()
        assert run(folder, server.url, args=("--only", "tags")) == 0
        said = capsys.readouterr()
        assert len(server.chat_requests) == 3
    aside = list(store.parent.glob("tags.json.corrupt-*"))
    assert len(aside) == 1 and aside[0].read_bytes() == broken
    assert f"moved to {aside[0].name}" in said.out
    assert aside[0].name in said.err + caplog.text
    entries = json.loads(store.read_text())["tags"]
    assert set(entries) == {"cat", "cup", "table"} and all(e["summary"] for e in entries.values())


# -- 5. identical requests in flight are sent once -------------------------------------------------

@pytest.mark.parametrize("concurrency", [1, 8])
def test_identical_items_make_one_call_each_whatever_the_concurrency(folder, concurrency):
    images = folder / "images"
    for p in images.iterdir():
        p.unlink()
    for i in range(16):
        photo("chelsea").save(images / f"cat{i:02d}.jpg")
        (images / f"cat{i:02d}.txt").write_text("cat, table\n", encoding="utf-8")
    with FakeOpenAI() as server:
        server.latency = 0.02
        assert run(folder, server.url, f"llm.concurrency={concurrency}") == 0
        # 2 tag summaries + 1 vision answer + 3 caption candidates (interpret.candidates):
        # the 16 images ask the same things
        assert len(server.chat_requests) == 2 + 1 + 3
    assert len(set(captions(folder).values())) == 1 and len(captions(folder)) == 16


# -- 6. a crash between the provenance and the caption leaves nothing that looks hand-written -----

def run_killed_at(project: Path, url: str, point: str, *sets: str) -> subprocess.CompletedProcess:
    argv = [sys.executable, str(ROOT / "caption.py"), "--config", str(project / "config.ini"),
            "--quiet"]
    values = llm_overrides(url, **{"vision.backend": "openai", "llm.model": "",
                                   "tags.wiki_file": str(project / "wiki.json")})
    for item in values + list(sets):
        argv += ["--set", item]
    env = dict(os.environ, TAGCAP_KILL_AT=point)
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)


def first_caption(request: dict) -> str:
    """A caption that passes the verifier: the draft the interpret template sends, reworded."""
    content = request["messages"][-1]["content"]
    marker = "Draft from the tags: "    # the full template (not embedded)
    if isinstance(content, str) and (content.startswith("Notes: ") or marker in content):
        draft = content.split(marker, 1)[1] if marker in content else content[len("Notes: "):]
        return draft.split("\n", 1)[0].replace(" with ", " beside ") + "."
    return "A picture."


def test_kill_between_the_two_writes_then_rerun_writes_the_caption(folder):
    import hashlib

    def replaces() -> list[str | None]:
        return [json.loads((folder / "captions" / f"{n}.json").read_text())["replaces_sha256"]
                for n in ("cat", "cup") if (folder / "captions" / f"{n}.json").exists()]

    with FakeOpenAI(reply=first_caption) as server:
        done = run_killed_at(folder, server.url, "interpret.between_writes")
        assert done.returncode == -9, done.stderr
        assert not captions(folder) and set(replaces()) == {None}   # provenance only, no .txt
        assert run(folder, server.url) == 0
        first = {"cat": "A cat beside a table.\n", "cup": "A cup beside a table.\n"}
        assert captions(folder) == first

        # a replacement killed in the same window: the old caption is ours, so it is redone
        done = run_killed_at(folder, server.url, "interpret.between_writes", "interpret.trigger_words=zz")
        assert done.returncode == -9
        assert captions(folder) == first                            # nothing replaced yet
        old = {hashlib.sha256(text.encode()).hexdigest() for text in first.values()}
        assert old & set(replaces()) and set(replaces()) <= {None} | old   # the killed item's provenance
        assert run(folder, server.url, "interpret.trigger_words=zz") == 0
    assert captions(folder) == {name: "zz, " + text for name, text in first.items()}


def test_a_hand_edited_caption_is_kept(folder):
    with FakeOpenAI() as server:
        assert run(folder, server.url) == 0
        (folder / "captions" / "cat.txt").write_text("my own words\n")
        assert run(folder, server.url, "interpret.trigger_words=zz") == 0
    assert captions(folder)["cat"] == "my own words\n"
    assert captions(folder)["cup"].startswith("zz, ")


# -- 7. a typo or an empty folder does not look like success --------------------------------------

def test_missing_images_folder_is_exit_2_and_empty_folder_says_so(folder, capsys):
    with FakeOpenAI() as server:
        assert run(folder, server.url, f"paths.images={folder / 'imgaes'}") == 2
        assert "paths.images" in capsys.readouterr().err
        (folder / "empty").mkdir()
        assert run(folder, server.url, f"paths.images={folder / 'empty'}") == 0
        assert not server.chat_requests
    out = capsys.readouterr().out
    assert f"no images found in {folder / 'empty'}" in out


# -- 8. odd server answers are not retried as if the network failed -------------------------------

def test_an_answer_of_the_wrong_shape_is_retried_then_fails_only_its_item(folder, capsys):
    """A body that is JSON but not a chat completion is a server fault: retried, then the item
    fails with the reason; the other items are summarised."""
    with FakeOpenAI() as server:
        wrong = Fault("malformed", body='{"choices": "nope"}')
        server.fault_when = lambda request: wrong if "drinking" in json.dumps(request) else None
        assert run(folder, server.url, args=("--only", "tags")) == 1   # 1 + 3 retries for cup
        assert len(server.chat_requests) == 4 + 2
    out = capsys.readouterr().out
    failed = [line for line in out.splitlines() if line.strip().startswith("FAILED")]
    assert len(failed) == 1 and "malformed response" in failed[0] and "4 attempts" in failed[0]


def chat_backend(tmp_path: Path, url: str, **cfg):
    from stages.backends.chat import CallStats, ChatBackend
    from stages.config import LLMConfig
    from stages.store import CallCache

    stats = CallStats()
    backend = ChatBackend(LLMConfig(base_url=(url,), model="fake-model", backoff=0.01, **cfg),
                          CallCache(tmp_path / "calls"), stats, cache_dir=tmp_path)
    return backend, stats


def ask(backend, **kw):
    import asyncio

    async def go():
        try:
            await backend.start()
            return await backend.chat([{"role": "user", "content": "hi"}], template_hash="t", **kw)
        finally:
            await backend.aclose()
    return asyncio.run(go())


def test_a_programming_error_is_raised_at_once_not_retried_as_a_server_fault(tmp_path):
    """A mistake of ours (here an unknown sampling parameter) raises as itself at once: it is
    never counted as a server fault, retried, or turned into a failed item."""
    with FakeOpenAI() as server:
        backend, stats = chat_backend(tmp_path, server.url)
        with pytest.raises(TypeError, match="temprature"):
            ask(backend, temprature=0.5)
        assert not server.chat_requests and stats.retries == 0


def test_an_explicit_json_schema_mode_is_honoured_or_the_item_fails(tmp_path):
    """`llm.structured = json_schema` on a server without it: one request, then the item fails
    naming the setting; nothing silently falls back to a weaker mode."""
    from stages.errors import ItemError

    schema = {"type": "object", "required": ["ok"], "properties": {"ok": {"type": "boolean"}}}
    with FakeOpenAI(reject_json_schema=True, capability_status=400) as server:
        backend, _ = chat_backend(tmp_path, server.url, structured="json_schema")
        with pytest.raises(ItemError, match="llm.structured"):
            ask(backend, schema=schema)
        assert [r["response_format"]["type"] for r in server.chat_requests] == ["json_schema"]
    with FakeOpenAI(lambda r: '{"ok": true}', reject_json_schema=True, capability_status=400) as server:
        backend, _ = chat_backend(tmp_path / "auto", server.url, structured="auto")
        assert ask(backend, schema=schema) is not None                 # auto may fall back
        assert [r["response_format"]["type"] for r in server.chat_requests][:2] == [
            "json_schema", "json_object"]


def test_plans_and_summaries_say_when_a_limit_cut_the_work(project, capsys):
    import refine

    with FakeOpenAI() as server:
        args = ["--config", str(project / "config.ini"), "--quiet", "--dry-run",
                "--set", "upsample.benchmark=parti", "--set", "upsample.limit=5",
                "--set", f"llm.base_url={server.url}"]
        assert refine.main(args) == 0
        assert not server.requests            # a plan asks only which model is served (GET)
    out = capsys.readouterr().out
    assert "upsample: would process 5, reuse 0 (cut by upsample.limit = 5: 5 of 1,632 prompts)" in out
    assert "generate: would process 0, reuse 0 [its items come from the earlier stages" in out


# -- found by review: what else a rerun could trust ------------------------------------------------

def digest_reply(request: dict) -> str:
    """Vision answers name the picture they saw (a hash of its data URL)."""
    import hashlib

    content = request["messages"][-1]["content"]
    if isinstance(content, list):
        data = next(p["image_url"]["url"] for p in content if p.get("type") == "image_url")
        return "a picture with digest " + hashlib.sha256(data.encode()).hexdigest()[:8]
    return "caption for: " + json.dumps(content)[-60:]


def test_a_replaced_image_is_never_captioned_from_the_old_vision_answer(folder, capsys):
    """With interrogate skipped (or failed) after the picture changed, its old answer
    describes another image: interpret fails the item instead of captioning from it."""
    with FakeOpenAI(digest_reply) as server:
        assert run(folder, server.url) == 0
        before = captions(folder)
        photo("astronaut").save(folder / "images" / "cat.jpg")      # a new picture, same name
        capsys.readouterr()
        assert run(folder, server.url, "interrogate.skip=true") == 1
    out = capsys.readouterr().out
    failed = [line for line in out.splitlines() if line.strip().startswith("FAILED")]
    assert len(failed) == 1 and "FAILED cat: " in failed[0]
    assert "describes an earlier version of this image" in failed[0]
    assert captions(folder) == before


def test_images_sharing_a_name_fail_instead_of_sharing_a_caption(folder, capsys):
    photo("astronaut").save(folder / "images" / "cat.png")         # cat.jpg and cat.png: id "cat"
    with FakeOpenAI(digest_reply) as server:
        assert run(folder, server.url) == 1
        calls = len(server.chat_requests)
        assert run(folder, server.url) == 1
        assert len(server.chat_requests) == calls                   # settled: nothing redone
    out = capsys.readouterr().out
    assert "several images share the name 'cat' (cat.jpg, cat.png)" in out
    assert set(captions(folder)) == {"cup"}


def test_a_kill_before_the_copy_beside_the_image_is_redone(folder):
    beside = "interpret.write_beside_images=true"
    with FakeOpenAI(lambda r: "a caption") as server:
        assert run(folder, server.url, beside) == 0
        done = run_killed_at(folder, server.url, "interpret.before_beside", beside,
                             "interpret.trigger_words=zz")
        assert done.returncode == -9
        assert run(folder, server.url, beside, "interpret.trigger_words=zz") == 0
    for name in ("cat", "cup"):
        text = (folder / "captions" / f"{name}.txt").read_text()
        assert text.startswith("zz, ") and (folder / "images" / f"{name}.caption").read_text() == text


def tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def test_a_dry_run_changes_no_file_even_with_a_corrupt_store(folder, capsys):
    with FakeOpenAI() as server:
        assert run(folder, server.url) == 0
        store = folder / "cache" / "tags.json"
        store.write_bytes(store.read_bytes()[:40])
        calls = len(server.chat_requests)
        photo("astronaut").save(folder / "images" / "new.jpg")
        before = tree(folder)
        assert run(folder, server.url, args=("--dry-run",)) == 0
        assert len(server.chat_requests) == calls
    assert tree(folder) == before
    assert "cannot be read" in capsys.readouterr().out


def test_an_empty_answer_is_not_cached_and_is_asked_again(folder):
    answers = {"cup": iter(["", "A container for drinks."])}

    def reply(request):
        text = json.dumps(request["messages"])
        if "drinking" in text:
            return next(answers["cup"])
        return "A fine summary."
    with FakeOpenAI(reply) as server:
        assert run(folder, server.url, args=("--only", "tags")) == 1
        assert run(folder, server.url, args=("--only", "tags")) == 0   # asked again, answered
        assert len(server.chat_requests) == 4
    store = json.loads((folder / "cache" / "tags.json").read_text())["tags"]
    assert store["cup"]["summary"] == "A container for drinks."


def test_credentials_in_the_llm_url_are_never_printed(folder, capsys):
    assert run(folder, "http://alice:s3cretTOKEN@127.0.0.1:9/v1") == 2
    with FakeOpenAI(models=("a", "b")) as server:
        url = server.url.replace("http://", "http://alice:s3cretTOKEN@")
        assert run(folder, url) == 2
    said = capsys.readouterr()
    assert "s3cretTOKEN" not in said.out + said.err and "alice" not in said.err
    assert "127.0.0.1" in said.err


def test_one_refused_image_after_others_were_accepted_fails_only_that_item(folder, capsys):
    seen = []

    class Picky(FakeOpenAI):
        def _capability_error(self, request):
            if any(isinstance(m.get("content"), list) for m in request["messages"]):
                seen.append(1)
                if len(seen) == 2:
                    return "image format not supported for this file"
            return ""
    with Picky(digest_reply, capability_status=400) as server:
        assert run(folder, server.url, "llm.concurrency=1", args=("--only", "interrogate")) == 1
    out = capsys.readouterr().out
    assert out.count("FAILED") == 1 and "refused this image" in out


def test_a_model_folder_fine_tuned_in_place_is_a_new_model(tmp_path):
    """Same file names and sizes, other weights: every identity built on the folder changes."""
    from stages.backends.hub import folder_fingerprint
    from stages.backends.images import DiffusersBackend

    model = tmp_path / "my-sdxl"
    (model / "unet").mkdir(parents=True)
    (model / "model_index.json").write_text('{"_class_name": "StableDiffusionXLPipeline"}')
    weights = model / "unet" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(bytes(range(256)) * 64)
    memo = tmp_path / "cache" / "digests.json"
    first = folder_fingerprint(model, memo)
    ident = DiffusersBackend(str(model), cache_dir=tmp_path / "cache", device="cpu").identity()
    weights.write_bytes(bytes(reversed(range(256))) * 64)          # same size, new content
    assert folder_fingerprint(model, memo) != first
    again = DiffusersBackend(str(model), cache_dir=tmp_path / "cache", device="cpu").identity()
    assert again["weights"] != ident["weights"]
    assert folder_fingerprint(model, memo) == folder_fingerprint(model)   # the memo is exact


def test_upsampled_index_leaves_out_results_made_with_other_settings(project, capsys):
    """A --limit run after a template change redoes one prompt: the index must not list the
    other prompt's old result as if it were current."""
    import refine

    def go(server, *extra: str) -> int:
        args = ["--config", str(project / "config.ini"), "--quiet", "--only", "upsample", *extra]
        for item in llm_overrides(server.url, **{"upsample.benchmark": "parti", "upsample.limit": "2"}):
            args += ["--set", item]
        return refine.main(args)

    template = project / "templates" / "upsample.txt"
    with FakeOpenAI(lambda r: "a longer prompt " + str(len(json.dumps(r)))) as server:
        assert go(server) == 0
        template.write_text(template.read_text() + "\nBe vivid.\n")
        capsys.readouterr()
        assert go(server, "--limit", "1") == 0
    rows = [json.loads(line) for line in
            (project / "runs" / "default" / "upsampled.jsonl").read_text().splitlines()]
    assert len(rows) == 1
    assert "1 upsampled prompts made with other settings left out" in capsys.readouterr().out


def test_a_dry_run_with_the_embedded_model_writes_nothing(folder):
    args = ["--config", str(folder / "config.ini"), "--quiet", "--dry-run",
            "--set", "llm.base_url=local", "--set", f"tags.wiki_file={folder / 'wiki.json'}"]
    before = tree(folder)
    assert caption.main(args) == 0
    assert tree(folder) == before and not (folder / "cache").exists()
