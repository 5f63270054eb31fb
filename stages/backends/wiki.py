"""Where tag wiki text comes from: a local file (offline) or the danbooru API.

Both answer `lookup(tag) -> WikiAnswer`. Only definitive answers come back: a page, "no
wiki" (HTTP 404 or an empty page), or "below min_post_count". Network errors, 429 and 5xx
are retried with backoff and, when retries run out, raised as ItemError so the tag is
tried again on the next run instead of being cached as missing.
"""

from __future__ import annotations

import asyncio
import html
import json
import random
import re
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError, FatalError, ItemError


@dataclass(frozen=True)
class WikiAnswer:
    status: str                 # found | no_wiki | below_min_posts
    text: str = ""
    post_count: int | None = None
    category: str | None = None          # general | artist | copyright | character | meta
    implies: tuple[str, ...] | None = None   # broader tags, transitively; None: not known
    other_names: tuple[str, ...] = ()    # the tag's names in other languages


# Danbooru's tag categories by number.
CATEGORIES = {0: "general", 1: "artist", 3: "copyright", 4: "character", 5: "meta"}
MAX_IMPLICATION_DEPTH = 4


def our_name(name: str) -> str:
    """Danbooru's spelling ('long_hair') in our cleaned form ('long hair')."""
    from ..language.tagging import normalise

    return normalise(name)


def api_name(tag: str) -> str:
    """Our cleaned tag ('long hair') in danbooru's spelling ('long_hair')."""
    return tag.strip().replace(" ", "_")


# Block markup whose content is not definition prose (collapsed sections, tables, code,
# translator notes): dropped with what it encloses.
_DROP_BLOCKS = re.compile(
    r"\[(section|expand|table|code|nodtext|tn)(?:[=\s][^\]]*)?\].*?(?:\[/\1\]|\Z)"
    r"|<(section|expand|table|code|nodtext|tn)(?:[=\s][^>]*)?>.*?(?:</\2>|\Z)",
    re.IGNORECASE | re.DOTALL)
# A collapsed section that holds the page's definition: its prose is kept, the markup dropped.
_DEFINITION_SECTION = re.compile(
    r"\[(section|expand)=\s*(?:definition|description|overview|summary|about|meaning)\s*\]"
    r"(.*?)(?:\[/\1\]|\Z)", re.IGNORECASE | re.DOTALL)
_ANY_SECTION = re.compile(r"\[(section|expand)(?:=([^\]]*))?\](.*?)(?:\[/\1\]|\Z)",
                          re.IGNORECASE | re.DOTALL)
_NOT_DEFINITION = re.compile(r"see also|external link|related|confused|gallery|example|"
                             r"trivia|list|note", re.IGNORECASE)
# Sentences that tell taggers what to do rather than say what the tag means.
_INSTRUCTION = re.compile(
    r"\bto tag\b|\buse (?:the )?tags?\b|\btags? (?:such as|like)\b|\buse \S+(?: \S+)? instead\b"
    r"|\b(?:do not|don't|never) (?:use|tag|add)\b|\bshould (?:not )?be tagged\b"
    r"|\b(?:tag|tagged) (?:it |them |this |these )?(?:as|with)\b|\bplease\b",
    re.IGNORECASE)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'(\[])")
_HEADING = re.compile(r"^\s*h[1-6](?:#[\w-]+)?\.\s", re.IGNORECASE | re.MULTILINE)
# Embeds (`!post #1`, `thumb #2`, `!asset #3`) and DText's id links to site records
# (`pool #12`, `topic #345/p2`, `comment #9`, ...): references, not definition prose.
_EMBED = re.compile(r"(?:!?\b(?:post|asset|thumb|pool|comment|forum|topic|user|artist|favgroup|"
                    r"wiki|dmail|alias|implication|bur|pixiv|commit|appeal|flag|feedback)\s*#\d+"
                    r"|!\w+\s*#\d+)(?:/p\d+)?(?::\S*)?", re.IGNORECASE)
