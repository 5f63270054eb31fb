"""caption.py --review: decisions made in a real headless Chromium on the served page last
(reload, rerun, export); forged requests change nothing; shards are paged from their
Parquet; thumbnails are decoded as the stages decode; near duplicates are grouped."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from browser import Browser, chromium
from conftest import llm_overrides
from fakes import FakeOpenAI
from PIL import Image

import caption
from stages.config import load_config
from stages.io.owner import MARKER
from stages.review import write_review

ROOT = Path(__file__).resolve().parent.parent
needs_chromium = pytest.mark.skipif(chromium() is None, reason="no Chromium (apt install chromium)")


def reply(request: dict) -> str:
    if isinstance(request["messages"][-1]["content"], list):
        return "A photo of a person, an animal, a cup or a rocket."
    return "a detailed caption of the picture"


def sets(project: Path, server: FakeOpenAI) -> list[str]:
    return llm_overrides(server.url, **{"vision.backend": "openai",
                                        "interpret.write_beside_images": "true",
                                        "interpret.beside_extension": ".caption"})


def run(project: Path, server: FakeOpenAI, *flags: str) -> int:
    args = ["--config", str(project / "config.ini"), "--quiet", *flags]
    for item in sets(project, server):
        args += ["--set", item]
    return caption.main(args)


def files(root: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under root: its bytes and inode (a replaced file has a new inode)."""
    return {p.relative_to(root).as_posix(): (p.read_bytes(), p.stat().st_ino)
            for p in sorted(root.rglob("*")) if p.is_file()}


class Served:
    """`caption.py --review` as a user starts it, in its own process."""

    def __init__(self, project: Path, server: FakeOpenAI):
        args = [sys.executable, str(ROOT / "caption.py"), "--config", str(project / "config.ini"),
                "--review", "--no-browser"]
        for item in sets(project, server):
            args += ["--set", item]
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     cwd=project)
        line = self.proc.stdout.readline()
        found = re.search(r"at (http://127\.0\.0\.1:\d+/)", line)
        assert found, line + self.proc.stderr.read()
        self.url = found.group(1)

    def stop(self) -> tuple[int, str]:
        self.proc.send_signal(signal.SIGINT)
        out, _ = self.proc.communicate(timeout=60)
        return self.proc.returncode, out


