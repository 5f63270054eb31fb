"""Socratic stage: generate -> caption -> judge -> revise, with a fixed seed, keep the best.

Each round generates an image for the current prompt with the prompt's fixed seed (the
first of generate.seeds, the same every round, so only the prompt changes), has the
vision backend describe it, and asks the judge LLM for a structured verdict
`{"matches", "missing", "revised_prompt"}` with the original request and the full history
of earlier rounds in context. The revision is checked against the CLIP token limit. The
loop stops when the judge says the image matches (`early_stop`) or at `iterations`.

The best image is chosen by a scorer that is not the judge: CLIP image-text similarity to
the original prompt (`select = clip`, `socratic.clip_model`), or a vision-language model
rating the images (`select = judge`, needs `vision.backend = openai`). The trace,
`socratic/ID.json`, is written after every round, so a killed run resumes at the next round.
It records which models captioned, judged and selected (`loop`, `selection.scorer`), so the
report can tell which metrics are independent of the loop. A round whose image has the key
of the prompt's original (or upsampled) image, as round 0 has, links to that image instead
of rendering it again, and says so (`reused`).

A verdict is checked against the evidence, not taken on faith: "matches" with missing items
is no match, and neither is "matches" for an image whose caption names none of the request's
content words (`caption_misses`). A revision that is not a prompt, or repeats a prompt that
already failed, is asked for once more; when the second answer is bad too and something is
missing, the next prompt is composed from the current one and the missing items
(`compose_revision`) and marked `revised_by: "composed"` with why; with nothing missing the
loop ends with the reason.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
from pathlib import Path

from .config import Config
from .describe import describe
from .errors import ConfigError, ItemError
from .generate import image_key, png_key, render_images
from .io.runfiles import PromptsStage, image_path
from .language.text import tidy_caption
from .language.verify import PERSONS, SYNONYMS
from .language.words import content_words, runs, stem, stems, tokens
from .report.scorers import captioner_scorer, chat_scorer, clip_scorer
from .stage import Declaration, Item, Stage, StageReport
from .store import atomic_link_or_copy, atomic_write_json, read_json

# "missing" comes first: a grammar-constrained model writes the properties in this order, so
# it lists what is missing before it may say the image matches.
# Bounded so that a grammar-constrained answer (llama.cpp, vLLM) closes its object inside
# llm.max_tokens: a small model that keeps listing "missing" items was cut off mid-object and
# failed its prompt (2 of 5 in the default demo).
VERDICT = {
    "type": "object", "required": ["missing", "matches", "revised_prompt"],
    "properties": {"missing": {"type": "array", "maxItems": 4,
                               "items": {"type": "string", "maxLength": 48}},
                   "matches": {"type": "boolean"},
                   "revised_prompt": {"type": "string", "maxLength": 240}}}

# Fresh renders for "best vs first": seeds that took no part in selection or stopping. Seed j
# of a prompt is FRESH_SEED_OFFSET + the first 6 hex digits of sha256("ID:j") (so between
# 10,000,000 and 26,777,215, never a small generate.seeds value); one that is among
# generate.seeds is skipped.
FRESH_SEED_OFFSET = 10_000_000
NOT_MISSING = {"", "nothing", "none", "n/a", "na", "-", "no", "nothing is missing", "nothing missing"}
VERDICT_WORDS = {"yes", "no", "true", "false", "match", "matches", "matched", "ok", "okay", "correct",
                 "incorrect", "none", "nothing", "it", "the", "image", "does", "not", "doesn't", "na"}
ROUND_TALK = re.compile(r"\b(?:(?:first|second|third|next|previous|last|this|earlier|same|another)"
                        r"\s+(?:round|attempt|iteration|try)|round\s*\d+|revised prompt|"
                        r"(?:last|previous|earlier|first)\s+(?:image|prompt|picture)|"
                        r"(?:the|a|this|your) request|requests? for|refinement|vision model|"
                        r"(?:image|text-to-image|diffusion) model|missing (?:parts?|items?|things?))\b",
                        re.I)
ECHO_WORDS = 5
# A composed revision: the missing items first, then the current prompt (without an earlier
# composed lead, so leads never stack).
COMPOSED_LEAD = " in plain view: "
REWRITE_SYSTEM = ("You write prompts for a text-to-image model: one line that describes the "
                  "picture to draw, with its subjects, their details and the setting.")


def fresh_seeds(prompt_id: str, count: int, used: tuple[int, ...]) -> list[int]:
    """`count` seeds for re-rendering the chosen and the first prompt (see FRESH_SEED_OFFSET)."""
    out, j = [], 0
    while len(out) < count:
        digest = hashlib.sha256(f"{prompt_id}:{j}".encode()).hexdigest()
        seed = FRESH_SEED_OFFSET + int(digest[:6], 16)
        if seed not in used and seed not in out:
            out.append(seed)
        j += 1
    return out


def missing_items(values: list) -> list[str]:
    """The judge's missing list without empty or "nothing" entries."""
    items = [" ".join(str(v).split()) for v in values]
    return [v for v in items if v.lower().strip(" .!") not in NOT_MISSING]


