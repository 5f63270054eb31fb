"""The review page, `captions/index.html`: every image with its evidence, caption and flags.

Written by caption.py at the end of a run, from what is on disk: the image folder, the
captions and their NAME.json provenance, and the run summary's failures. Self-contained
(inline style and script, no server, nothing fetched): thumbnails are small JPEGs under
`captions/thumbs/` and each links to the full image, by relative paths, so the captions
folder can be opened anywhere, read-only. `caption.py --review` serves the same page with
decisions enabled (stages/reviewserver.py): accept, reject or edit a caption, with keys.

Triage: flagged items come first; the page sorts by score, flags, name or decision, filters
by flag, decision or near duplicates (a 64-bit dHash of each thumbnail; images at most
DUP_BITS bits apart are grouped) and searches any text. Each card shows the verifier's
doubted words highlighted in the caption, the candidates that lost, the tags used and
dropped with reasons, and the caption's CLIP tokens against the limit.

Flags: `fallback` (no model candidate passed the verifier), `vision_guess` (an untagged
image whose subject is what the vision backend only guessed), `over_clip_tokens`, `kept`
(a caption not written by this tool, left as it is), `failed` (with its reason) and
`missing` (no caption yet, e.g. the interpret stage was skipped).
"""

from __future__ import annotations

import functools
import hashlib
import html
import io
import json
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from .decisions import DECISIONS, EDITED, UNDECIDED, review_of
from .io.folder import artifact, image_items, read_tag_text
from .stage import Item
from .store import atomic_write_bytes, atomic_write_chunks, read_json, sha256_bytes

THUMB_SIDE = 160
THUMB_VERSION = "2"              # 2: decoded as the stages decode (16-bit, CMYK, EXIF)
THUMB_MAX_PIXELS = 400_000_000   # a thumbnail of anything the stages could read
FLAG_ORDER = ("failed", "fallback", "vision_guess", "over_clip_tokens", "kept", "missing")
DUP_BITS = 6                     # dHashes at most this many bits apart are near duplicates
DEFAULT_CLIP_LIMIT = 77


@dataclass
class Card:
    id: str
    thumb: str = ""                   # relative to the captions folder
    image: str = ""                   # the full image, relative to the captions folder
    tags: str = ""
    vision: str = ""
    caption: str = ""
    score: float | None = None
    coverage: float | None = None
    flags: list[str] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    decision: str = UNDECIDED
    previous: str = ""                # the text an edit replaced
    doubted: list[str] = field(default_factory=list)
    candidates: list[dict] = field(default_factory=list)
    tags_used: list[str] = field(default_factory=list)
    tags_dropped: list[dict] = field(default_factory=list)
    clip_tokens: int | None = None
    dups: tuple[str, ...] = ()      # its near-duplicate group (sorted ids, itself included)

    @property
    def rank(self) -> tuple:
        order = [FLAG_ORDER.index(f) for f in self.flags if f in FLAG_ORDER]
        return (min(order) if order else len(FLAG_ORDER), self.id)


# Stages whose items are images (their ids are image ids). The tags stage's items are tag
# names ("rocket") and tag files ("odd.txt"): a failed tag is not a failed image of that name.
IMAGE_STAGES = ("interrogate", "interpret")


def failures(summary_file: Path, captions: Path | None = None) -> dict[str, str]:
    """Image id -> the first failure reason an image stage of the last run recorded for it,
    when that run wrote `captions` (the cache, and its summary, is shared by every input of
    a config: another input's failures are not this folder's)."""
    try:
        summary = read_json(summary_file)
    except (FileNotFoundError, ValueError):
        return {}
    if isinstance(summary, dict) and captions is not None and \
            summary.get("captions", str(captions)) != str(captions):
        return {}
    out: dict[str, str] = {}
    for stage in summary.get("stages", []) if isinstance(summary, dict) else []:
        if stage.get("name") not in IMAGE_STAGES:
            continue
        for failure in stage.get("failed", []):
            out.setdefault(str(failure.get("id")), f"{stage.get('name')}: {failure.get('reason')}")
    return out