@needs_chromium
def test_edit_and_reject_in_chromium_last_through_reload_rerun_and_export(project, tmp_path, capsys):
    (project / "images" / "flower.txt").write_text("")          # an empty tag file
    with FakeOpenAI(reply) as server:
        assert run(project, server) == 0
        out = capsys.readouterr().out
        assert "empty" in out and "flower.txt" in out            # named in the terminal
        assert re.search(r"review: \d+ captions to look at: python caption.py .*--review", out)
        captions, images = project / "captions", project / "images"
        before = files(captions)
        served = Served(project, server)
        try:
            with Browser(tmp_path / "profile") as browser:
                browser.open(served.url)
                assert browser.js("!!window.REVIEW && document.body.classList.contains('served')")
                browser.key("j")
                edited = browser.js("current().dataset.id")
                browser.key("e")
                assert browser.js("document.activeElement.tagName") == "TEXTAREA"
                browser.js("document.activeElement.select()")
                browser.type_text("A person's own words about this picture.")
                browser.key("Enter")
                browser.until("current().dataset.decision === 'edited'")
                browser.key("j")
                rejected = browser.js("current().dataset.id")
                browser.key("r")
                browser.until("current().dataset.decision === 'rejected'")
                browser.key("j")
                accepted = browser.js("current().dataset.id")
                browser.key("a")
                browser.until("current().dataset.decision === 'accepted'")
                assert len({edited, rejected, accepted}) == 3
                browser.reload()
                state = browser.js("cards().map(function(c){return [c.dataset.id, c.dataset.decision,"
                                   " c.querySelector('.caption').textContent]})")
                by_id = {i: (d, text) for i, d, text in state}
                assert by_id[edited] == ("edited", "A person's own words about this picture.")
                assert by_id[rejected][0] == "rejected"
                assert by_id[accepted][0] == "accepted"
                assert sum(d != "undecided" for d, _ in by_id.values()) == 3
                assert browser.js("document.getElementById('n-edited').textContent") == "1"
        finally:
            code, said = served.stop()
        assert code == 0 and "stopped" in said
        after = files(captions)
        # the edit replaced NAME.txt (a new file renamed into place), kept the old text
        txt, meta_file = f"{edited}.txt", f"{edited}.json"
        assert after[txt][0] == b"A person's own words about this picture.\n"
        assert after[txt][1] != before[txt][1]
        meta = json.loads(after[meta_file][0])
        assert meta["review"]["decision"] == "edited"
        assert meta["review"]["previous"] == before[txt][0].decode().strip()
        assert (images / f"{edited}.caption").read_text() == "A person's own words about this picture.\n"
        assert json.loads(after[f"{rejected}.json"][0])["review"]["decision"] == "rejected"
        assert after[f"{rejected}.txt"] == before[f"{rejected}.txt"]
        assert not (images / f"{rejected}.caption").exists()      # no caption beside it
        temp = [n for n in after if Path(n).name.startswith(".") and Path(n).name != MARKER]
        assert not temp                                            # no temp files left
        changed = {n for n in after if after[n] != before.get(n)} - {"index.html"}
        assert changed == {txt, meta_file, f"{rejected}.json", f"{accepted}.json"}

        # a rerun with the edited and accepted images' tags changed upstream keeps them
        (images / f"{edited}.txt").write_text("rocket, sky, night")
        (images / f"{accepted}.txt").write_text("rocket, sky, night")
        assert run(project, server, "--export", "hf", str(tmp_path / "out")) == 0
        out = capsys.readouterr().out
    assert (captions / txt).read_bytes() == b"A person's own words about this picture.\n"
    assert json.loads((captions / meta_file).read_text())["review"]["decision"] == "edited"
    assert (captions / f"{accepted}.txt").read_bytes() == before[f"{accepted}.txt"][0]
    assert not (images / f"{rejected}.caption").exists()
    assert "2 captions accepted or edited in the review kept" in out
    assert "1 images rejected in the review left out" in out
    assert "1 accepted, 1 rejected, 1 edited" in out
    lines = [json.loads(x) for x in (tmp_path / "out" / "imagefolder" / "metadata.jsonl")
             .read_text().splitlines()]
    exported = {row["id"]: row["caption"] for row in lines}
    assert rejected not in exported and len(exported) == 5
    assert exported[edited] == "A person's own words about this picture."
    assert exported[accepted] == before[f"{accepted}.txt"][0].decode().strip()
    assert not [p for p in (tmp_path / "out" / "imagefolder").iterdir() if p.stem == rejected]


def test_a_port_in_use_is_one_line(project, refused_port, capsys):
    (project / "captions").mkdir()
    assert caption.main(["--config", str(project / "config.ini"), "--review", "--no-browser",
                         "--port", str(refused_port)]) == 2
    assert f"--port {refused_port}: cannot listen" in capsys.readouterr().err


def _serve_in_thread(cfg):
    from stages.reviewserver import make_server

    server, url = make_server(cfg)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return server, url


def _post(url: str, body: dict, headers: dict) -> tuple[int, dict]:
    request = urllib.request.Request(url + "decide", data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json", **headers})
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def _get(url: str, headers: dict | None = None) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}),
                                    timeout=60) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _small_folder(tmp_path: Path) -> Path:
    images, captions = tmp_path / "images", tmp_path / "captions"
    images.mkdir()
    captions.mkdir()
    for name, colour in (("good", "teal"), ("other", "orange")):
        Image.new("RGB", (64, 48), colour).save(images / f"{name}.png")
        (images / f"{name}.txt").write_text("cat")
        (captions / f"{name}.txt").write_text(f"A {colour} cat.\n")
    (tmp_path / "secret.txt").write_text("not an item\n")
    (tmp_path / "secret.json").write_text("{}")
    return images


def _small_folder_config(tmp_path: Path):
    """The config of a small captioned folder in tmp_path, its captions and cache there too."""
    images = _small_folder(tmp_path)
    return load_config(ROOT / "config.ini", [f"paths.images={images}",
                                             f"paths.captions={tmp_path / 'captions'}",
                                             f"paths.cache={tmp_path / 'cache'}"])


