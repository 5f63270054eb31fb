"""The review page, `captions/index.html`: every image with its evidence, caption and flags.

Written by caption.py at the end of a run, from what is on disk: the image folder, the
captions and their NAME.json provenance, and the run summary's failures. Self-contained
(inline style and a few lines of script, no server, nothing fetched): thumbnails are small
JPEGs under `captions/thumbs/`, linked by relative paths, so the captions folder can be
copied and opened anywhere. Flagged items come first; a filter shows only them or only
one flag, and a search box narrows by any text on the card.

Flags: `fallback` (no model candidate passed the verifier), `vision_guess` (an untagged
image whose subject is what the vision backend only guessed), `over_clip_tokens`, `kept`
(a caption not written by this tool, left as it is), `failed` (with its reason) and
`missing` (no caption yet, e.g. the interpret stage was skipped).
"""

from __future__ import annotations

import hashlib
import html
import io
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .io.folder import artifact, image_items, read_tag_text
from .stage import Item
from .store import atomic_write_bytes, atomic_write_chunks, read_json, sha256_bytes

THUMB_SIDE = 160
FLAG_ORDER = ("failed", "fallback", "vision_guess", "over_clip_tokens", "kept", "missing")


@dataclass
class Card:
    id: str
    thumb: str = ""                   # relative to the captions folder
    tags: str = ""
    vision: str = ""
    caption: str = ""
    score: float | None = None
    coverage: float | None = None
    flags: list[str] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)

    @property
    def rank(self) -> tuple:
        order = [FLAG_ORDER.index(f) for f in self.flags if f in FLAG_ORDER]
        return (min(order) if order else len(FLAG_ORDER), self.id)


# Stages whose items are images (their ids are image ids). The tags stage's items are tag
# names ("rocket") and tag files ("odd.txt"): a failed tag is not a failed image of that name.
IMAGE_STAGES = ("interrogate", "interpret")


def failures(summary_file: Path) -> dict[str, str]:
    """Image id -> the first failure reason an image stage of the last run recorded for it."""
    try:
        summary = read_json(summary_file)
    except (FileNotFoundError, ValueError):
        return {}
    out: dict[str, str] = {}
    for stage in summary.get("stages", []) if isinstance(summary, dict) else []:
        if stage.get("name") not in IMAGE_STAGES:
            continue
        for failure in stage.get("failed", []):
            out.setdefault(str(failure.get("id")), f"{stage.get('name')}: {failure.get('reason')}")
    return out


def thumbnail(image: Path, out_dir: Path) -> str:
    """A small JPEG of `image` under `out_dir` (redone when the image changes); its name, or
    "" when the image cannot be read."""
    from PIL import Image, ImageOps

    try:
        st = image.stat()
    except OSError:
        return ""
    digest = hashlib.sha256(f"{image.resolve()}|{st.st_size}|{st.st_mtime_ns}|{st.st_ino}|{st.st_ctime_ns}"
                            .encode()).hexdigest()
    name = digest[:20] + ".jpg"
    target = out_dir / name
    if target.exists():
        return name
    try:
        with Image.open(image) as img:
            img.seek(0)
            small = ImageOps.exif_transpose(img)
            small.thumbnail((THUMB_SIDE, THUMB_SIDE))
            if small.mode in ("RGBA", "LA", "P"):
                small = small.convert("RGBA")
                base = Image.new("RGB", small.size, "white")
                base.paste(small, mask=small.getchannel("A"))
                small = base
            small = small.convert("RGB")
            buffer = io.BytesIO()
            small.save(buffer, "JPEG", quality=80)
    except Exception:                   # noqa: BLE001 - a broken image gets no thumbnail
        return ""
    atomic_write_bytes(target, buffer.getvalue())
    return name


def vision_answer(interrogations: Path | None, item_id: str) -> str:
    """The interrogate stage's answer for an image ("" when there is none or it is unreadable)."""
    if interrogations is None:
        return ""
    try:
        record = read_json(artifact(interrogations, item_id, ".json"))
    except (FileNotFoundError, ValueError):
        return ""
    return str(record.get("answer", "")) if isinstance(record, dict) else ""