_LIST_ITEM = re.compile(r"^\s*[*#]+\s+")
_WIKI_LINK = re.compile(r"\[\[([^\]|]+)(?:\|([^\]]*))?\]\]")
_SEARCH = re.compile(r"\{\{([^}]*)\}\}")
_QUOTED_LINK = re.compile(r"\"([^\"]+)\":\[?(?:https?://|/)[^\s\]]*\]?")
_ANGLE_URL = re.compile(r"<(?:https?://)[^>]*>")
_URL = re.compile(r"\b(?:https?://|www\.)\S+?(?=[.,;:!?)\]]*(?:\s|$))")
_INLINE_TAG = re.compile(r"\[/?[a-z]+(?:=[^\]]*)?\]|</?[a-z]+(?:\s[^>]*)?>", re.IGNORECASE)
_QUALIFIER = re.compile(r"\s*\([^()]*\)\s*$")
_SPACES = re.compile(r"[ \t]+")


def _link_text(match: re.Match) -> str:
    """What danbooru shows for a wiki link: the label, or for the pipe trick `[[a (b)|]]`
    the target without its qualifier; underscores shown as spaces."""
    target, label = match.group(1).strip(), match.group(2)
    if label is None:
        text = target
    elif label.strip():
        text = label.strip()
    else:
        text = _QUALIFIER.sub("", target)
    return text.replace("_", " ")


def _is_link_list_item(line: str) -> bool:
    """A list line that is mostly links (a "see also" list), not prose."""
    rest = _WIKI_LINK.sub(" ", _QUOTED_LINK.sub(" ", _SEARCH.sub(" ", line)))
    rest = _URL.sub(" ", _INLINE_TAG.sub(" ", rest))
    return len(re.findall(r"[^\W\d_]{2,}", rest)) < 3


def clean_dtext(body: str, limit: int = 1500) -> str:
    """DText markup reduced to plain text: links by what they show, external links, embeds
    and markup tags dropped, entities decoded, one paragraph per line."""
    text = html.unescape(body.replace("\r\n", "\n").replace("\r", "\n"))
    text = _DROP_BLOCKS.sub("\n", text)
    lines = []
    for line in text.split("\n"):
        if _LIST_ITEM.match(line):
            if _is_link_list_item(line):
                continue
            line = _LIST_ITEM.sub("", line)
        line = _HEADING.sub("", line)
        line = _EMBED.sub(" ", line)
        line = _WIKI_LINK.sub(_link_text, line)
        line = _SEARCH.sub(lambda m: m.group(1).replace("_", " "), line)
        line = _QUOTED_LINK.sub(lambda m: m.group(1), line)
        line = _URL.sub(" ", _ANGLE_URL.sub(" ", line))
        line = _INLINE_TAG.sub(" ", line)
        line = _SPACES.sub(" ", line).strip()
        line = re.sub(r"\s+([,.;:!?])", r"\1", line)
        if re.search(r"[^\W\d_]", line):
            lines.append(line)
    return "\n".join(lines)[:limit].strip()


def definition(body: str, limit: int = 1500) -> str:
    """The wiki page's definition: its prose before the first heading, as one paragraph.

    What follows a heading (examples, "see also", external links, look-alike tags) and
    embedded posts are left out, so the summariser reads only what the tag means.
    """
    text = html.unescape(body.replace("\r\n", "\n").replace("\r", "\n"))
    text = _DEFINITION_SECTION.sub(lambda m: "\n" + m.group(2) + "\n", text)
    if not clean_dtext(_HEADING.sub("", text), limit=len(text) + 1).strip():
        text = _first_section(text)
    text = _DROP_BLOCKS.sub("\n", text)
    heading = _HEADING.search(text)
    if heading and not clean_dtext(text[:heading.start()]).strip():
        # A page that opens with a heading ("h4. Language"): its first section is the
        # definition, unless that section is a list of links ("See also").
        title, _, rest = text[heading.end():].partition("\n")
        following = _HEADING.search(rest)
        section = rest[:following.start()] if following else rest
        links_only = re.search(r"see also|external link|related|confused", title, re.I)
        text = "" if links_only else section
    elif heading:
        text = text[:heading.start()]
    prose = without_instructions(" ".join(clean_dtext(text, limit=len(text) + 1).split("\n")))
    if len(prose) <= limit:
        return prose
    cut = prose[:limit]
    end = max(cut.rfind(". "), cut.rfind("! "), cut.rfind("? "))
    return cut[:end + 1] if end > 0 else cut.rstrip()


def _first_section(text: str) -> str:
    """For a page whose only prose sits in collapsed sections: the first section that is not
    a list of links, examples or look-alikes, unwrapped (its prose is the definition)."""
    for match in _ANY_SECTION.finditer(text):
        title = (match.group(2) or "").strip()
        if not _NOT_DEFINITION.search(title) and clean_dtext(match.group(3)).strip():
            return match.group(3)
    return text