def test_forged_requests_change_nothing(tmp_path):
    cfg = _small_folder_config(tmp_path)
    images = cfg.paths.images
    server, url = _serve_in_thread(cfg)
    try:
        status, page = _get(url)
        assert status == 200
        token = re.search(rb'"token": "([^"]+)"', page).group(1).decode()
        origin = url.rstrip("/")
        snapshot = files(tmp_path)
        accept = {"id": "good", "decision": "rejected"}
        forged = [
            (accept, {"Origin": "http://evil.example", "X-Review-Token": token}),
            (accept, {"Origin": "null", "X-Review-Token": token}),
            (accept, {"X-Review-Token": token}),                         # no Origin
            (accept, {"Origin": origin}),                                # no token
            (accept, {"Origin": origin, "X-Review-Token": token[:-2] + "xx"}),
            ({"id": "../secret", "decision": "edited", "text": "owned"},
             {"Origin": origin, "X-Review-Token": token}),
            ({"id": "good/../../secret", "decision": "edited", "text": "owned"},
             {"Origin": origin, "X-Review-Token": token}),
            ({"id": str(tmp_path / "secret"), "decision": "rejected"},
             {"Origin": origin, "X-Review-Token": token}),
            ({"id": "good", "decision": "deleted"}, {"Origin": origin, "X-Review-Token": token}),
        ]
        for body, headers in forged:
            status, answer = _post(url, body, headers)
            assert status in (400, 403, 404), (body, headers, answer)
        # a page of another site that resolves to this address (DNS rebinding) names its own host
        port = url.rsplit(":", 1)[1].strip("/")
        assert _get(url, {"Host": f"evil.example:{port}"})[0] == 403
        status, full = _get(url + "image?id=good")
        assert status == 200 and full == (images / "good.png").read_bytes()     # the full image
        assert 'href="image?id=good"' in page.decode()
        assert _get(url + "thumb?id=../secret")[0] == 404
        assert _get(url + "image?id=%2E%2E%2Fsecret")[0] == 404
        assert _get(url + "../secret.txt")[0] == 404
        assert files(tmp_path) == snapshot
        # the same request from the page itself is taken
        status, answer = _post(url, accept, {"Origin": origin, "X-Review-Token": token})
        assert status == 200 and answer["decision"] == "rejected"
        assert json.loads((tmp_path / "captions" / "good.json").read_text())["review"]["decision"] \
            == "rejected"
    finally:
        server.shutdown()
        server.server_close()


def _thumb(captions: Path, item_id: str) -> np.ndarray:
    page = (captions / "index.html").read_text()
    src = re.search(rf'data-id="{re.escape(item_id)}".*?<img src="([^"]+)"', page, re.S).group(1)
    with Image.open(captions / src) as img:
        return np.asarray(img.convert("RGB")).astype(int)


def test_thumbnails_of_16bit_cmyk_palette_and_rotated_images(tmp_path):
    images, captions = tmp_path / "images", tmp_path / "captions"
    images.mkdir()
    captions.mkdir()
    ramp = np.tile(np.linspace(0, 65535, 120), (90, 1)).astype(np.uint16)
    Image.fromarray(ramp).save(images / "deep.png")                       # I;16
    assert Image.open(images / "deep.png").mode.startswith("I")
    Image.new("RGB", (120, 90), (200, 30, 30)).convert("CMYK").save(images / "cmyk.jpg")
    half = Image.new("RGB", (200, 100), (220, 20, 20))                     # stored: red left,
    half.paste((20, 20, 220), (100, 0, 200, 100))                           # blue right
    exif = Image.Exif()
    exif[0x0112] = 6                                                        # shown turned 90 CW
    half.save(images / "turned.jpg", exif=exif.tobytes(), quality=95)
    clear = Image.new("P", (80, 60), 0)
    clear.putpalette([0, 0, 0, 30, 160, 30])
    clear.paste(1, (0, 0, 40, 60))
    clear.save(images / "palette.png", transparency=0)                      # left green, right clear
    write_review(images, captions, tmp_path / "summary.json")

    deep = _thumb(captions, "deep")
    assert deep[:, :10].mean() < 40 and deep[:, -10:].mean() > 215         # a ramp, not white
    cmyk = _thumb(captions, "cmyk")
    assert np.abs(cmyk.mean(axis=(0, 1)) - (200, 30, 30)).max() < 30
    turned = _thumb(captions, "turned")
    assert turned.shape[0] > turned.shape[1]                                 # upright: portrait
    top, bottom = turned[:10].mean(axis=(0, 1)), turned[-10:].mean(axis=(0, 1))
    assert top[0] > 150 and top[2] < 90 and bottom[2] > 150 and bottom[0] < 90
    palette = _thumb(captions, "palette")
    assert np.abs(palette[:, :10].mean(axis=(0, 1)) - (30, 160, 30)).max() < 30
    assert palette[:, -10:].mean() > 240                                     # transparent: white