def card_for(item: Item, captions: Path, failed: dict[str, str], thumbs: Path,
             interrogations: Path | None = None) -> Card:
    """One image's card, from what is on disk (its thumbnail made when missing)."""
    card = Card(item.id)
    if item.error:
        card.flags.append("failed")
        card.reasons.append(item.error)
        return card
    name = thumbnail(item.data, thumbs)
    card.thumb = f"thumbs/{name}" if name else ""
    try:
        card.tags = (read_tag_text(item.data) or "").strip()
    except Exception as exc:        # noqa: BLE001 - shown, never fatal
        card.tags = f"(unreadable: {exc})"
    txt = artifact(captions, item.id, ".txt")
    try:
        meta = read_json(artifact(captions, item.id, ".json"))
    except (FileNotFoundError, ValueError):
        meta = None
    meta = meta if isinstance(meta, dict) else {}
    try:
        written = txt.read_bytes()
    except FileNotFoundError:
        written = None
    if written is not None:
        card.caption = written.decode("utf-8", "replace").strip()
    # what the caption was made from; for a caption we did not make (or none yet), what
    # the vision backend says now
    card.vision = str(meta.get("vision", "")) or vision_answer(interrogations, item.id)
    if written is not None and sha256_bytes(written) == meta.get("caption_sha256"):
        card.score, card.coverage = meta.get("score"), meta.get("coverage")
        card.flags += [str(f) for f in meta.get("flags", [])]
        card.reasons += [str(r) for r in meta.get("reasons", [])]
        if meta.get("over_limit") and "over_clip_tokens" not in card.flags:
            card.flags.append("over_clip_tokens")
    elif written is not None:
        card.flags.append("kept")
        card.reasons.append("not written by this tool (or edited by hand): kept as it is")
    if item.id in failed:
        card.flags.insert(0, "failed")
        card.reasons.insert(0, failed[item.id])
    elif written is None:
        card.flags.append("missing")
    return card


def collect(images: Path, captions: Path, summary_file: Path,
            interrogations: Path | None = None) -> list[Card]:
    failed = failures(summary_file)
    thumbs = captions / "thumbs"
    thumbs.mkdir(parents=True, exist_ok=True)
    cards = [card_for(item, captions, failed, thumbs, interrogations) for item in image_items(images)]
    return sorted(cards, key=lambda c: c.rank)