def thumbnail_bytes(source: Path | bytes) -> bytes:
    """A small JPEG of an image file or of a shard's image bytes, decoded as the stages decode
    it (stages/io/imageio.py: 16-bit scaled, CMYK, palette and alpha on white, EXIF upright).
    Raises ItemError when it cannot be read."""
    from .io.imageio import load_image

    small = load_image(source, THUMB_MAX_PIXELS)
    small.thumbnail((THUMB_SIDE, THUMB_SIDE))
    buffer = io.BytesIO()
    small.save(buffer, "JPEG", quality=80)
    return buffer.getvalue()


def thumbnail(image: Path, out_dir: Path) -> str:
    """A small JPEG of `image` under `out_dir` (redone when the image changes); its name, or
    "" when the image cannot be read."""
    try:
        st = image.stat()
    except OSError:
        return ""
    digest = hashlib.sha256(f"{THUMB_VERSION}|{image.resolve()}|{st.st_size}|{st.st_mtime_ns}|"
                            f"{st.st_ino}|{st.st_ctime_ns}"
                            .encode()).hexdigest()
    name = digest[:20] + ".jpg"
    target = out_dir / name
    if target.exists():
        return name
    try:
        data = thumbnail_bytes(image)
    except Exception:                   # noqa: BLE001 - a broken image gets no thumbnail
        return ""
    atomic_write_bytes(target, data)
    return name


def dhash(source: Path | bytes) -> int | None:
    """The 64-bit difference hash of an image (its thumbnail will do): 9x8 grey, one bit per
    pair of horizontal neighbours, set when the left one is brighter."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as img:
            grey = img.convert("L").resize((9, 8), Image.Resampling.LANCZOS)
    except Exception:                   # noqa: BLE001 - no hash, no group
        return None
    px = list(grey.tobytes())
    bits = 0
    for row in range(8):
        for col in range(8):
            bits = (bits << 1) | (px[row * 9 + col] > px[row * 9 + col + 1])
    return bits


@functools.lru_cache(maxsize=1 << 16)
def _thumb_hash(path: str) -> int | None:
    """A thumbnail's dHash; its name changes with the image, so a served page's reloads
    reuse it."""
    return dhash(Path(path))


DUPS_SHOWN = 12                    # ids of a near-duplicate group named on a card


def near_duplicates(hashes: dict[str, int], max_bits: int = DUP_BITS) -> dict[str, tuple[str, ...]]:
    """id -> its near-duplicate group (ids in order, itself included; one shared tuple per
    group, so a folder of 20,000 copies of one picture costs one tuple, not 20,000 lists),
    for images whose hashes differ in at most `max_bits` bits (transitively). Equal hashes
    are joined at once; distinct hashes are compared only when they share one of 8 bytes
    (two hashes within 7 bits must, by pigeonhole), so not every pair is compared."""
    by_value: dict[int, list[str]] = {}
    for item_id, value in hashes.items():
        by_value.setdefault(value, []).append(item_id)
    parent = {v: v for v in by_value}

    def root(v: int) -> int:
        while parent[v] != v:
            parent[v] = parent[parent[v]]
            v = parent[v]
        return v

    buckets: dict[tuple[int, int], list[int]] = {}
    for value in by_value:
        for band in range(8):
            buckets.setdefault((band, (value >> (8 * band)) & 0xFF), []).append(value)
    for members in buckets.values():
        for i, a in enumerate(members):
            for b in members[i + 1:]:
                if root(a) != root(b) and bin(a ^ b).count("1") <= max_bits:
                    parent[root(a)] = root(b)
    groups: dict[int, list[str]] = {}
    for value, ids in by_value.items():
        groups.setdefault(root(value), []).extend(ids)
    out: dict[str, tuple[str, ...]] = {}
    for ids in groups.values():
        if len(ids) > 1:
            group = tuple(sorted(ids))
            out.update(dict.fromkeys(group, group))
    return out


def vision_answer(interrogations: Path | None, item_id: str, image: Path | None = None) -> str:
    """The interrogate stage's answer for an image ("" when there is none, it is unreadable,
    or it is about another picture: the cache is shared by every input of a config, and
    another input's image with the same id may have been looked at last)."""
    if interrogations is None:
        return ""
    try:
        record = read_json(artifact(interrogations, item_id, ".json"))
    except (FileNotFoundError, ValueError):
        return ""
    if not isinstance(record, dict):
        return ""
    if image is not None and record.get("image_sha256"):
        from .io.folder import image_digest

        try:
            if image_digest(image, record) != record["image_sha256"]:
                return ""
        except OSError:
            return ""
    return str(record.get("answer", ""))