def test_near_duplicates_are_grouped(tmp_path):
    from skimage import data

    images, captions = tmp_path / "images", tmp_path / "captions"
    images.mkdir()
    captions.mkdir()
    coffee = Image.fromarray(data.coffee())
    coffee.save(images / "espresso.jpg", quality=90)
    coffee.resize((300, 200)).save(images / "untagged.png")                 # the same photo, smaller
    Image.fromarray(data.chelsea()).save(images / "cat.jpg")
    write_review(images, captions, tmp_path / "summary.json")
    page = (captions / "index.html").read_text()
    dup = dict(re.findall(r'data-id="([^"]+)"[^>]*data-dup="([^"]*)"', page))
    assert dup["espresso"] == dup["untagged"] == "espresso" and dup["cat"] == ""
    assert "near duplicates: untagged" in page and 'value="dups">near duplicates (2)' in page
    assert '<a href="../images/espresso.jpg" target="_blank">' in page      # the full image


def test_a_folder_of_many_copies_of_one_picture_is_one_group_named_briefly():
    """20,000 equal hashes (a folder of one placeholder picture copied) made 20,000 lists of
    19,999 ids (3.2 GB at peak) and a card naming every copy; now one shared group, and a
    card names 12 of them and says how many more."""
    from stages.review import DUPS_SHOWN, Card, Links, _card_html, near_duplicates

    hashes = {f"img{i:05d}": 0x0F0F0F0F0F0F0F0F for i in range(20_000)}
    hashes["other"] = 0xF0F0F0F0F0F0F0F0
    groups = near_duplicates(hashes)
    assert "other" not in groups and len(groups) == 20_000
    assert len({id(g) for g in groups.values()}) == 1          # one tuple shared by the group
    card = Card(id="img00007", image="", caption="a grey square", flags=[], score=None)
    card.dups = groups["img00007"]
    html = _card_html(card, 0, Links(), 77)
    named = re.search(r"near duplicates: ([^<]*)<", html).group(1)
    assert named.endswith(f"and {20_000 - 1 - DUPS_SHOWN} more")
    assert "img00007," not in named and named.count("img") == DUPS_SHOWN


@needs_chromium
def test_static_page_is_read_only_and_filters_by_decision(tmp_path):
    images = _small_folder(tmp_path)
    meta = {"review": {"decision": "rejected", "at": "2026-01-01T00:00:00Z"}}
    (tmp_path / "captions" / "other.json").write_text(json.dumps(meta))
    page, _, _ = write_review(images, tmp_path / "captions", tmp_path / "summary.json")
    snapshot = files(tmp_path / "captions")
    with Browser(tmp_path / "profile") as browser:
        browser.open(page.as_uri() + "#flag=d:rejected")
        shown = browser.js("shown().map(function(c){return c.dataset.id})")
        assert shown == ["other"]
        assert browser.js("document.querySelector('.acts').offsetParent === null")   # no buttons
        assert browser.until("shown()[0].querySelector('img').naturalWidth > 0")  # thumbnail
        browser.open("about:blank")                   # a fragment alone would not reload
        browser.open(page.as_uri() + "#sort=name")
        assert browser.js("cards().map(function(c){return c.dataset.id})") == ["good", "other"]
        browser.js("document.getElementById('sort').value='decision'; sortBy()")
        assert browser.js("cards().map(function(c){return c.dataset.id})") == ["other", "good"]
        browser.key("j")
        browser.key("j")
        assert browser.js("current().dataset.id") == "good"
        browser.key("r")
        assert browser.js("current().dataset.decision") == "undecided"
    assert files(tmp_path / "captions") == snapshot