_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:1em;background:#fafafa;color:#222}
header{position:sticky;top:0;background:#fafafa;padding:.5em 0;border-bottom:1px solid #ddd}
.card{display:flex;gap:1em;background:#fff;border:1px solid #ddd;border-radius:6px;
padding:.6em;margin:.6em 0}.card.flagged{border-left:6px solid #c33}
.card img{width:160px;height:auto;object-fit:contain;background:#eee;flex:none}
.noimg{width:160px;height:120px;background:#eee;flex:none;display:flex;align-items:center;
justify-content:center;color:#888}.caption{font-size:16px;margin:.2em 0 .4em}
.flag{display:inline-block;background:#c33;color:#fff;border-radius:3px;padding:0 .4em;
margin-right:.3em;font-size:12px}.meta{color:#555}.reason{color:#a22}
"""
_SCRIPT = """
function apply(){var f=document.getElementById('flag').value,
q=document.getElementById('q').value.toLowerCase(),n=0;
document.querySelectorAll('.card').forEach(function(c){var fl=c.dataset.flags.split(' ');
var ok=(f==='all'||(f==='flagged'&&c.dataset.flags!=='')||fl.indexOf(f)>=0)&&
(q===''||c.textContent.toLowerCase().indexOf(q)>=0);c.style.display=ok?'':'none';n+=ok;});
document.getElementById('shown').textContent=n;}
function start(){var h=new URLSearchParams(location.hash.slice(1));
if(h.get('flag'))document.getElementById('flag').value=h.get('flag');
if(h.get('q'))document.getElementById('q').value=h.get('q');apply();}
"""


def render(cards: list[Card], title: str = "Captions") -> str:
    counts = {f: sum(f in c.flags for c in cards) for f in FLAG_ORDER}
    flagged = sum(bool(c.flags) for c in cards)
    return "".join(_page(title, counts, len(cards), flagged, map(_card_html, cards)))


def _card_html(card: Card) -> str:
    esc = html.escape
    picture = (f'<img src="{esc(card.thumb)}" alt="{esc(card.id)}" loading="lazy">'
               if card.thumb else '<div class="noimg">no preview</div>')
    flags = "".join(f'<span class="flag">{esc(f)}</span>' for f in card.flags)
    score = ("" if card.score is None else
             f"grounding score {card.score:.2f}, tag coverage {card.coverage or 0:.0%}")
    reasons = "".join(f'<div class="reason">{esc(r)}</div>' for r in card.reasons)
    return (f'<div class="card{" flagged" if card.flags else ""}" data-id="{esc(card.id)}" '
            f'data-flags="{esc(" ".join(card.flags))}">{picture}<div>'
            f'<div><b>{esc(card.id)}</b> {flags}</div>'
            f'<div class="caption">{esc(card.caption) or "<i>(no caption)</i>"}</div>'
            f'<div class="meta">tags: {esc(card.tags) or "(none)"}</div>'
            f'<div class="meta">vision: {esc(card.vision) or "(none)"}</div>'
            f'<div class="meta">{score}</div>{reasons}</div></div>')


def _page(title: str, counts: dict[str, int], total: int, flagged: int,
          cards_html: Iterable[str]) -> Iterator[str]:
    esc = html.escape
    options = ['<option value="all">all</option>', '<option value="flagged">flagged</option>']
    options += [f'<option value="{f}">{f} ({n})</option>' for f, n in counts.items() if n]
    yield (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
           f'<meta name="viewport" content="width=device-width,initial-scale=1">'
           f'<title>{esc(title)}</title><style>{_STYLE}</style><script>{_SCRIPT}</script></head>'
           f'<body onload="start()"><header><b>{esc(title)}</b>: {total} images, '
           f'{flagged} flagged, <span id="shown">{total}</span> shown. '
           f'Show <select id="flag" onchange="apply()">{"".join(options)}</select> '
           f'<input id="q" type="search" placeholder="search" oninput="apply()"></header>\n')
    first = True
    for chunk in cards_html:
        yield chunk if first else "\n" + chunk
        first = False
    yield "\n</body></html>\n"


def write_review(images: Path, captions: Path, summary_file: Path,
                 interrogations: Path | None = None) -> tuple[Path, int, int]:
    """Write captions/index.html; returns (path, images, flagged). `interrogations` is the
    interrogate stage's folder (cache/interrogate), for images without our provenance.

    Two passes, so memory does not grow with the folder: the first makes the thumbnails and
    keeps only each card's rank, id and file suffix (for the order and the header counts),
    the second renders the cards in that order straight into the file.
    """
    failed = failures(summary_file)
    thumbs = captions / "thumbs"
    thumbs.mkdir(parents=True, exist_ok=True)
    counts, flagged = dict.fromkeys(FLAG_ORDER, 0), 0
    order: list[tuple[tuple, str, Item | None]] = []     # rank, suffix, the item when it failed
    for item in image_items(images):
        card = card_for(item, captions, failed, thumbs, interrogations)
        for flag in FLAG_ORDER:
            counts[flag] += flag in card.flags
        flagged += bool(card.flags)
        order.append((card.rank, item.data.suffix if item.data and not item.error else "",
                      item if item.error else None))
    order.sort(key=lambda entry: entry[0])

    def cards() -> Iterator[str]:
        for (_, item_id), suffix, item in order:
            item = item or Item(item_id, images / (item_id + suffix))
            yield _card_html(card_for(item, captions, failed, thumbs, interrogations))

    path = captions / "index.html"
    chunks = (text.encode("utf-8") for text in _page(f"Captions of {images.name}", counts,
                                                    len(order), flagged, cards()))
    atomic_write_chunks(path, chunks)
    return path, len(order), flagged
