"""Evaluate stage: score every image of a run against its prompt, then write the reports.

Metrics (each optional, `evaluate.metrics`):
- clipscore: 2.5 * max(cos, 0) between the image and the original prompt (CLIP).
- image_similarity: CLIP image-image cosine to the benchmark's reference image, when the
  benchmark has one (rows without a reference get no value, not a zero).
- caption_score: sentence-embedding cosine between the vision backend's caption of the
  image and the prompt.
- llm_judge: the LLM's 1-10 rating of how well the caption fits the prompt (text-only: the
  judge sees the caption, not the pixels), with its reasons.
Variants: original, upsampled (per seed), iterNN and best from the Socratic trace.
Per-prompt results go to `runs/RUN/eval/ID.json`; `metrics.csv`, `plots/` and
`report.html` are rebuilt from them at the end.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from .config import Config
from .describe import describe
from .generate import png_key
from .runfiles import PromptsStage, image_path
from .stage import Declaration, Item, Stage, StageReport
from .store import atomic_write_json, read_json, sha256_file

JUDGE = {"type": "object", "required": ["score", "reasons"],
         "properties": {"score": {"type": "integer", "minimum": 1, "maximum": 10},
                        "reasons": {"type": "string"}}}


def short(identity: dict) -> str:
    return str(identity.get("model") or identity.get("name") or identity)


class EvaluateStage(PromptsStage, Stage):
    name = "evaluate"
    concurrency = 1

    @classmethod
    def declare(cls, cfg: Config) -> Declaration:
        metrics = set(cfg.evaluate.metrics)
        captions = bool(metrics & {"caption_score", "llm_judge"})
        asks = captions and cfg.vision.backend != "classifier"
        backends = ((("clip",) if metrics & {"clipscore", "image_similarity"} else ())
                    + (("text",) if "caption_score" in metrics else ())
                    + (("chat",) if "llm_judge" in metrics else ())
                    + (("vision",) if captions else ()))
        return Declaration(
            config=("evaluate.metrics", "generate.seeds")
            + (("evaluate.judge_template",) if "llm_judge" in metrics else ())
            + (("interrogate.template",) if asks else ()),
            backends=backends,
            operational=("evaluate.bootstrap", "interrogate.max_pixels", "socratic.select",
                         "evaluate.clip_model", "evaluate.text_model", "vision.model", "llm.model"))

    def prepare(self) -> None:
        self.metrics = self.cfg.evaluate.metrics
        self.judge = (self.load_template("evaluate.judge_template", {"prompt", "caption"})
                      if "llm_judge" in self.metrics else None)
        self.load_rows()

    def out(self, item_id: str) -> Path:
        return self.ctx.run_dir / "eval" / f"{item_id}.json"

    def trace(self, item_id: str) -> dict | None:
        try:
            trace = read_json(self.ctx.run_dir / "socratic" / f"{item_id}.json")
        except (FileNotFoundError, ValueError):
            return None
        return trace if trace.get("best") is not None else None

    def images(self, item: Item) -> list[tuple[str, int, Path, str]]:
        """(variant, seed, path, caption or '') of every image this prompt has."""
        out = []
        for seed in self.cfg.generate.seeds:
            for variant in ("original", "upsampled"):
                path = image_path(self.ctx.run_dir, item.id, variant, seed)
                if path.exists():
                    out.append((variant, seed, path, ""))
        trace = self.trace(item.id)
        if trace:
            for i, it in enumerate(trace["iterations"]):
                path = self.ctx.run_dir / it["image"]
                out.append((f"iter{i:02d}", trace["seed"], path, it["caption"]))
            best = trace["iterations"][trace["best"]]
            out.append(("best", trace["seed"], self.ctx.run_dir / best["image"], best["caption"]))
        return out

    def reference(self, row: dict) -> Path | None:
        ref = row.get("reference")
        if not ref:
            return None
        path = Path(ref)
        return path if path.is_absolute() else self.cfg.source.resolve().parent / path

    def inputs(self, item: Item) -> dict:
        """The prompt, every image by its own key (with the loop's caption where one is used),
        and the reference image by the hash of its bytes."""
        ref = self.reference(item.data)
        return {"prompt": item.data["prompt"],
                "images": [(v, s, png_key(p), c) for v, s, p, c in self.images(item)],
                "reference": sha256_file(ref) if ref is not None and ref.exists() else None}

    def is_done(self, item: Item, key: str) -> bool:
        try:
            return read_json(self.out(item.id)).get("key") == key
        except (FileNotFoundError, ValueError):
            return False

    async def process(self, item: Item, key: str) -> None:
        from PIL import Image

        row = item.data
        images = self.images(item)
        if not images:
            atomic_write_json(self.out(item.id), {"key": key, "rows": [], "note": "no images"})
            return
        pil = [Image.open(p).convert("RGB") for _, _, p, _ in images]
        wants_captions = bool({"caption_score", "llm_judge"} & set(self.metrics))
        captions = [c or await describe(self, p) if wants_captions else c for _, _, p, c in images]
        base = [{"id": row["id"], "category": row.get("category", ""), "variant": v, "seed": s}
                for v, s, _, _ in images]
        rows: list[dict] = []
        if "clipscore" in self.metrics:
            scorer = self.backend("clip")
            values = await asyncio.to_thread(scorer.clipscore, pil, [row["prompt"]] * len(pil))
            rows += [{**b, "metric": "clipscore", "value": float(x), "scorer": short(scorer.identity())}
                     for b, x in zip(base, values, strict=True)]
        ref = self.reference(row)
        if "image_similarity" in self.metrics and ref is not None and ref.exists():
            scorer = self.backend("clip")
            reference = Image.open(ref).convert("RGB")
            values = await asyncio.to_thread(scorer.image_similarity, pil, [reference] * len(pil))
            rows += [{**b, "metric": "image_similarity", "value": float(x),
                      "scorer": short(scorer.identity())} for b, x in zip(base, values, strict=True)]
        if "caption_score" in self.metrics:
            embedder = self.backend("text")
            values = await asyncio.to_thread(embedder.similarity, captions,
                                             [row["prompt"]] * len(captions))
            rows += [{**b, "metric": "caption_score", "value": float(x),
                      "scorer": short(embedder.identity())} for b, x in zip(base, values, strict=True)]
        if "llm_judge" in self.metrics:
            rows += await self._judge(row["prompt"], base, captions)
        atomic_write_json(self.out(item.id), {"key": key, "rows": rows, "captions": captions})

    async def _judge(self, prompt: str, base: list[dict], captions: list[str]) -> list[dict]:
        chat = self.backend("chat")
        answers = await asyncio.gather(*(chat.chat(
            self.judge.render(prompt=prompt, caption=c), template_hash=self.judge.hash,
            schema=JUDGE, schema_name="rating") for c in captions))
        return [{**b, "metric": "llm_judge", "value": float(a.data["score"]),
                 "scorer": short(chat.identity()), "note": str(a.data["reasons"])[:300]}
                for b, a in zip(base, answers, strict=True)]

    def scorers(self) -> tuple[str, dict[str, str]]:
        e = self.cfg.evaluate
        names = {"clipscore": f"CLIP {e.clip_model}", "image_similarity": f"CLIP {e.clip_model}",
                 "caption_score": f"text embeddings {e.text_model}",
                 "llm_judge": f"LLM judge {self.cfg.llm.model}"}
        s = self.cfg.socratic
        selection = (f"CLIP {e.clip_model}" if s.select == "clip"
                     else f"vision-language judge {self.cfg.vision.model or self.cfg.llm.model}")
        return selection, {m: names[m] for m in e.metrics}

    def finish(self, report: StageReport) -> None:
        from .report import MetricRow, write_metrics_csv, write_plots, write_report_html

        rows = []
        for prompt in self.rows:
            try:
                rows += [MetricRow(**r) for r in read_json(self.out(prompt["id"]))["rows"]]
            except (FileNotFoundError, ValueError, KeyError):
                continue
        run_dir = self.ctx.run_dir
        write_metrics_csv(rows, run_dir / "metrics.csv")
        write_plots(run_dir, rows)
        selection, evaluation = self.scorers()
        page = write_report_html(run_dir, rows, selection_scorer=selection,
                                 evaluation_scorers=evaluation)
        report.note = f"report: {page}"
        if selection in evaluation.values():
            warning = (f"warning: {selection} both selected the best image and evaluated it; "
                       "best-vs-first on that metric is biased upward")
            report.note += "; " + warning
            if not self.ctx.options.quiet:
                print(warning, file=sys.stderr)