def test_shards_are_paged_from_parquet_and_decisions_go_to_decisions_parquet(tmp_path, monkeypatch,
                                                                             capsys):
    import pyarrow.parquet as pq
    from test_webdataset import reply as shard_reply
    from test_webdataset import run as shard_run
    from test_webdataset import write_shard

    from stages import reviewserver

    data = tmp_path / "data"
    keys = write_shard(data / "00000.tar", 0, 5)
    overrides = [f"paths.images={data}", f"paths.captions={tmp_path / 'captions'}",
                 f"paths.cache={tmp_path / 'cache'}"]
    with FakeOpenAI(shard_reply) as server:
        assert shard_run(str(data), tmp_path, server) == 0
        captions = tmp_path / "captions"
        flagged = sum(bool(r["flags"]) for r in pq.read_table(captions / "00000.parquet").to_pylist())
        said = capsys.readouterr().out
        assert flagged and f"review: {flagged} of 5 captions flagged" in said and "--review" in said
        listing = sorted(p.name for p in captions.rglob("*"))
        monkeypatch.setattr(reviewserver, "PAGE_SIZE", 3)
        cfg = load_config(ROOT / "config.ini", overrides + [
            f"tags.wiki_file={ROOT / 'data' / 'wiki.json'}"])
        http, url = _serve_in_thread(cfg)
        try:
            first, second = _get(url)[1].decode(), _get(url + "?page=2")[1].decode()
            ids = re.findall(r'data-id="([^"]+)"', first) + re.findall(r'data-id="([^"]+)"', second)
            assert len(re.findall(r'data-id=', first)) == 3 and sorted(ids) == sorted(
                f"00000/{k}" for k in keys)
            assert "page 1 of 2" in first and 'href="?page=2"' in first
            assert _get(url + f"thumb?id=00000/{keys[0]}")[1][:2] == b"\xff\xd8"   # a JPEG
            token = re.search(r'"token": "([^"]+)"', first).group(1)
            head = {"Origin": url.rstrip("/"), "X-Review-Token": token}
            assert _post(url, {"id": f"00000/{keys[0]}", "decision": "rejected"}, head)[0] == 200
            assert _post(url, {"id": f"00000/{keys[1]}", "decision": "edited",
                               "text": "An edited caption."}, head)[0] == 200
            again = _get(url)[1].decode()
            assert "An edited caption." in again and 'data-decision="rejected"' in again
        finally:
            http.shutdown()
            http.server_close()
        assert sorted(p.name for p in captions.rglob("*")) == sorted(listing + ["decisions.parquet"])
        rows = {r["id"]: r for r in pq.read_table(captions / "decisions.parquet").to_pylist()}
        assert rows[f"00000/{keys[0]}"]["decision"] == "rejected"
        assert rows[f"00000/{keys[1]}"]["caption"] == "An edited caption."
        assert shard_run(str(data), tmp_path, server, flags=("--export", "hf", str(tmp_path / "out"))) == 0
    import datasets

    saved = datasets.load_from_disk(str(tmp_path / "out" / "dataset"))
    exported = dict(zip(saved["id"], saved["caption"], strict=True))
    assert f"00000/{keys[0]}" not in exported and len(exported) == 4
    assert exported[f"00000/{keys[1]}"] == "An edited caption."


def test_a_shard_decision_about_an_older_picture_is_not_applied_to_a_new_one(tmp_path):
    """Review round: decisions.parquet was looked up by sample id only, so after a shard was
    rebuilt with another picture under the same key, the old edit was exported as the new
    picture's caption (and an old rejection dropped it) without a word."""
    import tarfile

    import datasets
    from test_webdataset import add, photo_bytes, write_shard
    from test_webdataset import reply as shard_reply
    from test_webdataset import run as shard_run

    data = tmp_path / "data"
    keys = write_shard(data / "00000.tar", 0, 3)
    overrides = [f"paths.images={data}", f"paths.captions={tmp_path / 'captions'}",
                 f"paths.cache={tmp_path / 'cache'}", f"tags.wiki_file={ROOT / 'data' / 'wiki.json'}"]
    with FakeOpenAI(shard_reply) as server:
        assert shard_run(str(data), tmp_path, server) == 0
        http, url = _serve_in_thread(load_config(ROOT / "config.ini", overrides))
        try:
            token = re.search(r'"token": "([^"]+)"', _get(url)[1].decode()).group(1)
            head = {"Origin": url.rstrip("/"), "X-Review-Token": token}
            assert _post(url, {"id": f"00000/{keys[0]}", "decision": "edited",
                               "text": "An edited caption of the first picture."}, head)[0] == 200
            assert _post(url, {"id": f"00000/{keys[1]}", "decision": "rejected"}, head)[0] == 200
        finally:
            http.shutdown()
            http.server_close()
        # the shard is rebuilt: the same keys now hold other pictures
        with tarfile.open(data / "00000.tar", "w") as tar:
            for i, key in enumerate(keys):
                add(tar, f"{key}.jpg", photo_bytes(i + 3) if i < 2 else photo_bytes(i))
                add(tar, f"{key}.txt", b"cat")
        assert shard_run(str(data), tmp_path, server) == 0
        out = tmp_path / "out"
        assert shard_run(str(data), tmp_path, server, flags=("--export", "hf", str(out))) == 0
    saved = datasets.load_from_disk(str(out / "dataset"))
    exported = dict(zip(saved["id"], saved["caption"], strict=True))
    assert exported[f"00000/{keys[0]}"] != "An edited caption of the first picture."
    assert f"00000/{keys[1]}" in exported                # the rejection was of another picture


