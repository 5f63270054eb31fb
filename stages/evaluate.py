"""Evaluate stage: score every image of a run against its prompt, then write the reports.

Metrics (each optional, `evaluate.metrics`):
- clipscore: 2.5 * max(cos, 0) between the image and the original prompt (CLIP).
- image_similarity: CLIP image-image cosine to the benchmark's reference image, when the
  benchmark has one (rows without a reference get no value, not a zero).
- caption_score: sentence-embedding cosine between a caption of the image and the prompt.
- llm_judge: an LLM's 1-10 rating of how well the caption fits the prompt (text-only: the
  judge sees the caption, not the pixels), with its reasons.
Captions come from the evaluation captioner (`evaluate.vision_backend` / `vision_model`,
default the loop's [vision]); when it is the loop's own, the Socratic rounds' captions are
reused, and the report marks the caption metrics as not independent of the loop.
Variants: original, upsampled (per seed), iterNN and best from the Socratic trace, and only
from a trace made with the current settings.

Per-prompt results go to `runs/RUN/eval/ID.json` with their key; `metrics.csv`, `plots/`
and `report.html` are rebuilt at the end from exactly the files whose key matches the
current inputs, so rows of an older metric set, scorer or trace never reach them.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from .describe import (
    describe,
    evaluation_vision_config,
    make_clip_scorer,
    make_text_embedder,
    make_vision,
)
from .generate import png_key
from .metrics import MetricRow
from .runfiles import PromptsStage, image_path
from .scorers import Scorer, captioner_scorer, chat_scorer, clip_scorer, loop_from_traces, text_model_id
from .stage import Item, Stage, StageReport
from .store import atomic_write_json, hash_value, read_json

JUDGE = {"type": "object", "required": ["score", "reasons"],
         "properties": {"score": {"type": "integer", "minimum": 1, "maximum": 10},
                        "reasons": {"type": "string"}}}


class EvaluateStage(PromptsStage, Stage):
    name = "evaluate"
    concurrency = 1

    def prepare(self) -> None:
        self.metrics = self.cfg.evaluate.metrics
        self.judge = self.ctx.template(self.cfg.evaluate.judge_template, "evaluate.judge_template",
                                       {"prompt", "caption"})
        self.load_rows()
        self.traces = TraceReader(self.ctx)

    def out(self, item_id: str) -> Path:
        return self.ctx.run_dir / "eval" / f"{item_id}.json"

    # -- the evaluation's own models ------------------------------------------------------
    def judge_chat(self):
        """The llm_judge model: evaluate.judge_model on the [llm] server(s), else the loop's."""
        model = self.cfg.evaluate.judge_model
        if not model or model == self.cfg.llm.model:
            return self.ctx.chat()

        def build():
            from .backends.chat import ChatBackend

            return ChatBackend(self.cfg.llm, self.ctx.calls, self.ctx.stats,
                               cache_dir=self.cfg.paths.cache, model=model)
        return self.ctx.resource(f"judge-chat:{model}", build)

    def captioner(self) -> dict:
        return make_vision(self.ctx, evaluation=True).identity()

    def own_captions(self) -> bool:
        """True when the evaluation captioner is the loop's, whose round captions are reused."""
        return evaluation_vision_config(self.cfg) == self.cfg.vision

    def scorers(self) -> dict[str, Scorer]:
        """Each metric's scorer: the label that goes into metrics.csv and the model identities
        the report checks against the loop's."""
        e = self.cfg.evaluate
        out: dict[str, Scorer] = {}
        for metric in e.metrics:
            if metric in ("clipscore", "image_similarity"):
                out[metric] = clip_scorer(e.clip_model)
                continue
            captions = captioner_scorer(self.captioner())
            if metric == "caption_score":
                model, label = text_model_id(e.text_model), f"text embeddings {e.text_model}"
            else:
                judge = chat_scorer(self.judge_chat().model_id, what="LLM judge")
                model, label = judge.model, judge.label
            out[metric] = Scorer(model, f"{label} on captions by {captions.label}", captioner=captions.model)
        return out

    # -- items ------------------------------------------------------------------------------
    def images(self, item: Item) -> list[tuple[str, int, Path, str]]:
        """(variant, seed, path, caption or '') of every image this prompt has; a round's
        caption is kept only when the evaluation captions with the loop's own captioner."""
        out = []
        for seed in self.cfg.generate.seeds:
            for variant in ("original", "upsampled"):
                path = image_path(self.ctx.run_dir, item.id, variant, seed)
                if path.exists():
                    out.append((variant, seed, path, ""))
        trace = self.traces.current(item)
        if trace:
            keep = self.own_captions()
            for i, it in enumerate(trace["iterations"]):
                out.append((f"iter{i:02d}", trace["seed"], self.ctx.run_dir / it["image"],
                            it["caption"] if keep else ""))
            best = trace["iterations"][trace["best"]]
            out.append(("best", trace["seed"], self.ctx.run_dir / best["image"],
                         best["caption"] if keep else ""))
        return out

    def reference(self, row: dict) -> Path | None:
        ref = row.get("reference")
        if not ref:
            return None
        path = Path(ref)
        return path if path.is_absolute() else self.cfg.source.resolve().parent / path

    def key(self, item: Item) -> str:
        e = self.cfg.evaluate
        return hash_value({
            "prompt": item.data["prompt"], "metrics": list(e.metrics),
            "images": [(v, s, png_key(p), c) for v, s, p, c in self.images(item)],
            "clip": e.clip_model, "text": e.text_model, "judge": self.judge.hash,
            **self.issue12_key_parts(),
            "reference": str(self.reference(item.data))})

    def issue12_key_parts(self) -> dict:
        """Key parts added for issue 12; to move into the stage's declared dependencies."""
        e = self.cfg.evaluate
        captions = "caption_score" in e.metrics or "llm_judge" in e.metrics
        return {"llm": self.judge_chat().identity() if "llm_judge" in e.metrics else None,
                "vision": self.captioner() if captions else None,
                "scorers": {m: s.label for m, s in self.scorers().items()}}

    def is_done(self, item: Item, key: str) -> bool:
        return self.current_rows(item, key) is not None

    def current_rows(self, item: Item, key: str) -> list[dict] | None:
        """The item's rows when its file was made from `key`, else None."""
        try:
            data = read_json(self.out(item.id))
        except (FileNotFoundError, ValueError):
            return None
        return data.get("rows") if isinstance(data, dict) and data.get("key") == key else None

    async def process(self, item: Item, key: str) -> None:
        from PIL import Image

        row = item.data
        images = self.images(item)
        if not images:
            atomic_write_json(self.out(item.id), {"key": key, "rows": [], "note": "no images"})
            return
        scorers = self.scorers()
        pil = [Image.open(p).convert("RGB") for _, _, p, _ in images]
        needs_captions = "caption_score" in self.metrics or "llm_judge" in self.metrics
        captions = [c or (await describe(self.ctx, p, evaluation=True) if needs_captions else "")
                    for _, _, p, c in images]
        base = [{"id": row["id"], "category": row.get("category", ""), "variant": v, "seed": s}
                for v, s, _, _ in images]

        def rows_of(metric: str, values, notes=None) -> list[dict]:
            notes = notes or [""] * len(base)
            return [{**b, "metric": metric, "value": float(x), "scorer": scorers[metric].label, "note": n}
                    for b, x, n in zip(base, values, notes, strict=True)]

        rows: list[dict] = []
        if "clipscore" in self.metrics:
            scorer = make_clip_scorer(self.ctx)
            rows += rows_of("clipscore", await asyncio.to_thread(
                scorer.clipscore, pil, [row["prompt"]] * len(pil)))
        ref = self.reference(row)
        if "image_similarity" in self.metrics and ref is not None and ref.exists():
            scorer = make_clip_scorer(self.ctx)
            reference = Image.open(ref).convert("RGB")
            rows += rows_of("image_similarity", await asyncio.to_thread(
                scorer.image_similarity, pil, [reference] * len(pil)))
        if "caption_score" in self.metrics:
            embedder = make_text_embedder(self.ctx)
            rows += rows_of("caption_score", await asyncio.to_thread(
                embedder.similarity, captions, [row["prompt"]] * len(captions)))
        if "llm_judge" in self.metrics:
            answers = await self._judge(row["prompt"], captions)
            rows += rows_of("llm_judge", [a.data["score"] for a in answers],
                            [str(a.data["reasons"])[:300] for a in answers])
        atomic_write_json(self.out(item.id), {"key": key, "rows": rows, "captions": captions})

    async def _judge(self, prompt: str, captions: list[str]) -> list:
        chat = self.judge_chat()
        return await asyncio.gather(*(chat.chat(
            self.judge.render(prompt=prompt, caption=c), template_hash=self.judge.hash,
            schema=JUDGE, schema_name="rating") for c in captions))

    # -- reports ----------------------------------------------------------------------------
    def finish(self, report: StageReport) -> None:
        from .analysis import metric_dependence
        from .report import write_metrics_csv, write_plots, write_report_html

        rows, stale = [], 0
        for prompt in self.rows:
            item = Item(prompt["id"], prompt)
            found = self.current_rows(item, self.key(item))
            if found is None:
                stale += self.out(item.id).exists()
                continue
            rows += [MetricRow(**r) for r in found]
        traces = self.traces.used()
        notes = [n for n in (
            f"{stale} per-prompt evaluation file(s) made from other inputs were left out" if stale else "",
            self.traces.stale_note()) if n]
        run_dir = self.ctx.run_dir
        scorers = self.scorers()
        write_metrics_csv(rows, run_dir / "metrics.csv")
        write_plots(run_dir, rows, traces=traces, evaluation=scorers)
        page = write_report_html(run_dir, rows, evaluation=scorers, traces=traces, notes=notes,
                                 resamples=self.cfg.evaluate.permutations)
        report.note = "; ".join([f"report: {page}", *notes])
        loop = loop_from_traces(traces)
        dependent = [m for m in scorers if metric_dependence(m, scorers, loop)]
        if dependent:
            warning = (f"warning: {', '.join(dependent)} not independent of the Socratic loop (a model "
                       "or the captions are shared); best-vs-first on them is biased upward: see the "
                       "report's Scorers section")
            report.note += "; " + warning
            if not self.ctx.options.quiet:
                print(warning, file=sys.stderr)


