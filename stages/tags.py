"""Tags stage: every tag in the folder's tag files gets its wiki definition and a one-sentence summary.

The wiki text is reduced to its definition (stages/backends/wiki.py: the prose before the
first heading, without embeds, link lists or markup). A definition that is already one
short sentence is the summary, with no model call; a model summary is kept only when it is
grounded in the definition, else the definition's first sentence replaces it
(stages/summary.py). Each entry records how its summary was made (`made_by`).

Results go to the tag store, `cache/tags.json`. A tag's key covers the summary template,
the model, the wiki source and, for a local wiki file, the tag's text in it: editing one
tag's text (or adding text for a tag that had none) redoes that tag only. Danbooru text is
fetched once and kept; only definitive answers are stored.
"""

from __future__ import annotations

import time

from .config import Config
from .errors import ItemError
from .io.inputs import INPUT_ALL, ImageInput
from .language.tagsift import IMPLIED
from .language.text import tidy_caption
from .stage import Declaration, Item, Stage, StageReport
from .summary import FROM_DEFINITION, choose_summary, short_definition
from .tagstore import TagStore

FLUSH_EVERY = 50


class TagsStage(Stage):
    name = "tags"
    version = 5            # 2: definition only, short ones kept, grounded; 3: heading-first pages;
                           # 4: DText id links (pool #1, topic #2, ...) dropped; 5: definition
                           # sections kept, tagging instructions dropped
    llm_bound = True
    chat_params = {"max_tokens": 80}

    @classmethod
    def declare(cls, cfg: Config) -> Declaration:
        source = (("tags.wiki_file",) if cfg.tags.source == "file"
                  else ("tags.url", "tags.min_post_count"))
        return Declaration(
            config=("tags.template", "tags.include_tags_without_wiki", "tags.source"),
            reads=source, backends=("chat",),
            operational=("tags.blacklist", "tags.drop_meta", "tags.drop_copyright", "tags.user_agent",
                         "tags.requests_per_second", "tags.timeout", "tags.retries", "llm.backoff")
            + INPUT_ALL)         # which tags exist, never what a tag's summary is

    def prepare(self) -> None:
        self.input = ImageInput(self.cfg)       # every shard: tags, not samples, are split
        self.input.check()
        self.template = self.load_template("tags.template", {"tag", "wiki"})
        self.store = TagStore(self.cfg.paths.cache / "tags.json")
        self.known = self.store.load(read_only=self.ctx.options.dry_run)
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

    def plan(self) -> list[str]:
        if self.store.unreadable:
            return [f"{self.store.path} cannot be read ({self.store.unreadable}); a run moves it "
                    "aside and rebuilds it"]
        return []

    def nothing_found(self) -> str:
        return f"no tags found: no images with NAME.txt tag files in {self.cfg.paths.images}"

    def items(self):
        """Failed items for tag files that cannot be read, then every tag once, sorted."""
        seen: set[str] = set()
        for image in self.input.items():
            if image.error:
                yield image
                continue
            try:
                sifted = self.input.sift(image)
            except ItemError as exc:
                yield Item(self.input.tag_source(image), error=str(exc))
                continue
            # a tag the shipped table calls implied is looked up too: the source's own
            # implications (learnt now) may say otherwise, and interpret then uses it
            seen.update(sifted.used)
            seen.update(t for t, why in sifted.dropped if why.startswith(IMPLIED))
        for tag in sorted(seen):
            yield Item(tag)

    def inputs(self, item: Item) -> dict:
        wiki = self.wiki()
        return {"tag": item.id, "source": wiki.identity(), "wiki": wiki.text(item.id)}

    def is_done(self, item: Item, key: str) -> bool:
        entry = self.pending.get(item.id) or self.known.get(item.id)
        return bool(entry) and entry.get("key") == key

    async def process(self, item: Item, key: str) -> None:
        tag = item.id
        answer = await self.wiki().lookup(tag)
        summary, made_by, problems = None, None, []
        wiki = answer.text
        short = short_definition(wiki) if answer.status == "found" else ""
        if short:
            summary, made_by = short, FROM_DEFINITION
        elif answer.status == "found" or (answer.status == "no_wiki"
                                          and self.cfg.tags.include_tags_without_wiki):
            chat = self.backend("chat")
            messages = self.template.render(tag=tag, wiki=wiki or "(no wiki text; use the tag name)")
            result = await chat.chat(messages, template_hash=self.template.hash, **self.chat_overrides())
            answer_text = tidy_caption(result.text)
            if not answer_text and not wiki:
                raise ItemError(f"the model returned an empty summary for tag {tag!r}")
            summary, made_by, problems = choose_summary(answer_text, wiki or "", tag,
                                                        self.template.literal())
        self.pending[tag] = {
            "status": answer.status, "wiki": wiki or None, "summary": summary,
            "made_by": made_by, "rejected": problems or None,
            "post_count": answer.post_count, "category": answer.category,
            "implies": list(answer.implies) if answer.implies is not None else None,
            "other_names": list(answer.other_names) or None, **self.wiki().identity(),
            "model": self.backend("chat").model_id, "template": self.template.hash, "key": key,
            "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
        if len(self.pending) >= FLUSH_EVERY:
            self.flush()

    def flush(self) -> None:
        entries, self.pending = self.pending, {}
        self.store.update(entries)
        self.known.update(entries)

    def finish(self, report: StageReport) -> None:
        self.flush()
        if not self.ctx.options.dry_run:      # what other processes (Ray actors) added too
            self.known.update(self.store.load())
        counts: dict[str, int] = {}
        for entry in self.known.values():
            counts[entry.get("status", "?")] = counts.get(entry.get("status", "?"), 0) + 1
        made: dict[str, int] = {}
        for entry in self.known.values():
            if entry.get("made_by"):
                made[entry["made_by"]] = made.get(entry["made_by"], 0) + 1
        notes = ["store: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))] if counts else []
        if made:
            notes.append("summaries from: " + ", ".join(f"{n} {m}" for m, n in sorted(made.items())))
        notes += [f"the unreadable tag store was moved to {p.name}" for p in self.store.moved_aside]
        report.note = "; ".join(notes)
