"""Interpret stage: merge tags, tag summaries and the vision answer into one caption.

Writes `captions/NAME.json` (provenance: inputs, models, template hashes, CLIP token count,
the key and the caption's hash) and then `captions/NAME.txt` (the caption, what training
tools read). Provenance first: a crash between the two leaves a caption file that is either
missing or still the tool's previous one (its hash is recorded as `replaces_sha256`), so the
next run redoes it; it can never leave a caption that looks hand-written. A caption that
was not written by this stage, or was edited by hand after, is never replaced unless
`interpret.overwrite = true`.

Faithfulness does not rest on the model: a candidate caption is asked for, cut to its first
sentence and checked by the verifier (stages/language/verify.py) against its evidence (the
sifted tags, summaries, vision answer, trigger words, the templates it must not copy); the
next candidate (another sample index, so another cache entry) is asked for only when it
fails, up to `interpret.candidates`. A good first answer costs one call. (One request
carrying several samples with the `n` parameter is not used: llama.cpp's server and many
others ignore it, and a cached answer is one sample.) When none passes, a caption composed
from the tags alone (stages/language/compose.py) is written and flagged `fallback`; a written
caption that itself fails the verifier is flagged `doubted`. Every verdict (with the words it
doubted), the flags, the written caption's `doubted` words and its score go into NAME.json.

`interpret.template = auto` picks templates/interpret.txt (short: the composed draft only)
for the embedded server and templates/interpret_full.txt (tags, what each means, the vision
answer, the draft) for any other; the config resolves it, so the chosen file's text is what
enters the keys.
"""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

from . import faults
from .config import Config
from .decisions import KEEP, REJECTED, current_decisions, decision_of
from .errors import ConfigError, ItemError
from .io.folder import artifact
from .io.inputs import ImageInput, input_keys
from .language.compose import compose, vision_subject
from .language.tagroles import EMOTICONS, TIME, content_tags, infos
from .language.text import fix_articles, tidy_caption, with_trigger
from .language.verify import Evidence, best, confident_vision, verify
from .language.words import first_sentence
from .stage import Declaration, Item, Stage, StageReport
from .store import atomic_write_json, atomic_write_text, read_json, sha256_bytes, sha256_text
from .tagstore import TagStore, definitions_for, facts_for, summaries_for

PLACEHOLDERS = {"subject", "draft", "tags", "summaries", "vision", "trigger", "max_tokens"}
FALLBACK = "fallback"
OVER_LIMIT = "over_clip_tokens"
VISION_GUESS = "vision_guess"    # untagged, and the vision answer only guesses ("perhaps a ...")
DOUBTED = "doubted"              # the written caption itself fails the verifier (its doubted words)


def prompt_fields(evidence: Evidence) -> dict[str, str]:
    """What the template is filled with: the subject, a draft composed from the tags (what
    the fallback would be), the content tags in words (framing and medium tags, which small
    models copy as jargon, left out), summaries of those tags only, and the vision answer
    without its guesses when tags say what the picture is."""
    wanted = content_tags(list(evidence.tags))
    words = [TIME.get(i.words, i.words) for i in wanted]
    words += [EMOTICONS[i.tag] for i in infos(list(evidence.tags)) if i.tag in EMOTICONS]
    keep = {i.tag for i in wanted}
    summaries = [f"- {t}: {s}" for t, s in evidence.summaries if t in keep]
    vision = evidence.vision if evidence.vision_only else confident_vision(evidence.vision)
    draft = compose(list(evidence.tags), evidence.vision, definitions=dict(evidence.definitions))
    return {"subject": evidence.subject()[0] or "(see the picture notes)",
            "draft": draft.rstrip(".") or "(none)",
            "tags": ", ".join(dict.fromkeys(words)) or "(none)",
            "summaries": "\n".join(summaries) or "(none)",
            "vision": vision or "(none)"}


