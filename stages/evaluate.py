"""Evaluate stage: score every image of a run against its prompt, then write the reports.

Metrics (each optional, `evaluate.metrics`):
- clipscore: 2.5 * max(cos, 0) between the image and the original prompt (CLIP).
- image_similarity: CLIP image-image cosine to the benchmark's reference image, when the
  benchmark has one (rows without a reference get no value, not a zero).
- caption_score: sentence-embedding cosine between a caption of the image and the prompt.
- llm_judge: an LLM's 1-10 rating of how well the caption fits the prompt (text-only: the
  judge sees the caption, not the pixels), with its reasons.
Captions come from the evaluation's captioner (`evaluate.vision_backend` / `vision_model`,
default the loop's [vision]); when it is the loop's own, the Socratic rounds' captions are
reused, and the report marks the caption metrics as not independent of the loop. The judge
is `evaluate.judge_model` on the [llm] server(s), default the loop's own LLM.
Variants: original, upsampled (per seed), iterNN and best from the Socratic trace, and
first_fresh / best_fresh (the first and the chosen prompt rendered again with seeds that took
no part in the loop, for "best - first"), only from a trace whose key matches what the
socratic stage would compute now.

Per-prompt results go to `runs/RUN/eval/ID.json` with their key; `metrics.csv`, `plots/`
and `report.html` are rebuilt at the end from exactly the files whose key matches the
current inputs, so rows of an older metric set, scorer or trace never reach them.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from .config import Config
from .describe import describe
from .errors import ConfigError, FatalError
from .generate import png_key
from .io.runfiles import PromptsStage, image_path
from .report.metrics import MetricRow
from .report.scorers import (
    Scorer,
    captioner_scorer,
    chat_scorer,
    clip_scorer,
    loop_from_traces,
    text_model_id,
)
from .resources import evaluation_vision, independent_captions, independent_judge
from .stage import Declaration, Item, Stage, StageReport
from .store import atomic_write_json, read_json, sha256_file

JUDGE = {"type": "object", "required": ["score", "reasons"],
         "properties": {"score": {"type": "integer", "minimum": 1, "maximum": 10},
                        "reasons": {"type": "string"}}}
CAPTION_METRICS = {"caption_score", "llm_judge"}


class EvaluateStage(PromptsStage, Stage):
    name = "evaluate"
    version = 2              # 2: scorer identities, the evaluation's own captioner and judge (issue 12)
    concurrency = 1

    @classmethod
    def declare(cls, cfg: Config) -> Declaration:
        metrics = set(cfg.evaluate.metrics)
        captions = bool(metrics & CAPTION_METRICS)
        asks = captions and evaluation_vision(cfg).backend != "classifier"
        backends = ((("clip",) if metrics & {"clipscore", "image_similarity"} else ())
                    + (("text",) if "caption_score" in metrics else ())
                    + ((cls.judge_backend(cfg),) if "llm_judge" in metrics else ())
                    + ((cls.vision_backend(cfg),) if captions else ()))
        # The Socratic settings reach an evaluation only through the key of the trace it reads
        # (inputs), which TraceReader checks with the socratic stage's own declared view. The
        # evaluation's own model choices are settings: "empty" and "the loop's model named
        # again" pick the same backend, and a rerun is cheaper than a doubt.
        return Declaration(
            config=("evaluate.metrics", "generate.seeds")
            + (("evaluate.judge_template", "evaluate.judge_model") if "llm_judge" in metrics else ())
            + (("evaluate.vision_backend", "evaluate.vision_model") if captions else ())
            + (("interrogate.template",) if asks else ()),
            backends=backends,
            operational=("evaluate.permutations", "interrogate.max_pixels"))

    @staticmethod
    def judge_backend(cfg: Config) -> str:
        return "judge" if independent_judge(cfg) else "chat"

    @staticmethod
    def vision_backend(cfg: Config) -> str:
        return "eval_vision" if independent_captions(cfg) else "vision"

    def prepare(self) -> None:
        self.metrics = self.cfg.evaluate.metrics
        self.judge = (self.load_template("evaluate.judge_template", {"prompt", "caption"})
                      if "llm_judge" in self.metrics else None)
        self.load_rows()
        self.traces = TraceReader(self.ctx)
        self.mixed: set[tuple[str, int]] = set()     # (prompt, seed) pairs left out by images()
        self.outdated: set[tuple[str, int]] = set()  # images of no longer current prompts

    async def start(self) -> None:
        await super().start()
        await self.traces.start()

    def out(self, item_id: str) -> Path:
        return self.ctx.run_dir / "eval" / f"{item_id}.json"

    # -- who scores ---------------------------------------------------------------------------
    def own_captions(self) -> bool:
        """True when the evaluation captions with the loop's captioner, whose round captions
        are then reused."""
        return self.vision_backend(self.ctx.cfg) == "vision"

    def scorers(self) -> dict[str, Scorer]:
        """Each metric's scorer: the label that goes into metrics.csv and the model identities
        the report checks against the loop's."""
        out: dict[str, Scorer] = {}
        for metric in self.metrics:
            if metric in ("clipscore", "image_similarity"):
                identity = self.backend("clip").identity()
                out[metric] = clip_scorer(identity["model"], identity.get("pretrained", "openai"))
                continue
            captions = captioner_scorer(self.backend(self.vision_backend(self.ctx.cfg)).identity())
            if metric == "caption_score":
                model = self.backend("text").identity()["model"]
                ident, label = text_model_id(model), f"text embeddings {model}"
            else:
                judge = chat_scorer(self.backend(self.judge_backend(self.ctx.cfg)).model_id, what="LLM judge")
                ident, label = judge.model, judge.label
            out[metric] = Scorer(ident, f"{label} on captions by {captions.label}", captioner=captions.model)
        return out

    # -- items ------------------------------------------------------------------------------
    def images(self, item: Item) -> list[tuple[str, int, Path, str]]:
        """(variant, seed, path, caption or '') of every image this prompt has; a round's
        caption is kept only when the evaluation captions with the loop's own captioner. An
        original and an upsampled image of one seed made with different generation settings
        (a generate run that failed half-way after a change) are both left out: their
        difference is not the prompt's alone."""
        out = []
        texts = self.upstream(item)
        for seed in self.cfg.generate.seeds:
            pair = [(variant, image_path(self.ctx.run_dir, item.id, variant, seed))
                    for variant in ("original", "upsampled")]
            pair = [(variant, path) for variant, path in pair if path.exists()]
            current = [(v, p) for v, p in pair
                       if texts.get(v) is not None and png_text(p, "prompt") == texts[v]]
            if len(current) < len(pair):
                self.outdated.add((item.id, seed))
            pair = current
            if len(pair) == 2 and len({made_with(path) for _, path in pair}) > 1:
                self.mixed.add((item.id, seed))
                continue
            out += [(variant, seed, path, "") for variant, path in pair]
        trace = self.traces.current(item)
        if trace:
            keep = self.own_captions()
            for i, it in enumerate(trace["iterations"]):
                out.append((f"iter{i:02d}", trace["seed"], self.ctx.run_dir / it["image"],
                            it["caption"] if keep else ""))
            best = trace["iterations"][trace["best"]]
            out.append(("best", trace["seed"], self.ctx.run_dir / best["image"],
                        best["caption"] if keep else ""))
            fresh = trace.get("fresh") or {}
            for variant in ("first", "best"):
                out += [(f"{variant}_fresh", seed, self.ctx.run_dir / rel, "")
                        for seed, rel in zip(fresh.get("seeds", []), fresh.get(variant, []), strict=True)]
        return out

    def upstream(self, item: Item) -> dict[str, str | None]:
        """The text each generated variant must have been made from to be scored: the prompt,
        and the current upsampled prompt (None when upsampled.jsonl has none for it now)."""
        up = self.up.get(item.id)
        return {"original": item.data["prompt"], "upsampled": up["upsampled"] if up else None}

    def reference(self, row: dict) -> Path | None:
        ref = row.get("reference")
        if not ref:
            return None
        path = Path(ref)
        return path if path.is_absolute() else self.cfg.source.resolve().parent / path

    def inputs(self, item: Item) -> dict:
        """The prompt, every image by its own key (with the loop's caption where one is used),
        the current trace's key, and the reference image by the hash of its bytes."""
        ref = self.reference(item.data)
        trace = self.traces.current(item)
        return {"prompt": item.data["prompt"],
                "images": [(v, s, png_key(p), c) for v, s, p, c in self.images(item)],
                "trace": trace.get("key") if trace else None,
                "reference": sha256_file(ref) if ref is not None and ref.exists() else None}

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
        pil = await asyncio.to_thread(lambda: [Image.open(p).convert("RGB") for _, _, p, _ in images])
        vision = self.vision_backend(self.ctx.cfg)
        needs_captions = bool(CAPTION_METRICS & set(self.metrics))
        captions = [c or (await describe(self, p, vision) if needs_captions else "")
                    for _, _, p, c in images]
        base = [{"id": row["id"], "category": row.get("category", ""), "variant": v, "seed": s}
                for v, s, _, _ in images]

        def rows_of(metric: str, values, notes=None) -> list[dict]:
            notes = notes or [""] * len(base)
            return [{**b, "metric": metric, "value": float(x), "scorer": scorers[metric].label, "note": n}
                    for b, x, n in zip(base, values, notes, strict=True)]

        rows: list[dict] = []
        if "clipscore" in self.metrics:
            scorer = self.backend("clip")
            rows += rows_of("clipscore", await asyncio.to_thread(
                scorer.clipscore, pil, [row["prompt"]] * len(pil)))
        ref = self.reference(row)
        if "image_similarity" in self.metrics and ref is not None and ref.exists():
            scorer = self.backend("clip")
            reference = await asyncio.to_thread(lambda: Image.open(ref).convert("RGB"))
            rows += rows_of("image_similarity", await asyncio.to_thread(
                scorer.image_similarity, pil, [reference] * len(pil)))
        if "caption_score" in self.metrics:
            embedder = self.backend("text")
            rows += rows_of("caption_score", await asyncio.to_thread(
                embedder.similarity, captions, [row["prompt"]] * len(captions)))
        if "llm_judge" in self.metrics:
            answers = await self._judge(row["prompt"], captions)
            rows += rows_of("llm_judge", [a.data["score"] for a in answers],
                            [str(a.data["reasons"])[:300] for a in answers])
        atomic_write_json(self.out(item.id), {"key": key, "rows": rows, "captions": captions})

    async def _judge(self, prompt: str, captions: list[str]) -> list:
        chat = self.backend(self.judge_backend(self.ctx.cfg))
        return await asyncio.gather(*(chat.chat(
            self.judge.render(prompt=prompt, caption=c), template_hash=self.judge.hash,
            schema=JUDGE, schema_name="rating") for c in captions))

    # -- reports ----------------------------------------------------------------------------
    def finish(self, report: StageReport) -> None:
        from .report.analysis import metric_dependence
        from .report.metrics import write_metrics_csv
        from .report.page import write_report_html
        from .report.plots import write_plots

        rows, stale = [], 0
        for prompt in self.rows:
            item = Item(prompt["id"], prompt)
            found = self.current_rows(item, self.key(item))
            if found is None:
                stale += self.out(item.id).exists()
                continue
            # the category is not an input (it changes no score): take the benchmark's current one
            rows += [MetricRow(**{**r, "category": prompt.get("category", "")}) for r in found]
        traces = self.traces.used()
        notes = [n for n in (
            f"{stale} per-prompt evaluation file(s) made from other inputs were left out" if stale else "",
            self.traces.stale_note(),
            f"{len(self.mixed)} original/upsampled pair(s) made with different generation settings "
            "were left out (run the generate stage to redo them)" if self.mixed else "",
            f"{len(self.outdated)} image(s) of a prompt no longer in prompts.jsonl or upsampled.jsonl "
            "(dropped or changed since) were left out (run the generate stage to redo them)"
            if self.outdated else "") if n]
        run_dir = self.ctx.run_dir
        scorers = self.scorers()
        write_metrics_csv(rows, run_dir / "metrics.csv")
        write_plots(run_dir, rows, traces=traces, evaluation=scorers,
                    resamples=self.cfg.evaluate.permutations)
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