def _strings(value) -> list[str]:
    return [str(v) for v in value] if isinstance(value, list) else []


def fill_from_record(card: Card, meta: dict) -> None:
    """What the interpret stage recorded about the caption: score, flags, verdicts, tags."""
    card.score, card.coverage = meta.get("score"), meta.get("coverage")
    card.flags += _strings(meta.get("flags"))
    card.reasons += _strings(meta.get("reasons"))
    if meta.get("over_limit") and "over_clip_tokens" not in card.flags:
        card.flags.append("over_clip_tokens")
    card.doubted = _strings(meta.get("doubted"))
    candidates = meta.get("candidates")
    card.candidates = [c for c in candidates if isinstance(c, dict)] if isinstance(candidates, list) else []
    if not card.doubted:              # the chosen candidate's objections, when it is one of them
        for cand in card.candidates:
            if cand.get("caption") and cand.get("caption") in card.caption:
                card.doubted = _strings(cand.get("doubted") or cand.get("ungrounded"))
                break
    card.tags_used = _strings(meta.get("tags_used")) or _strings(meta.get("tags"))
    dropped = meta.get("tags_dropped")
    card.tags_dropped = [d for d in dropped if isinstance(d, dict)] if isinstance(dropped, list) else []
    tokens = meta.get("clip_tokens")
    card.clip_tokens = tokens if isinstance(tokens, int) else None


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
    card.image = Path(os.path.relpath(item.data, captions)).as_posix()
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
    review = review_of(meta)
    card.decision = review.get("decision", UNDECIDED)
    card.previous = str(review.get("previous", "")) if card.decision == EDITED else ""
    try:
        written = txt.read_bytes()
    except FileNotFoundError:
        written = None
    if written is not None:
        card.caption = written.decode("utf-8", "replace").strip()
    # what the caption was made from; for a caption we did not make (or none yet), what
    # the vision backend says now
    card.vision = str(meta.get("vision", "")) or vision_answer(
        interrogations, item.id, item.data if isinstance(item.data, Path) else None)
    digest = sha256_bytes(written) if written is not None else None
    if digest is not None and digest == meta.get("caption_sha256"):
        fill_from_record(card, meta)
    elif digest is not None and digest == review.get("caption_sha256") and "caption_sha256" in meta:
        fill_from_record(card, meta)             # edited in the review: the model's verdicts stay
        card.doubted = []
        card.flags = [f for f in card.flags if f != "over_clip_tokens"]
        card.clip_tokens = None
    elif written is not None and card.decision not in DECISIONS:
        card.flags.append("kept")
        card.reasons.append("not written by this tool (or edited by hand): kept as it is")
    if item.id in failed:
        card.flags.insert(0, "failed")
        card.reasons.insert(0, failed[item.id])
    elif written is None and card.decision not in DECISIONS:
        card.flags.append("missing")
    return card


def collect(images: Path, captions: Path, summary_file: Path,
            interrogations: Path | None = None) -> list[Card]:
    failed = failures(summary_file, captions)
    thumbs = captions / "thumbs"
    thumbs.mkdir(parents=True, exist_ok=True)
    cards = [card_for(item, captions, failed, thumbs, interrogations) for item in image_items(images)]
    return sorted(cards, key=lambda c: c.rank)