def interrogation(cache: Path, item_id: str) -> dict | None:
    """The interrogate stage's record for an image, or None when there is none (or it is
    unreadable: then the image is treated as never interrogated)."""
    try:
        record = read_json(artifact(cache / "interrogate", item_id, ".json"))
    except (FileNotFoundError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def decoded_before(cache: Path, item: Item, source: ImageInput) -> bool:
    """Whether the interrogate stage decoded this very file or sample (same stamp as its
    record): then it is a valid image and need not be decoded again just to be checked."""
    return source.unchanged(item, interrogation(cache, item.id))


class InterpretStage(Stage):
    name = "interpret"
    version = 6            # 2: candidates checked by the verifier; composed fallback; 3: verifier
                           # rules: % signs, compound heads, counts, summary words; fallback
                           # reasons; vision_guess flag; 4: the strict verifier (doubted words)
                           # 5: sifted tags (tags_used, tags_dropped), lazy candidates,
                           # count-neutral composing; 6: review round: negations before a
                           # preposition, unnamed others, any-script digits, more junk tags
    llm_bound = True
    chat_params = {"max_tokens": 120}
    tallies = ("fallbacks", "over_limit", "calls")

    @classmethod
    def declare(cls, cfg: Config) -> Declaration:
        c = cfg.interpret
        beside = ("interpret.beside_extension",) if c.write_beside_images else ()
        reads, operational = input_keys(cfg, image=True, tags=True)
        return Declaration(
            config=("interpret.template", "interpret.shorten_template", "interpret.candidates",
                    "interpret.trigger_words",
                    "interpret.max_clip_tokens", "interpret.write_beside_images") + beside,
            reads=("tags.blacklist", "tags.drop_meta", "tags.drop_copyright") + reads, backends=("chat",),
            operational=("interpret.overwrite", "interrogate.max_pixels") + operational
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
        self.input = ImageInput(self.cfg, self.ctx.options.shard)
        self.input.check()
        if self.input.dataset and c.write_beside_images:
            raise ConfigError(f"{self.cfg.source}: interpret.write_beside_images needs a folder of "
                              "images; with shards or Parquet the captions go to "
                              "paths.captions/SHARD.parquet (set it to false)")
        self.units: dict[str, dict] = {}              # dataset input: shard -> its ids, done ids
        self.units_lock = threading.RLock()           # the listing and completed() may be threads
        self.template = self.load_template("interpret.template", PLACEHOLDERS)
        self.shorten = self.load_template("interpret.shorten_template", {"caption", "max_tokens", "tokens"})
        tag_store = TagStore(self.cfg.paths.cache / "tags.json")
        self.store = tag_store.load(read_only=self.ctx.options.dry_run)
        self.moved_aside = tag_store.moved_aside
        self.facts = facts_for(self.store)
        self.over_limit = 0
        self.calls = 0                # candidate requests made (or answered from the cache)
        self.kept = 0
        self.reviewed = 0             # accepted or edited in the review page: kept
        self.rejected = 0             # rejected in the review page: not captioned
        self.fallbacks = 0
        self.blind = 0                # captions of this run made without a vision answer
        self.unlooked = 0             # ... with tags the tag store has never looked up
        self.fallbacks_before = 0     # reused captions (made by earlier runs) that are fallbacks
        self.over_limit_before = 0

    def nothing_found(self) -> str:
        return f"no images found in {self.cfg.paths.images}"

    def items(self):
        if not self.input.dataset:
            yield from self.input.items()
            return
        unit = None
        for item in self.input.items():
            with self.units_lock:
                if item.unit != unit:
                    if unit is not None:
                        self._listed(unit)
                    unit = item.unit
                    self.units.setdefault(unit, {"ids": set(), "keys": {}, "listed": False,
                                                 "done": 0, "written": None})
                self.units[unit]["ids"].add(item.id)
            yield item
        if unit is not None:
            with self.units_lock:
                self._listed(unit)

    def _listed(self, unit: str) -> None:
        self.units[unit]["listed"] = True
        if self._complete(unit):
            self._write_shard(unit)

    def completed(self, item_id: str) -> None:
        """A sample captioned (here or by a Ray actor): its shard's Parquet is written as soon
        as its last sample is in."""
        unit = item_id.rpartition("/")[0]
        with self.units_lock:
            if unit not in self.units:
                return
            self.units[unit]["done"] += 1
            if self._complete(unit):
                self._write_shard(unit)

    def _complete(self, unit: str) -> bool:
        """Every sample of the shard listed and captioned (now or before) in this process."""
        state = self.units.get(unit)
        return bool(state) and state["listed"] and state["written"] is None \
            and state["done"] == len(state["ids"])

    def _write_shard(self, unit: str) -> None:
        """The shard's Parquet as soon as all its samples are captioned; its ids are then
        dropped, so memory holds only the shards in progress."""
        from .io.shardout import write_shard

        if self.ctx.options.dry_run:
            return                                    # a plan writes nothing
        state = self.units[unit]
        records = self._settled(state, set())
        if records:
            state["written"] = write_shard(self.cfg.paths.captions, unit, records)
            state["ids"], state["keys"] = set(), {}
            faults.point("interpret.shard_written")

    def count(self) -> int | None:
        return self.input.count()

    def record_path(self, item_id: str) -> Path:
        """A dataset sample's caption and provenance until its shard's Parquet is written."""
        return artifact(self.cfg.paths.cache / "interpret", item_id, ".json")

    def inputs(self, item: Item) -> dict:
        """Tags (sifted: stages/language/tagsift.py), their summaries and the vision answer:
        the texts the caption is made from, as they are on disk now; and the dropped tags
        with their reasons."""
        sifted = self.input.sift(item, self.facts)
        tags = sifted.used
        record = interrogation(self.cfg.paths.cache, item.id)
        digest = self.input.digest(item, record)
        if record is not None and record.get("image_sha256") != digest:
            if self.ctx.options.dry_run and self._interrogate_runs_first():
                record = {"answer": "(to be redone by the interrogate stage of this run)"}
        if record is not None and record.get("image_sha256", digest) != digest:
            where = artifact(self.cfg.paths.cache / "interrogate", item.id, ".json")
            raise ItemError(f"the vision answer in {where} describes an earlier version of this "
                            "image; run the interrogate stage again (see its failures)")
        return {"image_sha256": digest, "tags": tags, "tags_used": tags,
                "tags_dropped": sifted.dropped_records(),
                "summaries": summaries_for(tags, self.store),
                "definitions": definitions_for(tags, self.store),
                "vision": (record or {}).get("answer", ""),
                "vision_backend": ((record or {}).get("vision") or {}).get("backend", "")}

    def evidence(self, inputs: dict) -> Evidence:
        return Evidence(tags=tuple(inputs["tags"]), summaries=tuple(inputs["summaries"].items()),
                        definitions=tuple(inputs["definitions"].items()), vision=inputs["vision"],
                        vision_backend=inputs.get("vision_backend", ""),
                        trigger=tuple(self.cfg.interpret.trigger_words),
                        templates=(self.template.literal(), self.shorten.literal()))

    def is_done(self, item: Item, key: str) -> bool:
        if self.input.dataset:
            with self.units_lock:
                if item.unit in self.units:             # read when the shard's Parquet is written
                    self.units[item.unit]["keys"][item.id] = key
            try:
                record = read_json(self.record_path(item.id))
            except (FileNotFoundError, ValueError):
                return False
            done = isinstance(record, dict) and record.get("key") == key
            with self.units_lock:
                if done and item.unit in self.units:
                    self.units[item.unit]["done"] += 1
            return done
        txt = artifact(self.cfg.paths.captions, item.id, ".txt")
        try:
            meta = read_json(artifact(self.cfg.paths.captions, item.id, ".json"))
        except (FileNotFoundError, ValueError):
            meta = None
        meta = meta if isinstance(meta, dict) else {}
        decision = decision_of(meta)
        if decision == REJECTED:          # left out of the dataset: nothing to caption
            self.rejected += 1
            return True
        if decision in KEEP and txt.exists():   # the person's caption, whatever changed upstream
            self.reviewed += 1
            self._copy_beside(item, txt)
            return True
        if not txt.exists():
            return False
        written = sha256_bytes(txt.read_bytes())
        if written == meta.get("caption_sha256"):
            done = meta.get("key") == key and self._beside_current(item, written)
            if done:                  # a reused caption still counts in the summary's notes
                flags = meta.get("flags") if isinstance(meta.get("flags"), list) else []
                self.fallbacks_before += FALLBACK in flags
                self.over_limit_before += OVER_LIMIT in flags
            return done
        if written == meta.get("replaces_sha256"):
            return False              # our previous caption, its replacement was interrupted
        if self.cfg.interpret.overwrite:
            return False
        self.kept += 1                # not written by this tool, or edited by hand: keep it
        return True

    def _copy_beside(self, item: Item, txt: Path) -> None:
        """A reviewed caption (never remade) is still copied beside its image when asked for:
        turning interpret.write_beside_images on after the review leaves none out."""
        c = self.cfg.interpret
        if not c.write_beside_images or self.ctx.options.dry_run:
            return
        text = txt.read_bytes()
        if not self._beside_current(item, sha256_bytes(text)):
            atomic_write_text(item.data.with_suffix(c.beside_extension), text.decode("utf-8"))

    def _beside_current(self, item: Item, caption_sha: str) -> bool:
        """The copy beside the image (when asked for) holds this very caption: a kill between
        the two writes, or an edit of the copy, is redone rather than trusted."""
        c = self.cfg.interpret
        if not c.write_beside_images:
            return True
        try:
            return sha256_bytes(item.data.with_suffix(c.beside_extension).read_bytes()) == caption_sha
        except OSError:
            return False

    def precheck(self, item: Item) -> None:
        """A broken image gets no caption (decoded only when interrogate did not do it)."""
        from .io.imageio import check_image

        if not decoded_before(self.cfg.paths.cache, item, self.input):
            check_image(self.input.image(item), self.cfg.interrogate.max_pixels)

    def _left_out(self, stage: str) -> str:
        """Why an earlier stage's output was missing: the flag that left it out, if one did."""
        only = self.ctx.options.only
        if only and stage not in only:
            return f"--only {','.join(only)} leaves out the {stage} stage"
        if self.ctx.cfg.section(stage).skip:
            return f"{stage}.skip = true"
        return f"see the {stage} stage's failures"

    def _interrogate_runs_first(self) -> bool:
        """Whether this run's interrogate stage comes before this one (so a vision answer
        of an earlier image is redone before it is read)."""
        only = self.ctx.options.only
        return (not only or "interrogate" in only) and not self.ctx.cfg.interrogate.skip

    async def process(self, item: Item, key: str) -> None:
        c = self.cfg.interpret
        await asyncio.to_thread(self.precheck, item)
        inputs = self.inputs(item)
        if not inputs["tags"] and not inputs["vision"]:
            raise ItemError("no tags and no vision answer to caption from (add NAME.txt or "
                            "run the interrogate stage)")
        self.blind += not inputs["vision"]
        self.unlooked += any(tag not in self.store for tag in inputs["tags"])
        chat = self.backend("chat")
        evidence = self.evidence(inputs)
        messages = self.template.render(
            **prompt_fields(evidence), trigger=", ".join(c.trigger_words) or "(none)",
            max_tokens=str(c.max_clip_tokens))
        verdicts = []
        for i in range(c.candidates):         # lazily: the next only when this one fails
            answer = await chat.chat(messages, template_hash=self.template.hash, sample=i,
                                     **self.chat_overrides())
            verdicts.append(verify(fix_articles(first_sentence(tidy_caption(answer.text))), evidence))
            if verdicts[-1].passed:
                break
        self.calls += len(verdicts)
        chosen, flags = best(verdicts), []
        if chosen is not None:
            caption, tokens, shortened = await self._fit(chosen.caption, evidence)
            verdict = verify(caption, evidence) if shortened else chosen
        else:
            caption, tokens = self._compose(inputs)
            verdict, shortened = verify(caption, evidence), False
            flags.append(FALLBACK)
            self.fallbacks += 1
        if not verdict.passed:
            flags.append(DOUBTED)             # never written as if it were sure
        if evidence.vision_only and not vision_subject(confident_vision(evidence.vision)):
            flags.append(VISION_GUESS)        # the caption states what the classifier guessed
        caption = with_trigger(caption, c.trigger_words)
        tokens = self._tokens(caption) if c.trigger_words else tokens
        over = tokens > c.max_clip_tokens
        if over:
            flags.append(OVER_LIMIT)
        self.over_limit += over
        await asyncio.to_thread(self._write, item, caption, {
            "id": item.id, "image": self.input.where(item), "caption": caption,
            "caption_sha256": sha256_text(caption + "\n"), "key": key,
            "flags": flags, "score": round(verdict.score, 3), "coverage": round(verdict.coverage, 3),
            "reasons": verdict.reasons if chosen is not None else [
                f"candidate {i + 1}: " + "; ".join(v.reasons) for i, v in enumerate(verdicts)]
            + ([f"the composed fallback itself: {'; '.join(verdict.reasons)}"]
               if not verdict.passed else []),
            "candidates": [v.as_dict() for v in verdicts], "doubted": verdict.doubted,
            "clip_tokens": tokens, "over_limit": over, "shortened": shortened, **inputs,
            "trigger_words": list(c.trigger_words), "llm": chat.identity(**self.chat_overrides()),
            "templates": {"interpret": self.template.hash, "shorten": self.shorten.hash,
                          "interpret_file": self.template.path.name},
            "created": time.strftime("%Y-%m-%dT%H:%M:%S")})

    def _compose(self, inputs: dict) -> tuple[str, int]:
        """The fallback caption, with fewer details until it fits max_clip_tokens."""
        limit = self.cfg.interpret.max_clip_tokens
        details = 12
        while True:
            text = compose(inputs["tags"], inputs["vision"], definitions=inputs["definitions"],
                           max_details=details)
            if not text:
                raise ItemError("no candidate passed the verifier and there is nothing to "
                                "compose a caption from")
            tokens = self._tokens(text)
            if tokens <= limit or details == 0:
                return text, tokens
            details -= 1

    def _write(self, item: Item, caption: str, provenance: dict) -> None:
        """Provenance first, then the caption (see the module docstring). A dataset sample's
        record (caption included) goes to the cache until its shard's Parquet is written."""
        if self.input.dataset:
            atomic_write_json(self.record_path(item.id), {"sample_key": item.data.key, **provenance})
            faults.point("interpret.sample_recorded")
            return
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
            faults.point("interpret.before_beside")
            atomic_write_text(item.data.with_suffix(c.beside_extension), caption + "\n")

    def _tokens(self, text: str) -> int:
        from .backends.clip_tokens import clip_token_count

        return clip_token_count(self.ctx.resource("clip_tokenizer", self._tokenizer), text)

    async def _fit(self, caption: str, evidence: Evidence) -> tuple[str, int, bool]:
        """Shorten once with the LLM when over max_clip_tokens; the shorter text is kept
        only when it still passes the verifier. Report what remains."""
        limit = self.cfg.interpret.max_clip_tokens
        tokens = self._tokens(caption)
        if tokens <= limit:
            return caption, tokens, False
        messages = self.shorten.render(caption=caption, max_tokens=str(limit), tokens=str(tokens))
        answer = await self.backend("chat").chat(messages, template_hash=self.shorten.hash,
                                                 **self.chat_overrides())
        short = fix_articles(tidy_caption(answer.text))
        short_tokens = self._tokens(short) if short else tokens + 1
        if short and short_tokens < tokens and verify(short, evidence).passed:
            return short, short_tokens, True
        return caption, tokens, False

    def _tokenizer(self):
        from .backends.clip_tokens import load_clip_tokenizer

        return load_clip_tokenizer(self.cfg.paths.cache)

    def finish(self, report: StageReport) -> None:
        notes = []
        if self.input.dataset:
            notes += self._write_shards(report)
        fallbacks = self.fallbacks + self.fallbacks_before
        over_limit = self.over_limit + self.over_limit_before
        if self.calls and report.ok:
            notes.append(f"{self.calls / report.ok:.2f} candidates asked for per caption")
        if fallbacks:
            earlier = f", {self.fallbacks_before} of them reused" if self.fallbacks_before else ""
            notes.append(f"{fallbacks} fallback captions composed from the tags (no candidate "
                         f"passed the verifier{earlier}; reasons in NAME.json)")
        if self.blind:
            notes.append(f"{self.blind} captions made without a vision answer "
                         f"({self._left_out('interrogate')})")
        if self.unlooked:
            notes.append(f"{self.unlooked} captions made with tags never looked up, so without "
                         f"their summaries ({self._left_out('tags')})")
        if over_limit:
            notes.append(f"{over_limit} captions still over "
                         f"{self.cfg.interpret.max_clip_tokens} CLIP tokens (see NAME.json)")
        if self.kept:
            notes.append(f"{self.kept} existing captions kept (interpret.overwrite = false)")
        if self.input.dataset and not self.ctx.options.dry_run:
            rows = current_decisions(self.cfg.paths.captions)
            self.reviewed = sum(r["decision"] in KEEP for r in rows)
            self.rejected = sum(r["decision"] == REJECTED for r in rows)
        if self.reviewed:
            notes.append(f"{self.reviewed} captions accepted or edited in the review kept")
        if self.rejected:
            notes.append(f"{self.rejected} images rejected in the review left out (no caption, "
                         "not exported)")
        notes += [f"the unreadable tag store was moved to {p.name}" for p in self.moved_aside]
        report.note = "; ".join(notes)

    def _write_shards(self, report: StageReport) -> list[str]:
        """One Parquet per shard whose every sample was settled in this run (captioned now or
        before, or failed with its reason); shards with no failure were written as soon as
        they were complete. A killed or limited run writes none for the shards it did not
        finish, and its rerun resumes from the per-sample records. A shard whose every sample
        failed has no Parquet: an earlier one is removed, its rows are no longer current; so is
        the Parquet of a shard the input no longer has (renamed or removed)."""
        from .io.shardout import remove_stale, shard_path, write_shard

        failed = {item_id for item_id, _ in report.failed}
        written, unchanged, waiting, removed = 0, 0, 0, 0
        for unit, state in sorted(self.units.items()):
            if state["written"] is not None:          # written as soon as it was complete
                written, unchanged = written + state["written"], unchanged + (not state["written"])
                continue
            records = self._settled(state, failed) if state["listed"] else None
            if records is None:
                waiting += 1
                continue
            if not records:                       # every sample failed now: no empty file,
                stale = shard_path(self.cfg.paths.captions, unit)   # and no earlier one left
                if stale.exists():                # holding captions of what failed
                    stale.unlink()
                    removed += 1
                continue
            if write_shard(self.cfg.paths.captions, unit, records):
                written += 1
            else:
                unchanged += 1
        notes = []
        from .io.samples import shard_root

        gone = remove_stale(self.cfg.paths.captions, shard_root(self.cfg.paths.images))
        if gone:
            notes.append(f"{len(gone)} shard Parquet files removed, their shards are gone from "
                         f"the input: {', '.join(gone[:5])}{' ...' if len(gone) > 5 else ''}")
        if written or unchanged:
            notes.append(f"{written} shard Parquet files written, {unchanged} unchanged "
                         f"(in {self.cfg.paths.captions})")
        if removed:
            notes.append(f"{removed} shard Parquet files removed: every sample of those shards "
                         "failed in this run (see the failures)")
        if waiting:
            notes.append(f"{waiting} shards not finished in this run: their Parquet waits for a rerun")
        return notes

    def _settled(self, state: dict, failed: set[str]) -> list[dict] | None:
        """The caption records of a shard whose every sample has one made from its current
        key (by this run's executor or an earlier run) or failed now; None while any waits."""
        records = []
        for item_id in sorted(state["ids"]):
            if item_id in failed:
                continue
            try:
                record = read_json(self.record_path(item_id))
            except (FileNotFoundError, ValueError):
                return None
            if not isinstance(record, dict) or record.get("key") != state["keys"].get(item_id):
                return None
            records.append(record)
        return records