def test_reviewed_captions_get_their_copy_beside_the_image_when_turned_on_later(project):
    """Review round: an accepted or edited caption was never written beside its image when
    interpret.write_beside_images was turned on after the review (the rerun kept it and
    wrote nothing), so a kohya-style folder silently lacked exactly the reviewed captions."""
    from stages.decisions import decide_folder

    images = project / "images"
    for path in images.iterdir():
        if path.stem not in ("coffee", "rocket", "chelsea"):
            path.unlink()
    with FakeOpenAI(reply) as server:
        args = ["--config", str(project / "config.ini"), "--quiet"]
        for item in sets(project, server) + ["interpret.write_beside_images=false"]:
            args += ["--set", item]
        assert caption.main(args) == 0
        captions = project / "captions"
        assert not any(images.glob("*.caption"))
        accepted = (captions / "coffee.txt").read_text()
        decide_folder(captions, "coffee", "accepted")
        decide_folder(captions, "rocket", "edited", "A rocket, edited by hand.")
        decide_folder(captions, "chelsea", "rejected")
        assert run(project, server) == 0              # sets() turns the copies on
        assert run(project, server, "--dry-run") == 0
    assert (images / "coffee.caption").read_text() == accepted
    assert (images / "rocket.caption").read_text() == "A rocket, edited by hand.\n"
    assert not (images / "chelsea.caption").exists()
    assert (captions / "rocket.txt").read_text() == "A rocket, edited by hand.\n"


def test_export_says_which_captions_were_flagged_and_not_reviewed(project, capsys):
    """Review round: --export wrote fallback and doubted captions into the training set
    exactly like verified ones (no flags, no decision, not a word on the terminal)."""
    import datasets

    from stages.decisions import decide_folder

    images = project / "images"
    for path in images.iterdir():
        if path.stem not in ("coffee", "rocket", "chelsea"):
            path.unlink()
    out = project / "out"
    with FakeOpenAI(reply) as server:            # its captions fail: composed fallbacks, flagged
        assert run(project, server) == 0
        captions = project / "captions"
        flags = {s: json.loads((captions / f"{s}.json").read_text())["flags"]
                 for s in ("coffee", "rocket", "chelsea")}
        assert all("fallback" in f for f in flags.values()), flags
        decide_folder(captions, "rocket", "accepted")
        decide_folder(captions, "chelsea", "edited", "A cat, edited by hand.")
        capsys.readouterr()
        assert run(project, server, "--export", "hf", str(out)) == 0
    said = capsys.readouterr().out
    assert "1 of them flagged by the verifier and not reviewed (coffee)" in said, said
    lines = {row["id"]: row for row in map(json.loads, (out / "imagefolder" / "metadata.jsonl")
                                           .read_text().splitlines())}
    assert lines["coffee"]["flags"] == flags["coffee"] and lines["coffee"]["review"] == "undecided"
    assert lines["rocket"]["review"] == "accepted" and lines["chelsea"]["review"] == "edited"
    saved = datasets.load_from_disk(str(out / "dataset"))
    by_id = {i: (f, r) for i, f, r in zip(saved["id"], saved["flags"], saved["review"], strict=True)}
    assert by_id["coffee"] == (flags["coffee"], "undecided")


def test_a_malformed_length_is_refused_with_a_status(tmp_path):
    """Review round: a decision whose Content-Length was not a number raised inside the
    handler (a traceback on the user's terminal, the connection dropped, no status)."""
    import http.client

    server, url = _serve_in_thread(_small_folder_config(tmp_path))
    try:
        token = re.search(rb'"token": "([^"]+)"', _get(url)[1]).group(1).decode()
        host, port = url.split("//")[1].strip("/").split(":")
        for length in ("abc", "-5", "1e3"):
            conn = http.client.HTTPConnection(host, int(port), timeout=60)
            conn.putrequest("POST", "/decide")
            for name, value in (("Origin", url.rstrip("/")), ("X-Review-Token", token),
                                ("Content-Type", "application/json"), ("Content-Length", length)):
                conn.putheader(name, value)
            conn.endheaders()
            assert conn.getresponse().status == 400, length
            conn.close()
    finally:
        server.shutdown()
        server.server_close()