_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:0 1em 1em;background:#fafafa;color:#222}
header{position:sticky;top:0;z-index:1;background:#fafafa;padding:.5em 0;border-bottom:1px solid #ddd}
header .counts{color:#555;font-size:13px;margin-top:.2em}
.card{display:flex;gap:1em;background:#fff;border:1px solid #ddd;border-radius:6px;
padding:.6em;margin:.6em 0}.card.flagged{border-left:6px solid #c33}
.card.cur{outline:3px solid #36c}.card[data-decision=rejected]{opacity:.55}
.card img{width:160px;height:auto;object-fit:contain;background:#eee;flex:none}
.noimg{width:160px;height:120px;background:#eee;flex:none;display:flex;align-items:center;
justify-content:center;color:#888}.caption{font-size:16px;margin:.2em 0 .4em}
.caption textarea{width:100%;font:inherit;min-height:3em}
mark{background:#fd8;border-bottom:2px solid #c80}
.flag{display:inline-block;background:#c33;color:#fff;border-radius:3px;padding:0 .4em;
margin-right:.3em;font-size:12px}.meta{color:#555}.reason{color:#a22}
.decision{display:inline-block;border-radius:3px;padding:0 .4em;font-size:12px;color:#fff}
.decision:empty{display:none}.d-accepted{background:#283}.d-rejected{background:#555}
.d-edited{background:#36c}.over{color:#a22;font-weight:bold}
.acts{display:none;margin:.2em 0}.served .acts{display:block}
.acts button{margin-right:.3em}.lost li{color:#555}.lost .passed{color:#283}
#status{color:#a22}kbd{border:1px solid #aaa;border-radius:3px;padding:0 .2em;font-size:12px}
"""
_SCRIPT = r"""
var DEC=['accepted','rejected','edited'],ORDER=['rejected','edited','accepted','undecided'],cur=-1;
function cards(){return Array.prototype.slice.call(document.querySelectorAll('.card'));}
function shown(){return cards().filter(function(c){return c.style.display!=='none';});}
function text(c){var d=c.querySelector('.dup'),t=c.textContent;
return (d?t.replace(d.textContent,''):t).toLowerCase();}
function apply(){var f=document.getElementById('flag').value,
q=document.getElementById('q').value.toLowerCase(),n=0;
cards().forEach(function(c){var fl=c.dataset.flags.split(' '),ok;
if(f==='all')ok=true;else if(f==='flagged')ok=c.dataset.flags!=='';
else if(f==='dups')ok=c.dataset.dup!=='';
else if(f.indexOf('d:')===0)ok=c.dataset.decision===f.slice(2);else ok=fl.indexOf(f)>=0;
ok=ok&&(q===''||text(c).indexOf(q)>=0);c.style.display=ok?'':'none';n+=ok;});
document.getElementById('shown').textContent=n;}
function sortBy(){var k=document.getElementById('sort').value,box=document.getElementById('cards');
var key={rank:function(c){return [+c.dataset.rank,''];},
score:function(c){return [c.dataset.score===''?-1:+c.dataset.score,c.dataset.id];},
name:function(c){return [0,c.dataset.id];},
flags:function(c){return [-c.dataset.flags.split(' ').filter(Boolean).length,c.dataset.id];},
decision:function(c){return [ORDER.indexOf(c.dataset.decision),c.dataset.id];},
dups:function(c){return [c.dataset.dup===''?1:0,c.dataset.dup+' '+c.dataset.id];}}[k];
cards().map(function(c){return [key(c),c];}).sort(function(a,b){
return a[0][0]-b[0][0]||(a[0][1]<b[0][1]?-1:a[0][1]>b[0][1]?1:0);})
.forEach(function(p){box.appendChild(p[1]);});}
function counts(){DEC.concat(['undecided']).forEach(function(d){var e=document.getElementById('n-'+d);
if(e)e.textContent=cards().filter(function(c){return c.dataset.decision===d;}).length;});}
function focusCard(i){var s=shown();if(!s.length)return;i=Math.max(0,Math.min(i,s.length-1));
cards().forEach(function(c){c.classList.remove('cur');});s[i].classList.add('cur');cur=i;
s[i].scrollIntoView({block:'nearest'});}
function current(){var c=document.querySelector('.card.cur');return c;}
function say(t){document.getElementById('status').textContent=t;}
function decide(card,decision,text){if(!window.REVIEW)return;
fetch('decide',{method:'POST',headers:{'Content-Type':'application/json','X-Review-Token':REVIEW.token},
body:JSON.stringify({id:card.dataset.id,decision:decision,text:text})}).then(function(r){
return r.json().then(function(j){if(!r.ok)throw new Error(j.error||r.status);return j;});})
.then(function(j){card.dataset.decision=j.decision;var b=card.querySelector('.decision');
b.textContent=j.decision==='undecided'?'':j.decision;b.className='decision d-'+j.decision;
var cap=card.querySelector('.caption');
if(decision==='edited'||cap.querySelector('textarea'))cap.textContent=j.caption;
counts();say('');}).catch(function(e){say(card.dataset.id+': '+e.message);});}
function edit(card){if(!window.REVIEW)return;var cap=card.querySelector('.caption');
if(cap.querySelector('textarea'))return;var old=cap.innerHTML,t=document.createElement('textarea');
t.value=cap.textContent;cap.innerHTML='';cap.appendChild(t);t.focus();
t.addEventListener('keydown',function(e){if(e.key==='Enter'&&!e.shiftKey){e.preventDefault();
decide(card,'edited',t.value);}else if(e.key==='Escape'){e.preventDefault();cap.innerHTML=old;}});}
function act(btn,what){var card=btn.closest('.card');focusCard(shown().indexOf(card));
if(what==='edit')edit(card);else decide(card,what);}
document.addEventListener('keydown',function(e){var tag=e.target.tagName;
if(tag==='TEXTAREA'||tag==='INPUT'||tag==='SELECT'||e.ctrlKey||e.metaKey||e.altKey)return;
var c=current(),i=c?shown().indexOf(c):-1;
if(e.key==='j'){focusCard(i+1);}else if(e.key==='k'){focusCard(i<0?0:i-1);}
else if(c&&e.key==='a'){decide(c,'accepted');}else if(c&&e.key==='r'){decide(c,'rejected');}
else if(c&&e.key==='u'){decide(c,'undecided');}else if(c&&e.key==='e'){e.preventDefault();edit(c);}
else return;});
function start(){var h=new URLSearchParams(location.hash.slice(1));
if(h.get('flag'))document.getElementById('flag').value=h.get('flag');
if(h.get('sort'))document.getElementById('sort').value=h.get('sort');
if(h.get('q'))document.getElementById('q').value=h.get('q');
if(window.REVIEW)document.body.classList.add('served');sortBy();apply();counts();}
"""


@dataclass(frozen=True)
class Links:
    """How a card links its thumbnail and full image: relative files for the static page,
    the review server's routes (by item id, never a path) for the served one."""

    served: bool = False

    def thumb(self, card: Card) -> str:
        return f"thumb?id={quote(card.id, safe='')}" if self.served else card.thumb

    def image(self, card: Card) -> str:
        return f"image?id={quote(card.id, safe='')}" if self.served else quote(card.image)


def highlight(text: str, words: Iterable[str]) -> str:
    """`text` escaped, with each doubted word or phrase marked (whole words, any case)."""
    words = sorted({w.strip() for w in words if w and w.strip()}, key=len, reverse=True)
    if not words:
        return html.escape(text)
    pattern = re.compile(r"(?<!\w)(" + "|".join(map(re.escape, words)) + r")(?!\w)", re.IGNORECASE)
    out, last = [], 0
    for match in pattern.finditer(text):
        out += [html.escape(text[last:match.start()]), f"<mark>{html.escape(match.group(0))}</mark>"]
        last = match.end()
    return "".join(out) + html.escape(text[last:])


def _candidates_html(card: Card) -> str:
    esc = html.escape
    lost = [c for c in card.candidates if str(c.get("caption", "")).strip() != card.caption.strip()]
    if not lost:
        return ""
    rows = []
    for cand in lost:
        doubted = _strings(cand.get("doubted") or cand.get("ungrounded"))
        verdict = "passed" if cand.get("passed") else "failed"
        score = cand.get("score")
        why = "; ".join(_strings(cand.get("reasons")))
        rows.append(f'<li class="{verdict}">{highlight(str(cand.get("caption", "")), doubted)} '
                    f'<span class="meta">({verdict}'
                    f'{f", score {score:.2f}" if isinstance(score, (int, float)) else ""}'
                    f'{": " + esc(why) if why else ""})</span></li>')
    return (f'<details class="lost"><summary>candidates that lost ({len(lost)})</summary>'
            f'<ol>{"".join(rows)}</ol></details>')


def _card_html(card: Card, rank: int = 0, links: Links = Links(),
               clip_limit: int = DEFAULT_CLIP_LIMIT) -> str:
    esc = html.escape
    thumb = links.thumb(card) if card.thumb or links.served else ""
    picture = (f'<a href="{esc(links.image(card))}" target="_blank"><img src="{esc(thumb)}" '
               f'alt="{esc(card.id)}" loading="lazy"></a>'
               if thumb else '<div class="noimg">no preview</div>')
    flags = "".join(f'<span class="flag">{esc(f)}</span>' for f in card.flags)
    decision = "" if card.decision == UNDECIDED else card.decision
    tokens = ""
    if card.clip_tokens is not None:
        over = card.clip_tokens > clip_limit
        tokens = (f' <span class="meta{" over" if over else ""}">{card.clip_tokens}/{clip_limit} '
                  f'CLIP tokens</span>')
    score = ("" if card.score is None else
             f"grounding score {card.score:.2f}, tag coverage {card.coverage or 0:.0%}")
    if card.doubted:
        score += f"; doubted: {', '.join(card.doubted)}"
    reasons = "".join(f'<div class="reason">{esc(r)}</div>' for r in card.reasons)
    used = ""
    if card.tags_used or card.tags_dropped:
        dropped = ", ".join(f"{d.get('tag', '?')} ({d.get('reason', '?')})" for d in card.tags_dropped)
        used = (f'<div class="meta">tags used: {esc(", ".join(card.tags_used)) or "(none)"}'
                f'{"; dropped: " + esc(dropped) if dropped else ""}</div>')
    previous = (f'<div class="meta">before the edit: {esc(card.previous)}</div>'
                if card.previous else "")
    others = [i for i in card.dups[:DUPS_SHOWN + 1] if i != card.id][:DUPS_SHOWN]
    more = len(card.dups) - 1 - len(others)
    dups = (f'<div class="meta dup">near duplicates: {esc(", ".join(others))}'
            f'{esc(f" and {more} more") if more > 0 else ""}</div>' if card.dups else "")
    caption = highlight(card.caption, card.doubted) or "<i>(no caption)</i>"
    acts = ('<div class="acts"><button onclick="act(this,\'accepted\')">accept <kbd>a</kbd></button>'
            '<button onclick="act(this,\'rejected\')">reject <kbd>r</kbd></button>'
            '<button onclick="act(this,\'edit\')">edit <kbd>e</kbd></button>'
            '<button onclick="act(this,\'undecided\')">undo <kbd>u</kbd></button></div>')
    return (f'<div class="card{" flagged" if card.flags else ""}" data-id="{esc(card.id)}" '
            f'data-flags="{esc(" ".join(card.flags))}" data-decision="{card.decision}" '
            f'data-score="{"" if card.score is None else card.score}" data-rank="{rank}" '
            f'data-dup="{esc(card.dups[0]) if card.dups else ""}">{picture}<div>'
            f'<div><b>{esc(card.id)}</b> {flags}<span class="decision d-{card.decision}">'
            f'{decision}</span>{tokens}</div>'
            f'<div class="caption">{caption}</div>{acts}{previous}'
            f'<div class="meta">tags: {esc(card.tags) or "(none)"}</div>{used}'
            f'<div class="meta">vision: {esc(card.vision) or "(none)"}</div>'
            f'<div class="meta">{esc(score)}</div>{reasons}{_candidates_html(card)}{dups}</div></div>')


@dataclass
class PageInfo:
    """The header's figures: totals, counts by flag and by decision."""

    title: str
    total: int = 0
    flagged: int = 0
    flags: dict[str, int] = field(default_factory=lambda: dict.fromkeys(FLAG_ORDER, 0))
    decisions: dict[str, int] = field(default_factory=lambda: dict.fromkeys((*DECISIONS, UNDECIDED), 0))
    dups: int = 0
    served: dict | None = None        # the review server's session: {"token": ...}
    nav: str = ""                     # the served page's paging links (HTML)

    def add(self, card: Card) -> None:
        self.total += 1
        self.flagged += bool(card.flags)
        for flag in card.flags:
            if flag in self.flags:
                self.flags[flag] += 1
        self.decisions[card.decision] = self.decisions.get(card.decision, 0) + 1


def render(cards: list[Card], title: str = "Captions") -> str:
    info = PageInfo(title)
    for card in cards:
        info.add(card)
    return "".join(_page(info, (_card_html(c, i) for i, c in enumerate(cards))))


def _page(info: PageInfo, cards_html: Iterable[str]) -> Iterator[str]:
    esc = html.escape
    options = ['<option value="all">all</option>', '<option value="flagged">flagged</option>']
    options += [f'<option value="{f}">{f} ({n})</option>' for f, n in info.flags.items() if n]
    options += [f'<option value="d:{d}">{d} ({n})</option>' for d, n in info.decisions.items()]
    if info.dups:
        options.append(f'<option value="dups">near duplicates ({info.dups})</option>')
    sorts = "".join(f'<option value="{v}">{t}</option>' for v, t in (
        ("rank", "flagged first"), ("score", "score (lowest first)"), ("flags", "most flags"),
        ("name", "name"), ("decision", "decision"), ("dups", "near duplicates")))
    flag_counts = ", ".join(f"{n} {f}" for f, n in info.flags.items() if n) or "none"
    decided = ", ".join(f'<span id="n-{d}">{n}</span> {d}' for d, n in info.decisions.items())
    session = ""
    if info.served is not None:
        session = f"<script>var REVIEW={json.dumps(info.served)};</script>"
        keys = ("keys: <kbd>j</kbd>/<kbd>k</kbd> next/previous, <kbd>a</kbd> accept, "
                "<kbd>r</kbd> reject, <kbd>e</kbd> edit (<kbd>Enter</kbd> saves, <kbd>Esc</kbd> "
                "cancels), <kbd>u</kbd> undo")
    else:
        keys = "read-only: run <code>caption.py --review</code> to accept, reject or edit"
    yield (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
           f'<meta name="viewport" content="width=device-width,initial-scale=1">'
           f'<title>{esc(info.title)}</title><style>{_STYLE}</style>{session}'
           f'<script>{_SCRIPT}</script></head>'
           f'<body onload="start()"><header><b>{esc(info.title)}</b>: {info.total} images, '
           f'{info.flagged} flagged, <span id="shown">{info.total}</span> shown. '
           f'Show <select id="flag" onchange="apply()">{"".join(options)}</select> '
           f'sort <select id="sort" onchange="sortBy()">{sorts}</select> '
           f'<input id="q" type="search" placeholder="search" oninput="apply()"> {info.nav}'
           f'<span id="status"></span><div class="counts">flags: {flag_counts}. decisions: '
           f'{decided}. {keys}</div></header>\n<main id="cards">\n')
    first = True
    for chunk in cards_html:
        yield chunk if first else "\n" + chunk
        first = False
    yield "\n</main></body></html>\n"


@dataclass
class ReviewSummary:
    path: Path
    info: PageInfo
    empty_tags: list[str]             # tag files (relative to the image folder) with no tags


def folder_page(images: Path, captions: Path, summary_file: Path,
                interrogations: Path | None = None, *, links: Links = Links(),
                served: dict | None = None, clip_limit: int = DEFAULT_CLIP_LIMIT,
                ) -> tuple[PageInfo, list[str], Iterator[str]]:
    """The page of an image folder: its header figures, the empty tag files, and its HTML
    in chunks. Two passes, so memory does not grow with the folder: the first makes the
    thumbnails and their hashes and keeps only each card's rank, id and file suffix, the
    second renders the cards in that order."""
    failed = failures(summary_file, captions)
    thumbs = captions / "thumbs"
    thumbs.mkdir(parents=True, exist_ok=True)
    info = PageInfo(f"Captions of {images.name}", served=served)
    empty: list[str] = []
    hashes: dict[str, int] = {}
    order: list[tuple[tuple, str, Item | None]] = []     # rank, suffix, the item when it failed
    for item in image_items(images):
        card = card_for(item, captions, failed, thumbs, interrogations)
        info.add(card)
        if card.thumb:
            value = _thumb_hash(str(captions / card.thumb))
            if value is not None:
                hashes[item.id] = value
        if not item.error and card.tags == "" and item.data.with_suffix(".txt").is_file():
            empty.append(item.data.with_suffix(".txt").relative_to(images).as_posix())
        order.append((card.rank, item.data.suffix if item.data and not item.error else "",
                      item if item.error else None))
    order.sort(key=lambda entry: entry[0])
    groups = near_duplicates(hashes)
    info.dups = len(groups)

    def cards() -> Iterator[str]:
        for rank, ((_, item_id), suffix, item) in enumerate(order):
            item = item or Item(item_id, images / (item_id + suffix))
            card = card_for(item, captions, failed, thumbs, interrogations)
            card.dups = groups.get(item_id, ())
            yield _card_html(card, rank, links, clip_limit)

    return info, empty, _page(info, cards())


def review_page(images: Path, captions: Path, summary_file: Path,
                interrogations: Path | None = None,
                clip_limit: int = DEFAULT_CLIP_LIMIT) -> ReviewSummary:
    """Write captions/index.html, the static (read-only) page."""
    info, empty, chunks = folder_page(images, captions, summary_file, interrogations,
                                      clip_limit=clip_limit)
    path = captions / "index.html"
    atomic_write_chunks(path, (text.encode("utf-8") for text in chunks))
    return ReviewSummary(path, info, empty)


def write_review(images: Path, captions: Path, summary_file: Path,
                 interrogations: Path | None = None) -> tuple[Path, int, int]:
    """Write captions/index.html; returns (path, images, flagged). `interrogations` is the
    interrogate stage's folder (cache/interrogate), for images without our provenance."""
    done = review_page(images, captions, summary_file, interrogations)
    return done.path, done.info.total, done.info.flagged


def dataset_flags(captions: Path) -> tuple[int, int]:
    """(captions, flagged ones) over the caption Parquet files of shards and tables."""
    from .decisions import DECISIONS_FILE
    from .io.shardout import read_table

    total = flagged = 0
    for path in sorted(captions.rglob("*.parquet")) if captions.is_dir() else []:
        if path.name.startswith(".") or path == captions / DECISIONS_FILE:
            continue
        try:
            flags = read_table(path, columns=["flags"]).column("flags").to_pylist()
        except Exception:             # noqa: BLE001 - not one of ours: not counted
            continue
        total += len(flags)
        flagged += sum(bool(f) for f in flags)
    return total, flagged