def png_text(path: Path, field: str) -> str | None:
    """A text chunk of an image we wrote (its prompt, its backend identity), or None."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            return img.text.get(field) if hasattr(img, "text") else None
    except (OSError, SyntaxError, ValueError):
        return None


def made_with(path: Path) -> str | None:
    """The generation settings recorded in an image we wrote (the backend identity), or None."""
    return png_text(path, "backend")


class TraceReader:
    """Socratic traces, each used only when its key matches what the socratic stage would
    compute now: a trace from other settings describes another experiment. The socratic
    stage is built here with its own declared view, so its settings reach the evaluation only
    through the trace's key."""

    def __init__(self, ctx):
        from .socratic import SocraticStage

        self.ctx = ctx
        self.why_none = ""
        self.ready = False
        self.socratic: SocraticStage | None = SocraticStage(ctx)
        try:
            self.socratic.prepare()
        except ConfigError as exc:     # settings the loop cannot run with: no trace is current
            self.socratic, self.why_none = None, str(exc)
        self.stale: set[str] = set()
        self.current_ids: set[str] = set()
        self._cache: dict[str, dict | None] = {}

    async def start(self) -> None:
        """Resolve the loop's backend identities (its key names them) without loading models."""
        if self.socratic is None or not (self.ctx.run_dir / "socratic").is_dir():
            return
        try:
            await self.socratic.start()
            self.ready = True
        except (ConfigError, FatalError) as exc:
            self.socratic, self.why_none = None, str(exc)

    def current(self, item: Item) -> dict | None:
        if item.id in self._cache:
            return self._cache[item.id]
        try:
            trace = read_json(self.ctx.run_dir / "socratic" / f"{item.id}.json")
        except FileNotFoundError:
            trace = None
        except ValueError:
            trace = []                              # unreadable: counted below, never used
        if trace is not None and (not isinstance(trace, dict) or trace.get("best") is None
                                  or not trace.get("iterations")):
            self.stale.add(item.id)                 # unreadable, or unfinished (a loop stopped mid-way)
            trace = None
        elif trace is not None and not (self.ready and self.socratic.is_done(item, self.socratic.key(item))):
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
        why = (f" ({self.why_none})" if self.why_none
               else " (made with other settings, or unfinished; run the socratic stage to redo them)")
        return f"{len(self.stale)} stale Socratic trace(s) left out{why}"
