"""`caption.py --review`: the review page served on 127.0.0.1, with decisions that last.

The page is the static one (stages/review.py) with decisions enabled: accept, reject, edit
in place, undo, from buttons or keys. Decisions are written as stages/decisions.py says:
NAME.json (and NAME.txt, and the copy beside the image) for a folder, decisions.parquet for
shards and Parquet tables, whose samples are paged through from the caption Parquet files
(PAGE_SIZE a page) without writing a file per sample.

Only its own page may change anything. The server binds 127.0.0.1 on a free port; a request
must name this host and port (Host), and a decision must come from this origin (Origin) and
carry the session's token, a random value embedded in the served page and nowhere else.
Names come in as item ids and are looked up in the listing made at start: no part of a
request becomes a path.
"""

from __future__ import annotations

import hmac
import json
import mimetypes
import os
import secrets
import sys
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from .decisions import (
    DECISIONS,
    UNDECIDED,
    applies,
    decide_folder,
    decide_row,
    load_decisions,
    save_decisions,
)
from .errors import FatalError, ItemError
from .io.folder import image_items
from .review import (
    Card,
    Links,
    PageInfo,
    _card_html,
    _page,
    fill_from_record,
    folder_page,
    thumbnail,
    thumbnail_bytes,
)
from .stage import Item

PAGE_SIZE = 500                     # dataset samples per served page
MAX_BODY = 64 * 1024                # a decision is a few hundred bytes
BROWSER_IMAGES = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp"}


