"""Every config key against every stage: a changed setting changes an item's key exactly when
the stage declares it (as a setting, through the item's own inputs, or through a backend's
identity), and changes whether a finished output counts as finished exactly when the stage
declares it a completion setting. Settings that are *resolved* (server URLs, devices) must
not change a key when they resolve to the same thing.

Keys are computed by the real stages on a small real project (photos, tag files, a wiki file,
a benchmark file, a run folder), with the LLM's model resolved from real local servers.
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import os
import shutil
import tarfile
import typing
from pathlib import Path

import pytest
from fakes import FakeDanbooru, FakeOpenAI
from PIL import Image

from stages.backends.images import save_png
from stages.config import SECTIONS, ConfigView, UndeclaredSetting, all_keys, load_config
from stages.errors import ConfigError
from stages.generate import KEY_CHUNK, image_key
from stages.registry import PROGRAMS, stage_class
from stages.resources import spec
from stages.stage import Context, RunOptions

ROOT = Path(__file__).resolve().parent.parent
# Resolved settings: they enter keys only through what they resolve to (the model a server
# serves, the device really used); the alternative below resolves to the same thing.
RESOLVED = {"llm.base_url", "vision.base_url", "vision.device", "generate.device"}


# -- the project every key is computed on -----------------------------------------------------

@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from skimage import data

    root = tmp_path_factory.mktemp("world")
    for name in ("templates",):
        shutil.copytree(ROOT / name, root / name)
    shutil.copy(ROOT / "config.ini", root / "config.ini")
    images = root / "images"
    images.mkdir()
    Image.fromarray(data.chelsea()).resize((96, 64)).save(images / "cat.jpg")
    (images / "cat.txt").write_text("cat, animal, highres\n", encoding="utf-8")
    Image.fromarray(data.coffee()).resize((96, 64)).save(images / "cup.jpg")
    (images / "cup.txt").write_text("cup, table\n", encoding="utf-8")
    shard_members = {"cat.jpg": (images / "cat.jpg").read_bytes(), "cat.txt": b"cat, animal, highres\n",
                     "cat.json": json.dumps({"tags": ["cup", "table"]}).encode(),
                     "cat.tags": b"animal, table\n", "cat.png": (images / "cup.jpg").read_bytes()}
    (root / "shards").mkdir()
    with tarfile.open(root / "shards" / "00000.tar", "w") as tar:   # img2dataset's layout
        for name, blob in shard_members.items():
            info = tarfile.TarInfo(name)
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    (root / "data").mkdir()
    (root / "data" / "wiki.json").write_text(json.dumps({
        "cat": "A small furry animal kept as a pet.", "animal": "Any living creature that is not a plant.",
        "cup": "A small open container for drinking."}), encoding="utf-8")
    (root / "data" / "bench.jsonl").write_text(
        '{"id": "p1", "prompt": "a red cube on a blue sphere", "category": "Shapes"}\n'
        '{"id": "p2", "prompt": "two cats", "category": "Animals"}\n', encoding="utf-8")
    (root / "models").mkdir()
    (root / "models" / "other.gguf").write_bytes(b"GGUF not really a model")
    (root / "models" / "judge.gguf").write_bytes(b"GGUF not really a judge")
    (root / "models" / "sdxl-b").mkdir()
    (root / "models" / "sdxl-b" / "model_index.json").write_text('{"_class_name": "SDXLPipeline"}')
    for name, width in (("blip-a", 32), ("blip-b", 48)):
        (root / "models" / name).mkdir()
        (root / "models" / name / "config.json").write_text(json.dumps({"model_type": "blip",
                                                                         "hidden": width}))
    cache = root / "cache"
    (cache / "interrogate").mkdir(parents=True)
    (cache / "tags.json").write_text(json.dumps({"version": 1, "tags": {
        "cat": {"summary": "A small furry pet.", "key": "k"},
        "animal": {"summary": "A living creature.", "key": "k",
                   "category": "copyright"}}}))     # so that tags.drop_copyright changes keys
    from stages.store import sha256_file

    (cache / "interrogate" / "cat.json").write_text(json.dumps({
        "answer": "most likely a tabby cat", "image_sha256": sha256_file(images / "cat.jpg")}))
    run = root / "runs" / "default"
    (run / "images" / "p1").mkdir(parents=True)
    (run / "prompts.jsonl").write_text('{"id": "p1", "prompt": "a red cube on a blue sphere", '
                                       '"category": "Shapes"}\n')
    (run / "upsampled.jsonl").write_text('{"id": "p1", "upsampled": "a glossy red cube resting on '
                                         'a matte blue sphere"}\n')
    from stages.backends.images import save_png

    for variant in ("original", "upsampled"):
        save_png(run / "images" / "p1" / f"{variant}-s0.png", Image.new("RGB", (16, 16), (200, 0, 0)),
                 {"tagcap_key": f"key-{variant}"})
    with FakeOpenAI(models=("alpha", "gamma")) as a, FakeOpenAI(models=("alpha", "gamma")) as b, \
            FakeDanbooru({}) as danbooru:
        yield {"root": root, "a": a.url, "b": b.url, "danbooru": danbooru.url}


def modified_copy(world: dict, path: Path) -> Path:
    """A copy of a file with different text (a template gets one more line)."""
    target = world["root"] / "alt" / path.name
    target.parent.mkdir(exist_ok=True)
    if path.suffix == ".json":                          # a wiki file: other text for every tag
        data = json.loads(path.read_text())
        target.write_text(json.dumps({k: v + " Edited." for k, v in data.items()}))
    else:
        target.write_text(path.read_text() + "\nAlso: be exact.\n")
    return target


def folder_copy(world: dict, path: Path, name: str) -> Path:
    target = world["root"] / "copies" / name
    if not target.exists():
        shutil.copytree(path, target)
    return target


# -- scenarios: a stage, the settings it runs under, and the item whose key is watched ---------

def base_sets(world: dict) -> dict[str, str]:
    return {"llm.base_url": world["a"], "llm.model": "alpha", "run.progress": "false",
            "upsample.benchmark": "data/bench.jsonl", "tags.url": world["danbooru"]}


SCENARIOS = {
    "tags/file": ("tags", {}, "cat"),
    "tags/danbooru": ("tags", {"tags.source": "danbooru"}, "cat"),
    "tags/embedded-llm": ("tags", {"llm.base_url": "local", "llm.model": ""}, "cat"),
    "interrogate/classifier": ("interrogate", {}, "cat"),
    "interrogate/openai": ("interrogate", {"vision.backend": "openai"}, "cat"),
    "interrogate/blip": ("interrogate", {"vision.backend": "blip", "vision.model": "models/blip-a"}, "cat"),
    "interpret": ("interpret", {}, "cat"),
    # WebDataset shard input: [input] keys change what a sample's image and tags are
    "interpret/shards": ("interpret", {"paths.images": "shards"}, "00000/cat"),
    "interrogate/openai-shards": ("interrogate", {"paths.images": "shards",
                                                  "vision.backend": "openai"}, "00000/cat"),
    "upsample": ("upsample", {}, "p1"),
    "generate/diffusers": ("generate", {}, "p1"),
    "generate/a1111": ("generate", {"generate.backend": "a1111", "generate.model": "sdxl-base"}, "p1"),
    "socratic/clip": ("socratic", {}, "p1"),
    "socratic/judge": ("socratic", {"vision.backend": "openai", "socratic.select": "judge"}, "p1"),
    "evaluate/classifier": ("evaluate", {}, "p1"),
    "evaluate/openai": ("evaluate", {"vision.backend": "openai"}, "p1"),
    # a judge of its own on the embedded server (it crashed with UndeclaredSetting: issue 19)
    "evaluate/embedded-judge": ("evaluate", {"llm.base_url": "local", "llm.model": "",
                                             "evaluate.judge_model": "JUDGE_GGUF"}, "p1"),
}

# Alternatives that a type alone cannot give (a value that is valid and means something else).
SPECIAL = {
    "llm.model": lambda w, sc: (str(w["root"] / "models" / "other.gguf") if "embedded" in sc
                                else "gamma"),
    "llm.base_url": lambda w, sc: None if "embedded" in sc else w["b"],
    "vision.base_url": lambda w, sc: w["b"],
    "vision.model": lambda w, sc: "models/blip-b" if sc == "interrogate/blip" else "gamma",
    "vision.backend": lambda w, sc: ("classifier" if any(k in sc for k in ("openai", "/judge", "blip"))
                                     else "openai"),
    "vision.device": lambda w, sc: "cpu",
    "generate.device": lambda w, sc: "cpu",
    "generate.backend": lambda w, sc: "diffusers" if "a1111" in sc else "a1111",
    # a1111: a checkpoint title; diffusers: a local pipeline folder (a hub id must be
    # obtainable, and this machine has no hub: the check a dry run makes refuses it)
    "generate.model": lambda w, sc: "other/model" if "a1111" in sc else str(w["root"] / "models" / "sdxl-b"),
    "generate.refiner": lambda w, sc: "tiny",
    "generate.scheduler": lambda w, sc: "EulerAncestralDiscreteScheduler",
    "generate.dtype": lambda w, sc: "float16",
    "generate.width": lambda w, sc: "128",
    "generate.height": lambda w, sc: "128",
    "tags.url": lambda w, sc: "http://127.0.0.2:8",
    "tags.source": lambda w, sc: "file" if "danbooru" in sc else "danbooru",
    "tags.blacklist": lambda w, sc: "animal",
    "upsample.categories": lambda w, sc: "Shapes",
    "upsample.benchmark": lambda w, sc: str(folder_copy(w, w["root"] / "data", "data") / "bench.jsonl"),
    "evaluate.metrics": lambda w, sc: "clipscore",
    "generate.seeds": lambda w, sc: "7, 0",               # another first seed (the loop's)
    "evaluate.clip_model": lambda w, sc: "other/clip",
    "evaluate.text_model": lambda w, sc: "other/text",
    "evaluate.judge_model": lambda w, sc: (str(w["root"] / "models" / "other.gguf") if "embedded" in sc
                                           else "gamma"),
    "evaluate.vision_model": lambda w, sc: "gamma" if "openai" in sc else "models/blip-b",
    "generate.api_auth_env": lambda w, sc: auth_variable(),
    "interpret.beside_extension": lambda w, sc: ".cap",
    "socratic.select": lambda w, sc: None if sc == "socratic/clip" else "clip",
    "run.name": lambda w, sc: (shutil.copytree(folder_copy(w, w["root"] / "runs" / "default", "other-run"),
                                               w["root"] / "runs" / "other", dirs_exist_ok=True),
                               "other")[-1],
    "paths.runs": lambda w, sc: str(folder_copy(w, w["root"] / "runs", "runs")),
    "paths.images": lambda w, sc: (str(folder_copy(w, w["root"] / "shards", "shards")) if "shards" in sc
                                   else str(folder_copy(w, w["root"] / "images", "images"))),
    "input.image_column": lambda w, sc: "png",             # cat.png: another picture
    "input.tags_column": lambda w, sc: "tags",             # cat.tags: other tags
    "input.tags_json_field": lambda w, sc: "tags",         # cat.json's "tags": other tags
    "input.key_column": lambda w, sc: "id",
    "paths.cache": lambda w, sc: str(folder_copy(w, w["root"] / "cache", "cache")),
    "paths.captions": lambda w, sc: str(w["root"] / "other-captions"),
}
# Alternatives that are invalid in a scenario, and why (the scenario's base forbids them).
NOT_APPLICABLE = {
    ("tags/embedded-llm", "llm.base_url"): "no other URL serves the packaged GGUF",
    ("socratic/clip", "socratic.select"): "select = judge needs vision.backend = openai",
    ("tags/embedded-llm", "llm.backend"): "llm.backend = vllm needs llm.model",
    ("evaluate/embedded-judge", "llm.base_url"): "no other URL serves the packaged GGUF",
    ("evaluate/embedded-judge", "llm.backend"): "llm.backend = vllm needs llm.model",
    ("socratic/judge", "vision.backend"): "select = judge needs vision.backend = openai",
    ("interpret/shards", "interpret.write_beside_images"): "shard captions go to SHARD.parquet",
}
NOT_APPLICABLE.update({(sc, "generate.backend"): "a1111 needs generate.model to name a web UI "
                       "checkpoint, not 'tiny'" for sc in SCENARIOS if sc != "generate/a1111"})
NOT_APPLICABLE[("generate/a1111", "generate.backend")] = (
    "diffusers refuses the web UI checkpoint name 'sdxl-base' when the stage starts (no such folder "
    "or hub id), as the run would")


def auth_variable() -> str:
    """The name of an environment variable that holds a USER:PASSWORD login (A1111 --api-auth)."""
    os.environ["TAGCAP_TEST_A1111_AUTH"] = "tester:secret"
    return "TAGCAP_TEST_A1111_AUTH"


def field_of(name: str) -> tuple[typing.Any, dict]:
    section, _, key = name.partition(".")
    cls = SECTIONS[section]
    f = next(f for f in dataclasses.fields(cls) if f.name == key)
    return typing.get_type_hints(cls)[key], dict(f.metadata)


def alternative(world: dict, scenario: str, name: str, current: typing.Any) -> str | None:
    """A valid value other than `current`, as it would be written after --set."""
    if name in SPECIAL:
        value = SPECIAL[name](world, scenario)
        return None if value is None else str(value)
    tp, meta = field_of(name)
    if meta.get("choices"):
        return next(c for c in meta["choices"] if c != current and c != "blip")
    if tp is bool:
        return str(not current).lower()
    if tp is int:
        high = meta.get("max")
        return str(current + 1 if high is None or current + 1 <= high else current - 1)
    if tp is float:
        high = meta.get("max")
        value = current + 0.1 if high is None or current + 0.1 <= high else current - 0.1
        return repr(round(value, 6))
    if tp is Path:
        return str(modified_copy(world, current))
    if typing.get_origin(tp) is tuple:
        extra = "7" if typing.get_args(tp)[0] is int else "alt"
        return ",".join([*map(str, current), extra])
    if meta.get("pattern"):
        return "other"
    return f"{current}-alt" if current else "alt-value"


def build(world: dict, scenario: str, extra: dict[str, str]):
    stage_name, sets, _ = SCENARIOS[scenario]
    values = {**base_sets(world), **sets, **extra}
    values = {k: str(world["root"] / "models" / "judge.gguf") if v == "JUDGE_GGUF" else v
              for k, v in values.items()}
    cfg = load_config(world["root"] / "config.ini", [f"{k}={v}" for k, v in values.items()],
                      cwd=world["root"])
    program = next(p for p, names in PROGRAMS.items() if stage_name in names)
    ctx = Context(cfg, program=program, options=RunOptions(quiet=True))
    return ctx, stage_class(stage_name)(ctx)


def key_and_done(world: dict, scenario: str, extra: dict[str, str]) -> tuple[str, bool, set[str]]:
    """(the watched item's key, whether its output counts as finished, the declared settings)."""
    ctx, stage = build(world, scenario, extra)
    wanted = SCENARIOS[scenario][2]

    async def go():
        try:
            stage.prepare()
            await stage.start()
            item = next(i for i in stage.items() if i.id == wanted)
            key = stage.key(item)
            return key, stage.is_done(item, key)
        finally:
            await ctx.aclose()
    key, done = asyncio.run(go())
    return key, done, stage.declared_keys()


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_every_setting_changes_a_key_exactly_when_declared(world, scenario):
    base_key, _, declared = key_and_done(world, scenario, {})
    _, stage = build(world, scenario, {})
    completion = set(stage.declared.completion)
    cfg = stage.ctx.cfg
    wrong, checked = [], 0
    for name in all_keys():
        if (scenario, name) in NOT_APPLICABLE:
            continue
        section, _, key = name.partition(".")
        alt = alternative(world, scenario, name, getattr(getattr(cfg, section), key))
        assert alt is not None, f"{scenario}: no alternative for {name}"
        try:
            changed = key_and_done(world, scenario, {name: alt})[0] != base_key
        except ConfigError as exc:
            wrong.append(f"{name}={alt!r} is not a valid alternative here: {exc}")
            continue
        checked += 1
        expected = name in declared and name not in completion and name not in RESOLVED
        if changed != expected:
            wrong.append(f"{name}={alt!r}: key {'changed' if changed else 'did not change'} but "
                         f"{'it is' if name in declared else 'it is not'} declared")
    assert not wrong, f"{scenario}:\n" + "\n".join(wrong)
    assert checked + sum(1 for sc, _ in NOT_APPLICABLE if sc == scenario) == len(all_keys())


def test_completion_settings_extend_or_cut_a_finished_trace_instead_of_redoing_it(world):
    """socratic.iterations and socratic.early_stop decide when the loop ends: a finished
    trace (2 rounds, the judge satisfied in round 1, early stop on) stays finished, is
    unfinished with early_stop off or with 1 round asked for, and keeps its key."""
    key, _, _ = key_and_done(world, "socratic/clip", {})
    rounds = [{"prompt": "a red cube on a blue sphere", "image": "images/p1/iter00-s0.png", "caption": "x",
               "verdict": {"matches": False, "missing": ["cube"], "revised_prompt": "a red cube!"}},
              {"prompt": "a red cube!", "image": "images/p1/iter01-s0.png", "caption": "y",
               "verdict": {"matches": True, "missing": [], "revised_prompt": "a red cube!!"}}]
    trace = world["root"] / "runs" / "default" / "socratic" / "p1.json"
    trace.parent.mkdir(exist_ok=True)
    # the fresh renders of the chosen and the first prompt that a finished trace records, on
    # disk with their keys as the stage leaves them
    ctx, stage = build(world, "socratic/clip", {})
    fresh = stage.fresh_plan({"id": "p1"}, {"iterations": rounds, "best": 1})
    renders = stage.fresh_jobs({"id": "p1"}, fresh)
    for text, seed, path, _ in renders:
        path.parent.mkdir(parents=True, exist_ok=True)
        save_png(path, Image.new("RGB", (8, 8)), {KEY_CHUNK: image_key(
            stage.backend("images"), text, seed, ctx.cfg.generate.negative_prompt)})
    trace.write_text(json.dumps({"id": "p1", "prompt": "a red cube on a blue sphere", "seed": 0,
                                 "iterations": rounds, "best": 1, "stopped_early": True, "key": key,
                                 "fresh": fresh}))
    try:
        assert key_and_done(world, "socratic/clip", {}) [1]
        for name, alt in (("socratic.early_stop", "false"), ("socratic.iterations", "1")):
            new_key, done, declared = key_and_done(world, "socratic/clip", {name: alt})
            assert new_key == key and not done and name in declared, name
        assert key_and_done(world, "socratic/clip", {"socratic.iterations": "5"})[1]
        renders[0][2].unlink()               # a fresh render lost since: the trace is not done
        assert not key_and_done(world, "socratic/clip", {})[1]
    finally:
        trace.unlink()
        for _, _, path, _ in renders:
            path.unlink(missing_ok=True)


def test_reading_an_undeclared_setting_is_refused(world):
    """The view a stage reads is limited to what it declares: an undeclared read fails loudly
    (in development), it never slips into an output unkeyed."""
    _, stage = build(world, "interpret", {})
    assert stage.cfg.interpret.trigger_words == ()
    with pytest.raises(UndeclaredSetting, match="interpret stage reads generate.steps"):
        _ = stage.cfg.generate.steps
    view = ConfigView(stage.ctx.cfg, spec("images", stage.ctx.cfg).readable(), "the images backend")
    with pytest.raises(UndeclaredSetting, match="images backend reads llm.temperature"):
        _ = view.llm.temperature


@pytest.mark.parametrize(("scenario", "name", "same"), [
    ("evaluate/openai", "evaluate.metrics", "llm_judge, caption_score, image_similarity, clipscore"),
    ("evaluate/openai", "evaluate.metrics", "clipscore, clipscore, llm_judge, image_similarity, "
     "caption_score"),
    ("socratic/clip", "generate.seeds", "0, 7"),
    ("socratic/judge", "generate.seeds", "0, 7, 8"),
    ("interpret", "tags.blacklist", "highres, animal"),
])
def test_a_setting_written_otherwise_with_the_same_meaning_keeps_the_key(world, scenario, name, same):
    """Reordered metrics are the same evaluation; the Socratic loop uses only the first seed,
    so more seeds for the generate stage redo no trace (issue 19: both redid everything)."""
    reference = {"evaluate.metrics": "clipscore, image_similarity, caption_score, llm_judge",
                 "generate.seeds": "0", "tags.blacklist": "animal, highres"}[name]
    def key(value: str) -> str:
        return key_and_done(world, scenario, {name: value})[0]

    assert key(reference) == key(same)
    other = {"evaluate.metrics": "clipscore, caption_score", "generate.seeds": "7, 0",
             "tags.blacklist": "cat"}[name]
    assert key(reference) != key(other)
