"""Upsample stage: rewrite each benchmark prompt into a detailed one.

Each prompt gets `candidates` samples; the chosen one is the first that fits
`max_clip_tokens` CLIP tokens, or the shortest when none fits (the overflow is recorded).
Per-prompt results are written to `runs/RUN/upsample/ID.json` as they finish; the index
`runs/RUN/upsampled.jsonl` is rebuilt from them at the end of the stage.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from .config import Config
from .errors import ItemError
from .io.runfiles import write_jsonl
from .language.text import tidy_caption
from .stage import Declaration, FromConfig, Item, Stage, StageReport
from .store import atomic_write_json, read_json


def load_prompts(cfg) -> tuple[list, int]:
    """The benchmark's prompts as configured, and how many there were before upsample.limit."""
    from .benchmarks import load_benchmark

    u = cfg.upsample
    everything = load_benchmark(u.benchmark, path=u.benchmark_path, categories=u.categories,
                                limit=0, base_dir=cfg.source.resolve().parent)
    return (everything[:u.limit] if u.limit else everything), len(everything)


def choose(candidates: list[str], tokens: list[int], limit: int) -> int:
    """Index of the first candidate within `limit` tokens, else of the shortest."""
    for i, n in enumerate(tokens):
        if n <= limit:
            return i
    return min(range(len(tokens)), key=lambda i: tokens[i])


class UpsampleStage(Stage):
    name = "upsample"
    llm_bound = True
    chat_params = {"temperature": FromConfig("upsample.temperature")}

    @classmethod
    def declare(cls, cfg: Config) -> Declaration:
        return Declaration(
            config=("upsample.template", "upsample.candidates", "upsample.max_clip_tokens"),
            backends=("chat",),
            operational=("upsample.benchmark", "upsample.benchmark_path", "upsample.categories",
                         "upsample.limit"))

    def prepare(self) -> None:
        self.template = self.load_template("upsample.template", {"prompt", "max_tokens"})
        self.prompts, self.total = load_prompts(self.cfg)

    def begin(self) -> None:
        from .benchmarks import write_prompts_jsonl

        write_prompts_jsonl(self.prompts, self.ctx.run_dir / "prompts.jsonl")

    def limited(self) -> str:
        if len(self.prompts) < self.total:
            limit = self.cfg.upsample.limit
            return f"upsample.limit = {limit}: {len(self.prompts)} of {self.total:,} prompts"
        return ""

    def missing_inputs(self) -> str:
        if not (self.ctx.run_dir / "upsampled.jsonl").exists():
            return "no upsampled.jsonl yet: later stages use the original prompts only"
        return ""

    def out(self, item_id: str) -> Path:
        return self.ctx.run_dir / "upsample" / f"{item_id}.json"

    def items(self):
        for prompt in self.prompts:
            yield Item(prompt.id, prompt)

    def count(self) -> int:
        return len(self.prompts)

    def inputs(self, item: Item) -> dict:
        return {"prompt": item.data.prompt}

    def is_done(self, item: Item, key: str) -> bool:
        try:
            return read_json(self.out(item.id)).get("key") == key
        except (FileNotFoundError, ValueError):
            return False

    def tokenizer(self):
        from .backends.clip_tokens import load_clip_tokenizer

        return self.ctx.resource("clip_tokenizer", lambda: load_clip_tokenizer(self.cfg.paths.cache))

    async def process(self, item: Item, key: str) -> None:
        from .backends.clip_tokens import clip_token_count

        u = self.cfg.upsample
        prompt = item.data
        messages = self.template.render(prompt=prompt.prompt, max_tokens=str(u.max_clip_tokens))
        chat = self.backend("chat")
        answers = await asyncio.gather(*(
            chat.chat(messages, template_hash=self.template.hash, sample=i, **self.chat_overrides())
            for i in range(u.candidates)))
        candidates = [tidy_caption(a.text) for a in answers]
        candidates = [c for c in candidates if c] or []
        if not candidates:
            raise ItemError("every candidate came back empty")
        tokenizer = self.tokenizer()
        tokens = [clip_token_count(tokenizer, c) for c in candidates]
        best = choose(candidates, tokens, u.max_clip_tokens)
        atomic_write_json(self.out(item.id), {
            "id": prompt.id, "prompt": prompt.prompt, "category": prompt.category,
            "upsampled": candidates[best], "candidates": candidates, "clip_tokens": tokens,
            "chosen": best, "over_limit": tokens[best] > u.max_clip_tokens,
            "llm": chat.identity(**self.chat_overrides()), "template": self.template.hash,
            "key": key})

    def finish(self, report: StageReport) -> None:
        rows, over, stale = [], 0, 0
        for prompt in self.prompts:
            try:
                row = read_json(self.out(prompt.id))
            except (FileNotFoundError, ValueError):
                continue
            if row.get("key") != self.key(Item(prompt.id, prompt)):
                stale += 1            # made with other settings (e.g. a --limit run since)
                continue
            over += bool(row.get("over_limit"))
            rows.append({k: row[k] for k in ("id", "prompt", "upsampled", "candidates",
                                             "clip_tokens", "category", "chosen", "over_limit")})
        write_jsonl(self.ctx.run_dir / "upsampled.jsonl", rows)
        notes = []
        if over:
            notes.append(f"{over} upsampled prompts over {self.cfg.upsample.max_clip_tokens} "
                         "CLIP tokens (the encoder will truncate them)")
        if stale:
            notes.append(f"{stale} upsampled prompts made with other settings left out of "
                         "upsampled.jsonl (rerun to redo them)")
        report.note = "; ".join(notes)