def without_instructions(prose: str) -> str:
    """The definition without sentences that instruct taggers ("To tag the colour, use tags
    like red footwear."; "Do not use this tag for ..."): they say how to tag, not what the
    picture shows, and their tag names would read as facts."""
    sentences = _SENTENCE_END.split(prose)
    return " ".join(s for s in sentences if not _INSTRUCTION.search(s)).strip()


class FileWiki:
    """Tag -> wiki text from a JSON object or JSON-lines file (offline source).

    A value is the wiki text, or an object {"wiki": text, "implies": [broader tags],
    "category": "copyright" | "meta" | ..., "other_names": [names in other languages]}
    (JSONL rows carry the same fields beside "tag")."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.facts: dict[str, dict] = {}
        self.entries = self._load()

    def _load(self) -> dict[str, str]:
        where = f"tags.wiki_file = {self.path}"
        try:
            raw = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigError(f"{where}: file not found; point tags.wiki_file at a JSON "
                              "{tag: text} file or set tags.source = danbooru") from None
        try:
            if self.path.suffix == ".jsonl":
                rows = [json.loads(line) for line in raw.splitlines() if line.strip()]
                data = {row["tag"]: row["wiki"] for row in rows}
            else:
                data = json.loads(raw)
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise ConfigError(f"{where}: not a JSON object of tag -> text (or JSONL with "
                              f"'tag' and 'wiki' fields): {exc}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{where}: expected a JSON object of tag -> wiki text")
        if self.path.suffix == ".jsonl":
            data = {row["tag"]: {k: v for k, v in row.items() if k != "tag"} for row in rows}
        entries = {}
        for key, value in data.items():
            tag = str(key).strip().lower().replace("_", " ")
            if isinstance(value, dict):
                self.facts[tag] = {k: value[k] for k in ("implies", "category", "other_names")
                                   if k in value}
                value = value.get("wiki") or ""
            entries[tag] = str(value)
        return entries

    def identity(self) -> dict:
        """Where answers come from; the text itself is part of each tag's key (`text`)."""
        return {"source": "file"}

    def text(self, tag: str) -> str | None:
        """The tag's wiki text as the file has it now, or None (no entry, or an empty one);
        with its facts (implies, category, other names) when the file gives any, so that
        editing them redoes the tag."""
        text = self.entries.get(tag) or self.entries.get(tag.replace("_", " "))
        text = text.strip() if text and text.strip() else None
        facts = self.facts.get(tag)
        return text if not facts else json.dumps({"wiki": text, **facts}, sort_keys=True)

    async def lookup(self, tag: str) -> WikiAnswer:
        raw = self.entries.get(tag, "").strip()
        text = definition(raw) if raw else ""
        facts = self.facts.get(tag, {})
        implies = facts.get("implies")
        extra = {"category": str(facts["category"]) if facts.get("category") else None,
                 "implies": (tuple(our_name(str(t)) for t in implies)
                             if isinstance(implies, list) else None),
                 "other_names": tuple(our_name(str(t)) for t in facts.get("other_names") or ())}
        return WikiAnswer("found", text, **extra) if text else WikiAnswer("no_wiki", **extra)

    def close(self) -> None:
        pass


class RateLimiter:
    """At most `rate` request starts per second, shared by all tasks of a run."""

    def __init__(self, rate: float):
        self.interval = 1.0 / rate
        self.next_at = 0.0
        self.lock = asyncio.Lock()

    async def wait(self) -> None:
        async with self.lock:
            now = time.monotonic()
            delay = self.next_at - now
            self.next_at = max(now, self.next_at) + self.interval
        if delay > 0:
            await asyncio.sleep(delay)


