"""caption.py end to end on real photos in mixed formats, broken files and hostile tags,
through the local OpenAI-compatible test server."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from conftest import llm_overrides
from fakes import FakeOpenAI, Fault
from PIL import Image

import caption

HOSTILE = "1girl, ../../evil, <script>alert(1)</script>, 猫耳, ^_^, long_hair, long_hair, , rating:safe"


def photo(name: str) -> Image.Image:
    from skimage import data

    return Image.fromarray(getattr(data, name)())


def build_folder(root: Path) -> dict[str, str]:
    """Images in many formats and modes; returns {id: expected outcome}."""
    root.mkdir(parents=True, exist_ok=True)
    cat = photo("chelsea").resize((160, 120))
    coffee = photo("coffee").resize((160, 120))
    cat.save(root / "cat.jpg", quality=90)
    coffee.save(root / "coffee.webp")
    logo = photo("logo")                                   # RGBA
    logo.resize((96, 96)).save(root / "logo.png")
    cat.convert("P", palette=Image.Palette.ADAPTIVE).save(root / "palette.gif")
    frames = [cat.convert("P"), coffee.convert("P")]
    frames[0].save(root / "animated.gif", save_all=True, append_images=frames[1:], duration=100)
    cat.convert("L").save(root / "grey.bmp")
    cat.convert("CMYK").save(root / "cmyk.tiff")
    gradient = (np.linspace(0, 65535, 64 * 64).reshape(64, 64)).astype(np.uint16)
    Image.fromarray(gradient).save(root / "deep.png")        # I;16
    os.makedirs(root / "sub", exist_ok=True)
    coffee.save(root / "sub" / "nested.jpg")
    (root / "empty.jpg").write_bytes(b"")
    (root / "text.png").write_text("not an image at all")
    good = (root / "cat.jpg").read_bytes()
    (root / "truncated.jpg").write_bytes(good[: len(good) // 3])
    for name in ("cat", "coffee", "logo", "palette", "animated", "grey", "cmyk", "sub/nested",
                 "truncated", "empty", "text"):
        (root / f"{name}.txt").write_text(HOSTILE if name == "cat" else "coffee_cup, table\nsaucer",
                                          encoding="utf-8")
    expected = {n: "ok" for n in ("cat", "coffee", "logo", "palette", "animated", "grey", "cmyk",
                                   "deep", "sub/nested")}
    expected.update({"empty": "fail", "text": "fail", "truncated": "fail"})
    return expected


def reply(request: dict) -> str:
    content = request["messages"][-1]["content"]
    if isinstance(content, list):
        return "A photo of an animal or a cup on a plain background."
    system = request["messages"][0]["content"] if request["messages"][0]["role"] == "system" else ""
    if "explain image tags" in system:
        return "A tag that describes something visible."
    return "a detailed caption of the picture"


def listing(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*")}


def run(project: Path, server: FakeOpenAI, *extra: str) -> int:
    args = ["--config", str(project / "config.ini"), "--quiet"]
    for item in llm_overrides(server.url, **{"vision.backend": "openai"}) + list(extra):
        args += ["--set", item]
    return caption.main(args)


@pytest.fixture
def folder(project: Path):
    images = project / "images"
    for path in list(images.iterdir()):
        path.unlink()
    return project, build_folder(images)


def test_openai_vision_with_500s_captions_every_valid_image(folder, capsys):
    project, expected = folder
    captions = project / "captions"
    captions.mkdir(exist_ok=True)
    (captions / "coffee.txt").write_text("my own caption\n")       # pre-existing: keep
    before = listing(project / "images")
    with FakeOpenAI(reply) as server:
        server.fault_every, server.every_fault = 4, Fault("status", 500)
        code = run(project, server)
        out = capsys.readouterr().out
        assert code == 1
        for name, outcome in expected.items():
            txt = captions / f"{name}.txt"
            if outcome == "ok":
                assert txt.exists(), name
                assert txt.read_text().strip(), name
            else:
                assert not txt.exists(), name
                assert f"FAILED {name}:" in out
        assert (captions / "coffee.txt").read_text() == "my own caption\n"
        assert not (captions / "coffee.json").exists()
        summary = json.loads((project / "cache" / "summary-caption.json").read_text())
        failed = {f["id"]: f["reason"] for s in summary["stages"] for f in s["failed"]}
        assert set(failed) == {"empty", "text", "truncated"}
        assert "empty" in failed["empty"] and "not an image" in failed["text"]
        assert "truncated" in failed["truncated"]
        assert listing(project / "images") == before                    # nothing written there
        assert not list(project.rglob("evil*"))
        calls = len(server.chat_requests)
        vision_calls = sum(isinstance(r["messages"][-1]["content"], list)
                           for r in server.chat_requests)
        assert vision_calls >= 9
        images_sent = [r for r in server.chat_requests if isinstance(r["messages"][-1]["content"], list)]
        url = images_sent[0]["messages"][-1]["content"][1]["image_url"]["url"]
        assert url.startswith("data:image/jpeg;base64,")
        meta = json.loads((captions / "cat.json").read_text())
        assert meta["tags"] == meta["tags_used"] == ["1girl", "^_^", "long hair"]  # a face on a person
        assert {d["tag"]: d["reason"].split(":")[0] for d in meta["tags_dropped"]} == {
            "../../evil": "junk", "<script>alert(1)</script>": "junk", "猫耳": "translated duplicate",
            "rating:safe": "meta"}
        # Second run: zero model calls, same failures.
        assert run(project, server) == 1
        assert len(server.chat_requests) == calls
        # A changed interpret template reruns only the interpret calls.
        server.fault_every = 0
        template = project / "templates" / "interpret_full.txt"   # auto: not the embedded server
        template.write_text(template.read_text() + "\nBe brief.\n")
        assert run(project, server) == 1
        new = server.chat_requests[calls:]
        assert new and all(not isinstance(r["messages"][-1]["content"], list) for r in new)
        # One request per distinct caption input: the cat's hostile tags, the shared coffee tags
        # (with the same vision answer) and `deep`, which has no tag file. Identical requests
        # are sent once, however many images share them; coffee's own caption is kept. Each
        # input is sampled interpret.candidates = 3 times.
        assert len(new) == 3 * 3


def test_trigger_words_and_overwrite(folder):
    project, _ = folder
    with FakeOpenAI(reply) as server:
        run(project, server, "interpret.trigger_words=sks, photo")
    captions = project / "captions"
    text = (captions / "cat.txt").read_text().strip()
    assert text.startswith("sks, photo, ")
    (captions / "cat.txt").write_text("edited by hand\n")
    with FakeOpenAI(reply) as server:
        run(project, server, "interpret.trigger_words=sks, photo")
        assert (captions / "cat.txt").read_text() == "edited by hand\n"
        run(project, server, "interpret.trigger_words=sks, photo", "interpret.overwrite=true")
        assert (captions / "cat.txt").read_text().startswith("sks, photo, ")


def test_write_beside_images_with_txt_is_refused(folder, capsys):
    project, _ = folder
    with FakeOpenAI(reply) as server:
        code = run(project, server, "interpret.write_beside_images=true",
                   "interpret.beside_extension=.txt")
    assert code == 2
    assert "would overwrite the NAME.txt tag files" in capsys.readouterr().err


def test_export_hf_dataset_and_imagefolder(folder, tmp_path):
    import datasets

    project, expected = folder
    with FakeOpenAI(reply) as server:
        args = ["--config", str(project / "config.ini"), "--quiet", "--export", "hf",
                str(tmp_path / "out")]
        for item in llm_overrides(server.url, **{"vision.backend": "openai"}):
            args += ["--set", item]
        assert caption.main(args) == 1
    ok = sorted(n for n, v in expected.items() if v == "ok")
    saved = datasets.load_from_disk(str(tmp_path / "out" / "dataset"))
    assert sorted(saved["id"]) == ok and saved[0]["image"].size[0] > 0
    folder_ds = datasets.load_dataset("imagefolder", data_dir=str(tmp_path / "out" / "imagefolder"),
                                      split="train")
    assert len(folder_ds) == len(ok) and "caption" in folder_ds.column_names
