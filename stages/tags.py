"""Tags stage: every tag in the folder's tag files gets its wiki text and a one-sentence summary.

Results go to the tag store, `cache/tags.json`. A tag is redone when the source, model,
template or the wiki options change (its key); definitive answers only are stored.
"""

from __future__ import annotations

import time

from .errors import ItemError
from .folder import image_items, read_tags
from .stage import Item, Stage, StageReport
from .store import hash_value
from .tagstore import TagStore
from .text import tidy_caption

FLUSH_EVERY = 50


class TagsStage(Stage):
    name = "tags"
    llm_bound = True

    def prepare(self) -> None:
        self.template = self.ctx.template(self.cfg.tags.template, "tags.template", {"tag", "wiki"})
        self.store = TagStore(self.cfg.paths.cache / "tags.json")
        self.known = self.store.load()
        self.pending: dict[str, dict] = {}

    def wiki(self):
        return self.ctx.resource("wiki", self._make_wiki)

    def _make_wiki(self):
        from .backends.wiki import DanbooruWiki, FileWiki

        c = self.cfg.tags
        if c.source == "file":
            return FileWiki(c.wiki_file)
        return DanbooruWiki(c.url, user_agent=c.user_agent, timeout=c.timeout, retries=c.retries,
                            requests_per_second=c.requests_per_second,
                            min_post_count=c.min_post_count, backoff=self.cfg.llm.backoff)

    def items(self):
        seen: set[str] = set()
        for image in image_items(self.cfg.paths.images):
            for tag in read_tags(image.data, self.cfg):
                seen.add(tag)
        for tag in sorted(seen):
            yield Item(tag)

    def key(self, item: Item) -> str:
        c = self.cfg.tags
        return hash_value({"wiki": self.wiki().identity(), "template": self.template.hash,
                           "llm": self.ctx.chat().identity(),
                           "include_without_wiki": c.include_tags_without_wiki})

    def is_done(self, item: Item, key: str) -> bool:
        entry = self.pending.get(item.id) or self.known.get(item.id)
        return bool(entry) and entry.get("key") == key

    async def process(self, item: Item, key: str) -> None:
        tag = item.id
        answer = await self.wiki().lookup(tag)
        summary = None
        wiki = answer.text
        if answer.status == "found" or (answer.status == "no_wiki"
                                        and self.cfg.tags.include_tags_without_wiki):
            chat = self.ctx.chat()
            messages = self.template.render(tag=tag, wiki=wiki or "(no wiki text; use the tag name)")
            result = await chat.chat(messages, template_hash=self.template.hash, max_tokens=80)
            summary = tidy_caption(result.text)
            if not summary:
                raise ItemError(f"the model returned an empty summary for tag {tag!r}")
        self.pending[tag] = {
            "status": answer.status, "wiki": wiki or None, "summary": summary,
            "post_count": answer.post_count, **self.wiki().identity(),
            "model": self.ctx.chat().model_id, "template": self.template.hash, "key": key,
            "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
        if len(self.pending) >= FLUSH_EVERY:
            self.flush()

    def flush(self) -> None:
        entries, self.pending = self.pending, {}
        self.store.update(entries)
        self.known.update(entries)

    def finish(self, report: StageReport) -> None:
        self.flush()
        counts: dict[str, int] = {}
        for entry in self.known.values():
            counts[entry.get("status", "?")] = counts.get(entry.get("status", "?"), 0) + 1
        report.note = "store: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