def revision_problem(text: str, request: str, instructions: str) -> str:
    """Why `text` is not a prompt for an image model ('' when it is one): a yes/no verdict
    ("yes", "[1] matches"), a single word, talk about the rounds or the request ("This is the
    first round of the request."), or a copy of a run of the judge's own instructions."""
    words = tokens(text)
    if not words:
        return "it is empty"
    if set(words) <= VERDICT_WORDS or all(w.isdigit() or w in VERDICT_WORDS for w in words):
        return f"it is a verdict, not a prompt: {text!r}"
    if len([w for w in words if not w.isdigit()]) < 2:
        return f"it is a single word: {text!r}"
    talk = ROUND_TALK.search(text)
    if talk:
        return f"it talks about the refinement ({talk.group(0)!r}) instead of describing an image"
    copied = runs(text, ECHO_WORDS) & (runs(instructions, ECHO_WORDS) - runs(request, ECHO_WORDS))
    if copied:
        return f"it repeats the judge's instructions ({' '.join(sorted(copied)[0])!r})"
    return ""


def _and_list(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def concepts(text: str) -> set[str]:
    """The stems of the text's words, widened by the project's synonyms (verify.SYNONYMS,
    both ways: "mug" also names "cup") and by person words ("kids" names "children"), so a
    caption that says the same thing in other words is not counted as naming nothing."""
    words = tokens(text)
    found = stems(words)
    for key, names in SYNONYMS.items():
        group = [key.split(" (")[0], *names]
        if any(stems(tokens(name)) <= found for name in group):
            for name in group:
                found |= stems(tokens(name))
    if set(words) & PERSONS:
        found |= stems(PERSONS)
    return found


def caption_misses(request: str, caption: str) -> list[str]:
    """The request's content words (first spelling of each stem, in order) when the caption
    names none of them: the evidence that a "matches" is wrong. Empty when the caption names
    at least one (conservative: a real caption may say "puppies" for "a dog" or "mug" for
    "cup", and one shared word is enough), or when the request has no content words."""
    wanted, seen = [], set()
    for word in content_words(request):
        if stem(word) not in seen:
            seen.add(stem(word))
            wanted.append(word)
    if not wanted or concepts(caption) & seen:
        return []
    return wanted


def compose_revision(current: str, missing: list[str], fits) -> str:
    """The current prompt led by the missing items ("owls and wire in plain view: four owls
    ..."), with as many missing items as fit the CLIP limit (`fits(text)`); '' when even one
    does not fit. An earlier composed lead is dropped first, so composing twice gives the
    same prompt, which the loop then stops on as a repeat."""
    base = current.split(COMPOSED_LEAD, 1)[1] if COMPOSED_LEAD in current else current
    for k in range(len(missing), 0, -1):
        text = _and_list(missing[:k]) + COMPOSED_LEAD + base
        if fits(text):
            return text
    return ""


def format_history(iterations: list[dict]) -> str:
    if not iterations:
        return "(none: this is the first round)"
    lines = []
    for i, it in enumerate(iterations):
        v = it["verdict"]
        lines.append(f"Round {i}: prompt: {it['prompt']}\n  image showed: {it['caption']}\n"
                     f"  missing: {', '.join(v['missing']) or 'nothing'}; matches: "
                     f"{'yes' if v['matches'] else 'no'}; revision: {v['revised_prompt']}")
    return "\n".join(lines)


class SocraticStage(PromptsStage, Stage):
    name = "socratic"
    # 2: traces record the loop's models and reused images (issue 12); 3: "matches" is checked
    # against the caption, a repeated prompt is a bad revision, composed revisions (issue 21)
    version = 3
    concurrency = 1          # rounds are sequential and the image pipeline is shared
    tallies = ("early", "rejected")

    @classmethod
    def declare(cls, cfg: Config) -> Declaration:
        s = cfg.socratic
        asks = cfg.vision.backend != "classifier"
        scorer = ("select_clip",) if s.select == "clip" else ()
        return Declaration(
            config=("socratic.template", "socratic.max_clip_tokens", "socratic.start", "socratic.select",
                    "generate.negative_prompt")
            + (("interrogate.template",) if asks else ()),
            # Only the first seed is used (the loop's fixed seed): it enters as an input, so
            # adding seeds for the generate stage redoes no trace.
            reads=("generate.seeds",),
            backends=("images", "vision", "chat") + scorer,
            completion=("socratic.iterations", "socratic.early_stop", "socratic.fresh_seeds"),
            operational=("interrogate.max_pixels", "generate.batch_size"))

    def prepare(self) -> None:
        s = self.cfg.socratic
        if s.select == "judge" and self.cfg.vision.backend != "openai":
            raise ConfigError(f"{self.cfg.source}: socratic.select = judge compares images, so it "
                              "needs vision.backend = openai (a model that sees images); use "
                              "socratic.select = clip otherwise")
        self.template = self.load_template("socratic.template",
                                           {"prompt", "current", "caption", "history", "max_tokens"})
        self.load_rows()
        self.early = 0
        self.rejected = 0

    def missing_inputs(self) -> str:
        return "" if (self.ctx.run_dir / "socratic").exists() else "no socratic traces yet"

    def out(self, item_id: str) -> Path:
        return self.ctx.run_dir / "socratic" / f"{item_id}.json"

    def start_prompt(self, row: dict) -> str | None:
        """Round 0's prompt: the original, or with start = upsampled the current upsampled
        prompt (None when upsampled.jsonl has none: that prompt fails, it never starts from
        the original under a trace that says upsampled)."""
        if self.cfg.socratic.start == "upsampled":
            up = self.up.get(row["id"])
            return up["upsampled"] if up else None
        return row["prompt"]

    def seed(self) -> int:
        """The loop's fixed seed: the first of generate.seeds."""
        return self.cfg.generate.seeds[0]

    def inputs(self, item: Item) -> dict:
        return {"prompt": item.data["prompt"], "start": self.start_prompt(item.data),
                "seed": self.seed()}

    def _trace(self, item: Item, key: str) -> dict | None:
        try:
            trace = read_json(self.out(item.id))
        except (FileNotFoundError, ValueError):
            return None
        return trace if isinstance(trace, dict) and trace.get("key") == key else None

    def finished_at(self, its: list[dict]) -> int | None:
        """How many rounds the loop makes with the current settings given these verdicts, or
        None while it would go on. Settings that only decide when it ends (iterations,
        early_stop) thus extend or cut a trace instead of redoing it."""
        s = self.cfg.socratic
        for i, it in enumerate(its):
            verdict = it["verdict"]
            no_new = not verdict["revised_prompt"].strip() or verdict["revised_prompt"] == it["prompt"]
            if ((s.early_stop and verdict["matches"]) or no_new or verdict.get("rejected")
                    or i + 1 >= s.iterations):
                return i + 1
        return None

    def fresh_plan(self, row: dict, trace: dict) -> dict:
        """What the fresh renders of the chosen and the first prompt should be: none when the
        first round was chosen (the two prompts are one)."""
        its, best = trace["iterations"], trace["best"]
        if best == 0 or not self.cfg.socratic.fresh_seeds:
            return {"seeds": [], "first": [], "best": [], "best_is_first": best == 0}
        seeds = fresh_seeds(row["id"], self.cfg.socratic.fresh_seeds, tuple(self.cfg.generate.seeds))
        paths = {v: [image_path(self.ctx.run_dir, row["id"], f"{v}_fresh", seed).relative_to(
            self.ctx.run_dir).as_posix() for seed in seeds] for v in ("first", "best")}
        return {"seeds": seeds, **paths, "best_is_first": False,
                "prompts": {"first": its[0]["prompt"], "best": its[best]["prompt"]}}

    def fresh_jobs(self, row: dict, plan: dict) -> list[tuple[str, int, Path, dict]]:
        """The fresh renders of `plan` that are not on disk with their prompt's and seed's key
        (missing, unreadable or made from something else)."""
        jobs = []
        for variant in ("first", "best"):
            for seed, rel in zip(plan["seeds"], plan[variant], strict=True):
                text = plan["prompts"][variant]
                path = self.ctx.run_dir / rel
                key = image_key(self.backend("images"), text, seed, self.cfg.generate.negative_prompt)
                if png_key(path) != key:
                    jobs.append((text, seed, path, {"id": row["id"], "variant": f"{variant}_fresh"}))
        return jobs

    def is_done(self, item: Item, key: str) -> bool:
        trace = self._trace(item, key)
        if not trace or trace.get("best") is None:
            return False
        if self.finished_at(trace["iterations"]) != len(trace["iterations"]):
            return False
        plan = self.fresh_plan(item.data, trace)
        # a fresh render deleted or spoilt since is made again, not left for evaluate to fail on
        return trace.get("fresh") == plan and not self.fresh_jobs(item.data, plan)

    async def process(self, item: Item, key: str) -> None:
        s = self.cfg.socratic
        row = item.data
        seed = self.seed()
        start = self.start_prompt(row)
        if start is None:
            raise ItemError("socratic.start = upsampled, but upsampled.jsonl has no current upsampled "
                            "prompt for it: run the upsample stage (or set socratic.start = original)")
        trace = self._trace(item, key) or {
            "id": row["id"], "prompt": row["prompt"], "category": row.get("category", ""),
            "start": s.start, "start_prompt": start, "seed": seed, "iterations": [], "best": None,
            "stopped_early": False, "key": key}
        trace["loop"] = self.loop_record()
        its = trace["iterations"]
        end = self.finished_at(its)
        if end is not None and end < len(its):          # fewer rounds asked for now
            del its[end:]
        while self.finished_at(its) is None:
            current = its[-1]["verdict"]["revised_prompt"] if its else start
            its.append(await self._round(row, len(its), current, its, seed))
            trace["best"] = None
            atomic_write_json(self.out(row["id"]), trace)
        last = its[-1]["verdict"]
        trace["stopped_early"] = bool(s.early_stop and last["matches"])
        no_new = not last["revised_prompt"].strip() or last["revised_prompt"] == its[-1]["prompt"]
        trace["stop_reason"] = ""
        if last.get("rejected") and not trace["stopped_early"]:
            who = "composed" if last.get("revised_by") == "composed" else "judge's"
            trace["stop_reason"] = f"the {who} revision was rejected: {last['rejected']}"
            self.rejected += 1
        elif no_new and not trace["stopped_early"]:
            trace["stop_reason"] = "the judge gave no new prompt"
        self.early += trace["stopped_early"]
        await self._select(trace)
        await self._fresh(row, trace)
        atomic_write_json(self.out(row["id"]), trace)

    async def _fresh(self, row: dict, trace: dict) -> None:
        """Render the chosen and the first prompt again with seeds that took no part in the
        loop (`fresh_seeds`), so "best vs first" is scored on images whose noise did not pick
        the best. Nothing to render when the first round was chosen."""
        plan = self.fresh_plan(row, trace)
        jobs = self.fresh_jobs(row, plan)
        if jobs:
            await render_images(self, jobs)
        trace["fresh"] = plan

    async def _round(self, row: dict, index: int, prompt: str, history: list[dict],
                     seed: int) -> dict:
        from .backends.clip_tokens import clip_token_count, load_clip_tokenizer, truncate_to_tokens

        s = self.cfg.socratic
        path = image_path(self.ctx.run_dir, row["id"], f"iter{index:02d}", seed)
        key = image_key(self.backend("images"), prompt, seed, self.cfg.generate.negative_prompt)
        reused = self._reuse(row["id"], seed, key, path)
        if reused is None and png_key(path) != key:
            await render_images(self, [(prompt, seed, path, {"id": row["id"],
                                                             "variant": f"iter{index:02d}"})])
        caption = await describe(self, path)
        messages = self.template.render(prompt=row["prompt"], current=prompt, caption=caption,
                                        history=format_history(history),
                                        max_tokens=str(s.max_clip_tokens))
        tokenizer = self.ctx.resource("clip_tokenizer",
                                      lambda: load_clip_tokenizer(self.cfg.paths.cache))
        tried = [it["prompt"] for it in history] + [prompt]
        verdict = await self._verdict(messages, row["prompt"], caption, tried,
                                      lambda text: clip_token_count(tokenizer, text) <= s.max_clip_tokens)
        tokens = clip_token_count(tokenizer, verdict["revised_prompt"])
        truncated = tokens > s.max_clip_tokens
        if truncated:
            verdict["revised_prompt"] = truncate_to_tokens(tokenizer, verdict["revised_prompt"],
                                                           s.max_clip_tokens)
        out = {"prompt": prompt, "image": path.relative_to(self.ctx.run_dir).as_posix(),
               "caption": caption, "verdict": verdict, "scores": {},
               "revision_clip_tokens": tokens, "revision_truncated": truncated}
        if reused:
            out["reused"] = reused
        return out

    async def _verdict(self, messages: list[dict], request: str, caption: str, tried: list[str],
                       fits) -> dict:
        """The judge's verdict, checked. "matches" with missing items is not a match, nor is
        "matches" when the caption names none of the request's content words (those become
        the missing items). A revised prompt that is not a prompt (`revision_problem`) or
        repeats one already tried is asked for once more, as a plain rewrite request that
        gives the reason (small models write a line of text far better than a field of
        JSON). A second bad one is replaced, when something is missing, by a prompt composed
        from the current one and the missing items (`revised_by: "composed"`, with why);
        otherwise, or when that is bad too, it is recorded as `rejected`, which ends the loop."""
        chat = self.backend("chat")
        answer = await chat.chat(messages, template_hash=self.template.hash, schema=VERDICT,
                                 schema_name="verdict")
        missing = missing_items(answer.data["missing"])
        verdict = {"matches": bool(answer.data["matches"]) and not missing, "missing": missing,
                   "revised_prompt": tidy_caption(str(answer.data["revised_prompt"]))}
        if bool(answer.data["matches"]) and missing:
            verdict["overruled"] = "the judge said it matches but listed missing items"
        elif verdict["matches"]:
            unseen = caption_misses(request, caption)
            if unseen:
                verdict.update(matches=False, missing=unseen,
                               overruled=f"the caption names none of: {', '.join(unseen)}")
        used = {" ".join(t.lower().split()) for t in tried}

        def problem(text: str) -> str:
            if not verdict["matches"] and " ".join(text.lower().split()) in used:
                return f"it repeats a prompt that was already tried: {text!r}"
            return revision_problem(text, request, self.template.literal())

        rejected = problem(verdict["revised_prompt"])
        if not rejected:
            return verdict
        missing = verdict["missing"]
        lacking = ", ".join(missing) or "what the request asks for"
        retry = [{"role": "system", "content": REWRITE_SYSTEM},
                 {"role": "user", "content": f"Request: {request}\nWhat the last image lacked: {lacking}\n"
                  f"The last prompt was rejected because {rejected}.\nWrite one new image prompt: "
                  "start with the request's words, then add what was lacking."}]
        again = tidy_caption((await chat.chat(retry, template_hash=self.template.hash + ":rewrite")).text)
        second = problem(again)
        if not second:
            return {**verdict, "revised_prompt": again, "first_rejected": rejected}
        bad = {**verdict, "revised_prompt": again, "rejected": second, "first_rejected": rejected}
        if not missing:
            return bad
        composed = compose_revision(tried[-1], missing, fits)
        why = (f"the judge's two revisions were rejected ({rejected}; then {second}), so the "
               "pipeline composed the next prompt from the current one and the missing items")
        out = {**bad, "revised_prompt": composed, "revised_by": "composed", "composed_why": why,
               "judge_revision": again}
        del out["rejected"]
        third = problem(composed) if composed else "the missing items do not fit the CLIP token limit"
        if third:
            out["rejected"] = third
        return out

    def _reuse(self, prompt_id: str, seed: int, key: str, path: Path) -> dict | None:
        """Make `path` the prompt's original (or upsampled) image when that has `key`, so
        "original" and "round 0" are one image, not two renders that differ by batching."""
        for variant in ("original", "upsampled"):
            source = image_path(self.ctx.run_dir, prompt_id, variant, seed)
            if png_key(source) != key:
                continue
            if path.exists() and os.path.samefile(source, path):
                how = "hard link"
            elif path.exists() and path.read_bytes() == source.read_bytes():
                how = "copy"
            else:
                how = atomic_link_or_copy(source, path)
            return {"from": source.relative_to(self.ctx.run_dir).as_posix(), "how": how}
        return None

    def loop_record(self) -> dict:
        """The models that caption and judge every round, as the report needs them."""
        return {"captioner": captioner_scorer(self.backend("vision").identity()).as_dict(),
                "judge": chat_scorer(self.backend("chat").model_id, "judge").as_dict()}

    async def _select(self, trace: dict) -> None:
        from PIL import Image

        its = trace["iterations"]
        if not its:
            raise ItemError("no round finished")
        paths = [self.ctx.run_dir / it["image"] for it in its]
        if self.cfg.socratic.select == "clip":
            scorer = self.backend("select_clip")
            images = await asyncio.to_thread(lambda: [Image.open(p).convert("RGB") for p in paths])
            scores = await asyncio.to_thread(scorer.clipscore, images, [trace["prompt"]] * len(images))
            for it, score in zip(its, scores, strict=True):
                it["scores"]["select_clip"] = float(score)
            name = "select_clip"
            identity = scorer.identity()
            who = clip_scorer(identity["model"], identity.get("pretrained", "openai"), role="selector")
            trace["selection"] = {"by": "clip", "scorer": {**who.as_dict(), "identity": identity},
                                  "why": "highest CLIP image-text similarity to the original prompt"}
        else:
            scores = await self._judge_images(trace["prompt"], paths)
            for it, score in zip(its, scores, strict=True):
                it["scores"]["select_judge"] = float(score)
            name = "select_judge"
            chat = self.backend("vision").chat
            who = chat_scorer(chat.model_id, "selector", what="vision-language judge")
            trace["selection"] = {"by": "judge", "scorer": {**who.as_dict(), "identity": chat.identity()},
                                  "why": "highest score from the vision-language judge"}
        trace["best"] = max(range(len(its)), key=lambda i: (its[i]["scores"][name], -i))

    async def _judge_images(self, prompt: str, paths: list[Path]) -> list[float]:
        from .io.imageio import load_image, to_data_url

        vision = self.backend("vision")
        schema = {"type": "object", "required": ["score"],
                  "properties": {"score": {"type": "integer", "minimum": 1, "maximum": 10}}}
        out = []
        for path in paths:
            image = await asyncio.to_thread(load_image, path, self.cfg.interrogate.max_pixels)
            url = await asyncio.to_thread(to_data_url, image, self.cfg.vision.max_side)
            messages = [{"role": "user", "content": [
                {"type": "text", "text": f"Rate from 1 to 10 how well this image shows: {prompt}. "
                 "Answer in JSON with an integer \"score\"."},
                {"type": "image_url", "image_url": {"url": url}}]}]
            answer = await vision.chat.chat(messages, template_hash="select-judge", schema=schema)
            out.append(answer.data["score"])
        return out

    def finish(self, report: StageReport) -> None:
        if self.early:
            report.note = f"{self.early} prompts stopped early (the judge said the image matches)"