class TraceReader:
    """Socratic traces, each used only when its key matches what the socratic stage would
    compute now: a trace from other settings describes another experiment."""

    def __init__(self, ctx):
        from .errors import ConfigError
        from .socratic import SocraticStage

        self.ctx = ctx
        self.socratic: SocraticStage | None = SocraticStage(ctx)
        try:
            self.socratic.prepare()
        except ConfigError:           # settings the loop cannot run with: no trace is current
            self.socratic = None
        self.stale: set[str] = set()
        self.current_ids: set[str] = set()
        self._cache: dict[str, dict | None] = {}

    def current(self, item: Item) -> dict | None:
        if item.id in self._cache:
            return self._cache[item.id]
        try:
            trace = read_json(self.ctx.run_dir / "socratic" / f"{item.id}.json")
        except (FileNotFoundError, ValueError):
            trace = None
        if trace is not None and (trace.get("best") is None or not trace.get("iterations")):
            trace = None
        elif trace is not None and (self.socratic is None or trace.get("key") != self.socratic.key(item)):
            self.stale.add(item.id)
            trace = None
        if trace is not None:
            self.current_ids.add(item.id)
        self._cache[item.id] = trace
        return trace

    def used(self) -> list[dict]:
        return [self._cache[i] for i in sorted(self.current_ids)]

    def stale_note(self) -> str:
        if not self.stale:
            return ""
        return (f"{len(self.stale)} stale Socratic trace(s) left out (made with other settings; "
                "run the socratic stage to redo them)")