class Refused(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@dataclass
class Response:
    body: bytes
    content_type: str = "text/html; charset=utf-8"


class FolderSite:
    """A folder of images: items by id from the listing; decisions in NAME.json."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.images, self.captions = cfg.paths.images, cfg.paths.captions
        self.items: dict[str, Item] = {i.id: i for i in image_items(self.images) if not i.error}
        self.lock = threading.Lock()

    def page(self, query: dict, served: dict) -> bytes:
        _, _, chunks = folder_page(self.images, self.captions,
                                   self.cfg.paths.cache / "summary-caption.json",
                                   self.cfg.paths.cache / "interrogate", links=Links(served=True),
                                   served=served, clip_limit=self.cfg.interpret.max_clip_tokens)
        return "".join(chunks).encode("utf-8")

    def thumb(self, item_id: str) -> Response:
        item = self._item(item_id)
        thumbs = self.captions / "thumbs"
        thumbs.mkdir(parents=True, exist_ok=True)
        name = thumbnail(item.data, thumbs)
        if not name:
            raise Refused(404, f"{item_id}: no preview (the image cannot be read)")
        return Response((thumbs / name).read_bytes(), "image/jpeg")

    def image(self, item_id: str) -> Response:
        return full_image(self._item(item_id).data)

    def decide(self, item_id: str, decision: str, text: str | None) -> dict:
        item = self._item(item_id)
        c = self.cfg.interpret
        beside = item.data.with_suffix(c.beside_extension) if c.write_beside_images else None
        with self.lock:
            return decide_folder(self.captions, item.id, decision, text, beside)

    def _item(self, item_id: str) -> Item:
        item = self.items.get(item_id)
        if item is None:
            raise Refused(404, "no such image in this folder")
        return item


class DatasetSite:
    """Shards or Parquet tables: samples by id from the input listing, captions read from
    captions/SHARD.parquet a page at a time, decisions in captions/decisions.parquet."""

    def __init__(self, cfg):
        from .io.inputs import ImageInput
        from .io.shardout import read_table, shard_path

        self.cfg = cfg
        self.captions = cfg.paths.captions
        self.input = ImageInput(cfg)
        self.items: dict[str, Item] = {i.id: i for i in self.input.items() if not i.error}
        self.rows: list[tuple[Path, str]] = []           # (caption Parquet, id), in order
        units = sorted({i.unit for i in self.items.values()})
        for unit in units:
            path = shard_path(self.captions, unit)
            if path.exists():
                ids = read_table(path, columns=["id"]).column("id").to_pylist()
                self.rows += [(path, i) for i in ids if i in self.items]
        self.where = {item_id: path for path, item_id in self.rows}
        self.decisions = load_decisions(self.captions)
        self.lock = threading.Lock()

    def _records(self, path: Path, ids: set[str]) -> dict[str, dict]:
        from .io.shardout import read_table

        table = read_table(path, columns=["id", "caption", "tags", "provenance"])
        return {r["id"]: r for r in table.to_pylist() if r["id"] in ids}

    def card(self, item_id: str, row: dict) -> Card:
        card = Card(item_id, thumb="thumb", caption=str(row.get("caption") or ""))
        record = json.loads(row.get("provenance") or "{}")
        card.tags = ", ".join(row.get("tags") or [])
        card.vision = str(record.get("vision", ""))
        fill_from_record(card, record)
        decided = self.decisions.get(item_id)
        if decided and applies(decided, record.get("image_sha256")):
            card.decision = decided["decision"]
            if decided.get("caption"):
                card.caption = decided["caption"]
            card.previous = decided.get("previous") or "" if card.decision == "edited" else ""
        return card

    def page(self, query: dict, served: dict) -> bytes:
        pages = max(1, -(-len(self.rows) // PAGE_SIZE))
        try:
            number = min(max(1, int(query.get("page", ["1"])[0])), pages)
        except ValueError:
            number = 1
        chunk = self.rows[(number - 1) * PAGE_SIZE:number * PAGE_SIZE]
        by_file: dict[Path, set[str]] = {}
        for path, item_id in chunk:
            by_file.setdefault(path, set()).add(item_id)
        records: dict[str, dict] = {}
        for path, ids in by_file.items():
            records.update(self._records(path, ids))
        cards = [self.card(i, records.get(i, {})) for _, i in chunk]
        info = PageInfo(f"Captions of {self.cfg.paths.images.name}", served=served)
        for card in cards:
            info.add(card)
        nav = f"page {number} of {pages} ({len(self.rows)} samples)"
        if number > 1:
            nav += f' <a href="?page={number - 1}">previous</a>'
        if number < pages:
            nav += f' <a href="?page={number + 1}">next</a>'
        info.nav = nav + " "
        order = sorted(range(len(cards)), key=lambda k: cards[k].rank)
        html = _page(info, (_card_html(cards[k], rank, Links(served=True),
                                       self.cfg.interpret.max_clip_tokens)
                            for rank, k in enumerate(order)))
        return "".join(html).encode("utf-8")

    def thumb(self, item_id: str) -> Response:
        try:
            return Response(thumbnail_bytes(self.input.image(self._item(item_id))), "image/jpeg")
        except (ItemError, OSError) as exc:
            raise Refused(404, f"{item_id}: no preview ({exc})") from None

    def image(self, item_id: str) -> Response:
        source = self.input.image(self._item(item_id))
        return full_image(source)

    def decide(self, item_id: str, decision: str, text: str | None) -> dict:
        item = self._item(item_id)
        path = self.where.get(item_id)
        if path is None:
            raise Refused(404, "this sample has no caption yet")
        with self.lock:
            row = self._records(path, {item_id}).get(item_id, {})
            made_from = json.loads(row.get("provenance") or "{}").get("image_sha256")
            out = decide_row(self.decisions, item_id, item.unit, item.data.key,
                             str(row.get("caption") or ""), decision, text, made_from)
            save_decisions(self.captions, self.decisions)
        return out

    def _item(self, item_id: str) -> Item:
        item = self.items.get(item_id)
        if item is None:
            raise Refused(404, "no such sample in this dataset")
        return item


def full_image(source: Path | bytes) -> Response:
    """The image as it is when a browser can show it, else (TIFF, a shard's odd format) as PNG."""
    import io

    if isinstance(source, Path) and source.suffix.lower() in BROWSER_IMAGES:
        kind = mimetypes.guess_type(source.name)[0] or "application/octet-stream"
        return Response(source.read_bytes(), kind)
    from .io.imageio import load_image

    try:
        img = load_image(source, 400_000_000)
    except ItemError as exc:
        raise Refused(404, str(exc)) from None
    buffer = io.BytesIO()
    img.save(buffer, "PNG")
    return Response(buffer.getvalue(), "image/png")


def make_handler(site, token: str, origins: set[str], hosts: set[str]):
    served = {"token": token}

    class Handler(BaseHTTPRequestHandler):
        server_version = "tagcap-review"

        def log_message(self, format, *args):   # noqa: A002 - the base class's name
            pass                                # quiet: the terminal is the user's

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.send_header("X-Content-Type-Options", "nosniff")
            self.send_header("Referrer-Policy", "no-referrer")
            self.end_headers()
            self.wfile.write(body)

        def _error(self, status: int, message: str) -> None:
            self._send(status, json.dumps({"error": message}).encode(), "application/json")

        def _check_host(self) -> None:
            if self.headers.get("Host", "") not in hosts:
                raise Refused(403, "wrong Host: open the address the server printed")

        def do_GET(self):                       # noqa: N802 - the base class's name
            try:
                self._check_host()
                url = urlsplit(self.path)
                query = parse_qs(url.query)
                item_id = query.get("id", [""])[0]
                if url.path in ("/", "/index.html"):
                    self._send(200, site.page(query, served), "text/html; charset=utf-8")
                elif url.path == "/thumb":
                    out = site.thumb(item_id)
                    self._send(200, out.body, out.content_type)
                elif url.path == "/image":
                    out = site.image(item_id)
                    self._send(200, out.body, out.content_type)
                else:
                    raise Refused(404, "not found")
            except Refused as exc:
                self._error(exc.status, str(exc))

        def do_POST(self):                      # noqa: N802 - the base class's name
            try:
                self._check_host()
                if urlsplit(self.path).path != "/decide":
                    raise Refused(404, "not found")
                if self.headers.get("Origin", "") not in origins:
                    raise Refused(403, "a decision must come from the review page itself (Origin)")
                if not hmac.compare_digest(self.headers.get("X-Review-Token", ""), token):
                    raise Refused(403, "a decision must carry this session's token")
                length = self.headers.get("Content-Length") or "0"
                length = int(length) if length.isdigit() else 0
                if length <= 0 or length > MAX_BODY:
                    raise Refused(400, "a decision is a small JSON object")
                try:
                    body = json.loads(self.rfile.read(length))
                except ValueError:
                    raise Refused(400, "not JSON") from None
                if not isinstance(body, dict) or not isinstance(body.get("id"), str):
                    raise Refused(400, "a decision names an item: {id, decision, text}")
                decision = body.get("decision")
                if decision not in (*DECISIONS, UNDECIDED):
                    raise Refused(400, f"decision must be one of {', '.join(DECISIONS)}, {UNDECIDED}")
                text = body.get("text")
                if text is not None and not isinstance(text, str):
                    raise Refused(400, "text must be a string")
                try:
                    out = site.decide(body["id"], decision, text)
                except ItemError as exc:
                    raise Refused(400, str(exc)) from None
                self._send(200, json.dumps(out).encode(), "application/json")
            except Refused as exc:
                self._error(exc.status, str(exc))

    return Handler


def make_server(cfg, port: int = 0) -> tuple[ThreadingHTTPServer, str]:
    """The server (not yet serving) and its URL."""
    from .io.samples import is_dataset

    site = DatasetSite(cfg) if is_dataset(cfg.paths.images) else FolderSite(cfg)
    token = secrets.token_urlsafe(32)
    try:
        server = ThreadingHTTPServer(("127.0.0.1", port), None)
    except OSError as exc:
        raise FatalError(f"--port {port}: cannot listen on 127.0.0.1:{port} ({exc.strerror or exc}); "
                         "choose another port or leave --port out for a free one") from None
    server.daemon_threads = True
    real = server.server_address[1]
    hosts = {f"127.0.0.1:{real}", f"localhost:{real}"}
    server.RequestHandlerClass = make_handler(site, token, {f"http://{h}" for h in hosts}, hosts)
    return server, f"http://127.0.0.1:{real}/"


def can_open_browser() -> bool:
    if os.environ.get("CI"):
        return False
    if sys.platform.startswith("linux"):
        return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return True


def serve(cfg, *, port: int = 0, browser: bool = True) -> int:
    """Serve until Ctrl-C; returns the exit code (0)."""
    server, url = make_server(cfg, port)
    try:                              # Ctrl-C as soon as the address is printed stops it cleanly too
        print(f"review: serving {cfg.paths.captions} at {url} (Ctrl-C to stop)", flush=True)
        if browser and can_open_browser():
            import webbrowser

            threading.Thread(target=webbrowser.open, args=(url,), daemon=True).start()
        server.serve_forever()
    except KeyboardInterrupt:
        print("review: stopped; decisions are saved", flush=True)
    finally:
        server.server_close()
    return 0

