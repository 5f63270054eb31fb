"""Interpret stage: merge tags, tag summaries and the vision answer into one caption.

Writes `captions/NAME.txt` (the caption, what training tools read) and `captions/NAME.json`
(provenance: inputs, models, template hashes, CLIP token count, the key). A caption that
was not written by this stage, or was edited by hand after, is never replaced unless
`interpret.overwrite = true`.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from .errors import ConfigError, ItemError
from .folder import artifact, count_images, image_items, read_tags
from .stage import Item, Stage, StageReport
from .store import atomic_write_json, atomic_write_text, hash_value, read_json, sha256_text
from .tagstore import TagStore, summaries_for
from .text import tidy_caption, with_trigger

PLACEHOLDERS = {"tags", "summaries", "vision", "trigger", "max_tokens"}
def read_vision(cache: Path, item_id: str) -> str:
    try:
        return read_json(artifact(cache / "interrogate", item_id, ".json")).get("answer", "")
    except (FileNotFoundError, ValueError, AttributeError):
        return ""


class InterpretStage(Stage):
    name = "interpret"
    llm_bound = True

    def prepare(self) -> None:
        c = self.cfg.interpret
        if c.write_beside_images and c.beside_extension.lower() == ".txt":
            raise ConfigError(f"{self.cfg.source}: interpret.beside_extension = .txt would "
                              "overwrite the NAME.txt tag files this stage reads; use .caption "
                              "(kohya's caption_extension) or another extension")
        if c.write_beside_images and not c.beside_extension.startswith("."):
            raise ConfigError(f"{self.cfg.source}: interpret.beside_extension = "
                              f"{c.beside_extension!r}: must start with a dot, e.g. .caption")
        self.template = self.ctx.template(c.template, "interpret.template", PLACEHOLDERS)
        self.shorten = self.ctx.template(c.shorten_template, "interpret.shorten_template",
                                         {"caption", "max_tokens", "tokens"})
        self.store = TagStore(self.cfg.paths.cache / "tags.json").load()
        self.over_limit = 0
        self.kept = 0
        self._pending: dict[str, dict] = {}

    def items(self):
        return image_items(self.cfg.paths.images)

    def count(self) -> int | None:
        return count_images(self.cfg.paths.images)

    def _inputs(self, item: Item) -> dict:
        tags = read_tags(item.data, self.cfg)
        return {"tags": tags, "summaries": summaries_for(tags, self.store),
                "vision": read_vision(self.cfg.paths.cache, item.id)}

    def key(self, item: Item) -> str:
        c = self.cfg.interpret
        inputs = self._pending[item.id] = self._inputs(item)   # reused by process()
        return hash_value({
            "inputs": inputs, "trigger": list(c.trigger_words),
            "template": self.template.hash, "shorten": self.shorten.hash,
            "max_clip_tokens": c.max_clip_tokens, "llm": self.ctx.chat().identity()})

    def is_done(self, item: Item, key: str) -> bool:
        done = self._is_done(item, key)
        if done:
            self._pending.pop(item.id, None)
        return done

    def _is_done(self, item: Item, key: str) -> bool:
        txt = artifact(self.cfg.paths.captions, item.id, ".txt")
        if not txt.exists():
            return False
        try:
            meta = read_json(artifact(self.cfg.paths.captions, item.id, ".json"))
        except (FileNotFoundError, ValueError):
            meta = {}
        ours = meta.get("caption_sha256") == sha256_text(txt.read_text(encoding="utf-8"))
        if not ours:
            if not self.cfg.interpret.overwrite:
                self.kept += 1
                return True
            return False
        return meta.get("key") == key

    async def process(self, item: Item, key: str) -> None:
        from .imageio import load_image

        c = self.cfg.interpret
        await asyncio.to_thread(load_image, item.data, self.cfg.interrogate.max_pixels)
        inputs = self._pending.pop(item.id, None) or self._inputs(item)
        if not inputs["tags"] and not inputs["vision"]:
            raise ItemError("no tags and no vision answer to caption from (add NAME.txt or "
                            "run the interrogate stage)")
        chat = self.ctx.chat()
        messages = self.template.render(
            tags=", ".join(inputs["tags"]) or "(none)",
            summaries="\n".join(f"- {t}: {s}" for t, s in inputs["summaries"].items()) or "(none)",
            vision=inputs["vision"] or "(no description of the image)",
            trigger=", ".join(c.trigger_words) or "(none)", max_tokens=str(c.max_clip_tokens))
        answer = await chat.chat(messages, template_hash=self.template.hash, max_tokens=120)
        caption = with_trigger(tidy_caption(answer.text), c.trigger_words)
        if not caption:
            raise ItemError("the model returned an empty caption")
        caption, tokens, shortened = await self._fit(caption)
        over = tokens > c.max_clip_tokens
        self.over_limit += over
        await asyncio.to_thread(self._write, item, caption, {
            "id": item.id, "image": str(item.data), "caption": caption,
            "caption_sha256": sha256_text(caption + "\n"), "key": key,
            "clip_tokens": tokens, "over_limit": over, "shortened": shortened, **inputs,
            "trigger_words": list(c.trigger_words), "llm": chat.identity(),
            "templates": {"interpret": self.template.hash, "shorten": self.shorten.hash},
            "created": time.strftime("%Y-%m-%dT%H:%M:%S")})

    def _write(self, item: Item, caption: str, provenance: dict) -> None:
        """Caption first, provenance last: the .json's hash of the .txt marks it as ours."""
        c = self.cfg.interpret
        atomic_write_text(artifact(self.cfg.paths.captions, item.id, ".txt"), caption + "\n")
        if c.write_beside_images:
            atomic_write_text(item.data.with_suffix(c.beside_extension), caption + "\n")
        atomic_write_json(artifact(self.cfg.paths.captions, item.id, ".json"), provenance)

    async def _fit(self, caption: str) -> tuple[str, int, bool]:
        """Shorten once with the LLM when over max_clip_tokens; report what remains."""
        from .backends.clip_tokens import clip_token_count

        limit = self.cfg.interpret.max_clip_tokens
        tokenizer = self.ctx.resource("clip_tokenizer", self._tokenizer)
        tokens = clip_token_count(tokenizer, caption)
        if tokens <= limit:
            return caption, tokens, False
        messages = self.shorten.render(caption=caption, max_tokens=str(limit), tokens=str(tokens))
        answer = await self.ctx.chat().chat(messages, template_hash=self.shorten.hash)
        short = with_trigger(tidy_caption(answer.text), self.cfg.interpret.trigger_words)
        short_tokens = clip_token_count(tokenizer, short) if short else tokens + 1
        if short and short_tokens < tokens:
            return short, short_tokens, True
        return caption, tokens, False

    def _tokenizer(self):
        from .backends.clip_tokens import load_clip_tokenizer

        return load_clip_tokenizer(self.cfg.paths.cache)

    def finish(self, report: StageReport) -> None:
        notes = []
        if self.over_limit:
            notes.append(f"{self.over_limit} captions still over "
                         f"{self.cfg.interpret.max_clip_tokens} CLIP tokens (see NAME.json)")
        if self.kept:
            notes.append(f"{self.kept} existing captions kept (interpret.overwrite = false)")
        report.note = "; ".join(notes)