class DanbooruWiki:
    """Danbooru's JSON API: post count and category from /tags.json, wiki text and other
    names from /wiki_pages/NAME.json, implied tags from /tag_implications.json (followed to
    MAX_IMPLICATION_DEPTH)."""

    def __init__(self, url: str, *, user_agent: str, timeout: float, retries: int,
                 requests_per_second: float, min_post_count: int, backoff: float = 1.0):
        import requests

        self.url = url.rstrip("/")
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.min_post_count = min_post_count
        self.limiter = RateLimiter(requests_per_second)
        self.session = requests.Session()
        self.session.headers.update({"User-Agent": user_agent, "Accept": "application/json"})

    def identity(self) -> dict:
        """The site (scheme and host only: never a login, key or path from tags.url) and the
        post-count threshold. The text is fetched once and kept in the tag store."""
        return {"source": "danbooru", "site": site_of(self.url), "min_post_count": self.min_post_count}

    def text(self, tag: str) -> None:
        """Not known without a request: the stored answer stands until its key changes."""
        return None

    async def lookup(self, tag: str) -> WikiAnswer:
        name = api_name(tag)
        status, data = await self._get("/tags.json", {"search[name_matches]": name})
        match = next((t for t in data or [] if isinstance(t, dict) and t.get("name") == name), None)
        posts = int(match.get("post_count", 0)) if match else 0
        category = CATEGORIES.get(match.get("category")) if match else None
        if self.min_post_count > 0 and posts < self.min_post_count:
            return WikiAnswer("below_min_posts", post_count=posts, category=category)
        implies = await self.implications(name)
        facts = {"post_count": posts if match or self.min_post_count > 0 else None,
                 "category": category, "implies": implies}
        status, page = await self._get(f"/wiki_pages/{urllib.parse.quote(name, safe='')}.json", None)
        if status == 404 or not isinstance(page, dict) or not str(page.get("body", "")).strip():
            return WikiAnswer("no_wiki", **facts)
        others = page.get("other_names") if isinstance(page.get("other_names"), list) else []
        facts["other_names"] = tuple(our_name(str(n)) for n in others if str(n).strip())
        text = definition(str(page["body"]))
        if not text:
            return WikiAnswer("no_wiki", **facts)     # headings and lists only
        return WikiAnswer("found", text, **facts)

    async def implications(self, name: str) -> tuple[str, ...]:
        """The tags `name` implies on danbooru (active implications), followed transitively
        (motorcycle -> motor_vehicle -> ground_vehicle), in our spelling."""
        found: list[str] = []
        layer = [name]
        for _ in range(MAX_IMPLICATION_DEPTH):
            following = []
            for antecedent in layer:
                _, rows = await self._get("/tag_implications.json", {
                    "search[antecedent_name]": antecedent, "search[status]": "active"})
                for row in rows if isinstance(rows, list) else []:
                    consequent = row.get("consequent_name") if isinstance(row, dict) else None
                    if consequent and consequent != name and consequent not in found:
                        found.append(consequent)
                        following.append(consequent)
            if not following:
                break
            layer = following
        return tuple(our_name(t) for t in found)

    async def _get(self, path: str, params: dict | None) -> tuple[int, object]:
        import requests

        last = ""
        for attempt in range(self.retries + 1):
            await self.limiter.wait()
            try:
                resp = await asyncio.to_thread(self.session.get, self.url + path, params=params,
                                               timeout=self.timeout)
            except requests.ConnectionError as exc:
                if attempt == 0 and "refused" in str(exc).lower() and self._never_answered:
                    raise FatalError(f"cannot reach danbooru at {site_of(self.url)} (tags.url): connection "
                                     "refused; check the URL or use tags.source = file") from None
                last = f"network error: {type(exc).__name__}"
                wait = None
            except requests.RequestException as exc:
                last, wait = f"network error: {type(exc).__name__}", None
            else:
                self._never_answered = False
                if resp.status_code == 404:
                    return 404, None
                if resp.status_code == 200:
                    try:
                        return 200, resp.json()
                    except ValueError:
                        last, wait = "malformed JSON from danbooru", None
                elif resp.status_code == 429 or resp.status_code >= 500:
                    last = f"HTTP {resp.status_code}"
                    wait = _retry_after(resp.headers.get("Retry-After"))
                else:
                    raise ItemError(f"danbooru answered HTTP {resp.status_code} for {path}")
            if attempt < self.retries:
                delay = self.backoff * (2 ** attempt) * (0.5 + random.random())
                await asyncio.sleep(min(max(wait or 0.0, delay), 60.0))
        raise ItemError(f"danbooru {path}: gave up after {self.retries + 1} attempts: {last} "
                        "(will be retried on the next run)")

    _never_answered = True

    def close(self) -> None:
        self.session.close()


def site_of(url: str) -> str:
    """`scheme://host[:port]` of a URL, without user, password, path or query."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    return f"{parts.scheme}://{host}" + (f":{parts.port}" if parts.port else "")


def _retry_after(value: str | None) -> float | None:
    try:
        return float(value) if value else None
    except ValueError:
        return None
