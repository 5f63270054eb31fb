"""Interpret stage: merge tags, tag summaries and the vision answer into one caption.

Writes `captions/NAME.json` (provenance: inputs, models, template hashes, CLIP token count,
the key and the caption's hash) and then `captions/NAME.txt` (the caption, what training
tools read). Provenance first: a crash between the two leaves a caption file that is either
missing or still the tool's previous one (its hash is recorded as `replaces_sha256`), so the
next run redoes it; it can never leave a caption that looks hand-written. A caption that
was not written by this stage, or was edited by hand after, is never replaced unless
`interpret.overwrite = true`.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from . import faults
from .config import Config
from .errors import ConfigError, ItemError
from .folder import artifact, check_images_folder, count_images, image_items, read_tags
from .stage import Declaration, Item, Stage, StageReport
from .store import atomic_write_json, atomic_write_text, read_json, sha256_bytes, sha256_text
from .tagstore import TagStore, summaries_for
from .text import tidy_caption, with_trigger

PLACEHOLDERS = {"tags", "summaries", "vision", "trigger", "max_tokens"}


def read_vision(cache: Path, item_id: str) -> str:
    try:
        return read_json(artifact(cache / "interrogate", item_id, ".json")).get("answer", "")
    except (FileNotFoundError, ValueError, AttributeError):
        return ""


def decoded_before(cache: Path, item: Item) -> bool:
    """Whether the interrogate stage decoded this very file (same size and mtime as its record):
    then it is a valid image and need not be decoded again just to be checked."""
    try:
        record = read_json(artifact(cache / "interrogate", item.id, ".json"))
        st = item.data.stat()
    except (OSError, ValueError):
        return False
    return (isinstance(record, dict) and record.get("size") == st.st_size
            and record.get("mtime_ns") == st.st_mtime_ns)


class InterpretStage(Stage):
    name = "interpret"
    llm_bound = True
    chat_params = {"max_tokens": 120}

    @classmethod
    def declare(cls, cfg: Config) -> Declaration:
        c = cfg.interpret
        beside = ("interpret.beside_extension",) if c.write_beside_images else ()
        return Declaration(
            config=("interpret.template", "interpret.shorten_template", "interpret.trigger_words",
                    "interpret.max_clip_tokens", "interpret.write_beside_images") + beside,
            reads=("tags.blacklist", "tags.drop_meta"), backends=("chat",),
            operational=("interpret.overwrite", "interrogate.max_pixels")
            + (() if beside else ("interpret.beside_extension",)))

    def prepare(self) -> None:
        c = self.cfg.interpret
        if c.write_beside_images and c.beside_extension.lower() == ".txt":
            raise ConfigError(f"{self.cfg.source}: interpret.beside_extension = .txt would "
                              "overwrite the NAME.txt tag files this stage reads; use .caption "
                              "(kohya's caption_extension) or another extension")
        if c.write_beside_images and not c.beside_extension.startswith("."):
            raise ConfigError(f"{self.cfg.source}: interpret.beside_extension = "
                              f"{c.beside_extension!r}: must start with a dot, e.g. .caption")
        check_images_folder(self.cfg.paths.images)
        self.template = self.load_template("interpret.template", PLACEHOLDERS)
        self.shorten = self.load_template("interpret.shorten_template", {"caption", "max_tokens", "tokens"})
        tag_store = TagStore(self.cfg.paths.cache / "tags.json")
        self.store = tag_store.load()
        self.moved_aside = tag_store.moved_aside
        self.over_limit = 0
        self.kept = 0

    def items(self):
        return image_items(self.cfg.paths.images)

    def count(self) -> int | None:
        return count_images(self.cfg.paths.images)

    def inputs(self, item: Item) -> dict:
        """Tags (after hygiene), their summaries and the vision answer: the texts the caption
        is made from, as they are on disk now."""
        tags = read_tags(item.data, self.cfg)
        return {"tags": tags, "summaries": summaries_for(tags, self.store),
                "vision": read_vision(self.cfg.paths.cache, item.id)}

    def is_done(self, item: Item, key: str) -> bool:
        txt = artifact(self.cfg.paths.captions, item.id, ".txt")
        if not txt.exists():
            return False
        try:
            meta = read_json(artifact(self.cfg.paths.captions, item.id, ".json"))
        except (FileNotFoundError, ValueError):
            meta = None
        meta = meta if isinstance(meta, dict) else {}
        written = sha256_bytes(txt.read_bytes())
        if written == meta.get("caption_sha256"):
            c = self.cfg.interpret
            beside_missing = c.write_beside_images and not item.data.with_suffix(c.beside_extension).exists()
            return meta.get("key") == key and not beside_missing
        if written == meta.get("replaces_sha256"):
            return False              # our previous caption, its replacement was interrupted
        if self.cfg.interpret.overwrite:
            return False
        self.kept += 1                # not written by this tool, or edited by hand: keep it
        return True

    async def process(self, item: Item, key: str) -> None:
        from .imageio import load_image

        c = self.cfg.interpret
        if not decoded_before(self.cfg.paths.cache, item):      # a broken image gets no caption
            await asyncio.to_thread(load_image, item.data, self.cfg.interrogate.max_pixels)
        inputs = self.inputs(item)
        if not inputs["tags"] and not inputs["vision"]:
            raise ItemError("no tags and no vision answer to caption from (add NAME.txt or "
                            "run the interrogate stage)")
        chat = self.backend("chat")
        messages = self.template.render(
            tags=", ".join(inputs["tags"]) or "(none)",
            summaries="\n".join(f"- {t}: {s}" for t, s in inputs["summaries"].items()) or "(none)",
            vision=inputs["vision"] or "(no description of the image)",
            trigger=", ".join(c.trigger_words) or "(none)", max_tokens=str(c.max_clip_tokens))
        answer = await chat.chat(messages, template_hash=self.template.hash, **self.chat_overrides())
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
            "trigger_words": list(c.trigger_words), "llm": chat.identity(**self.chat_overrides()),
            "templates": {"interpret": self.template.hash, "shorten": self.shorten.hash},
            "created": time.strftime("%Y-%m-%dT%H:%M:%S")})

    def _write(self, item: Item, caption: str, provenance: dict) -> None:
        """Provenance first, then the caption (see the module docstring)."""
        c = self.cfg.interpret
        txt = artifact(self.cfg.paths.captions, item.id, ".txt")
        try:
            provenance["replaces_sha256"] = sha256_bytes(txt.read_bytes())
        except FileNotFoundError:
            provenance["replaces_sha256"] = None
        atomic_write_json(artifact(self.cfg.paths.captions, item.id, ".json"), provenance)
        faults.point("interpret.between_writes")
        atomic_write_text(txt, caption + "\n")
        if c.write_beside_images:
            atomic_write_text(item.data.with_suffix(c.beside_extension), caption + "\n")

    async def _fit(self, caption: str) -> tuple[str, int, bool]:
        """Shorten once with the LLM when over max_clip_tokens; report what remains."""
        from .backends.clip_tokens import clip_token_count

        limit = self.cfg.interpret.max_clip_tokens
        tokenizer = self.ctx.resource("clip_tokenizer", self._tokenizer)
        tokens = clip_token_count(tokenizer, caption)
        if tokens <= limit:
            return caption, tokens, False
        messages = self.shorten.render(caption=caption, max_tokens=str(limit), tokens=str(tokens))
        answer = await self.backend("chat").chat(messages, template_hash=self.shorten.hash,
                                                 **self.chat_overrides())
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
        notes += [f"the unreadable tag store was moved to {p.name}" for p in self.moved_aside]
        report.note = "; ".join(notes)
