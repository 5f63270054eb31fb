"""HTML reports of a refine run, built only from the files in its folder.

- `compare.html`: original vs upsampled prompt and their images (every seed), by category;
  it links the images in `images/`, so it is meant to be opened inside the run folder.
- `report.html`: which models ran the Socratic loop and which evaluated, whether each
  metric is independent of the loop, summary tables with sign-flip tests and intervals
  (stages/report/analysis.py decides what may be coloured), the plots, and for each prompt its
  Socratic rounds with the chosen best marked.

Every piece of model or user text goes through `esc` (prompts are untrusted input: a prompt
may well contain markup).
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import re
from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import quote

from ..io.runfiles import prompts as read_prompts
from ..io.runfiles import upsampled as read_upsampled
from ..store import atomic_write_text
from .analysis import Comparison, LoopChoice, analyse, by_category, loop_choice, metric_dependence
from .metrics import (
    MetricRow,
    categories,
    iteration_index,
    metric_order,
    per_prompt,
    read_metrics_csv,
    read_traces,
    separate_scorers,
    stop_kind,
    variant_order,
    write_metrics_csv,
)
from .plots import TITLES, plot_plan, write_plots
from .scorers import LOOP_ROLES, ROLE_WORDS, Loop, Scorer, loop_from_traces, test_model
from .stats import APPROXIMATE, DEFAULT_RESAMPLES, TIE_TOL, PairedResult, mean_ci, min_pairs, number

__all__ = ["MetricRow", "read_metrics_csv", "write_metrics_csv", "write_plots", "write_compare_html",
           "write_report_html"]

IMAGE_NAME = re.compile(r"^(?P<variant>.+)-s(?P<seed>-?\d+)\.png$")

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px;color:#1d2127;
  max-width:1400px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #d0d7de}
h3{font-size:15px;margin:18px 0 6px}.meta{color:#57606a}
table{border-collapse:collapse;margin:6px 0 12px}th,td{border:1px solid #d0d7de;padding:4px 8px;
  text-align:left;vertical-align:top}th{background:#f6f8fa}td.num{text-align:right;
  font-variant-numeric:tabular-nums;white-space:nowrap}
.warn{background:#fff4e5;border:2px solid #d9480f;padding:10px 14px;border-radius:6px;margin:10px 0}
.banner{background:#fff0f0;border:2px solid #cf222e;padding:10px 14px;border-radius:6px;margin:10px 0}
.ok{background:#ebfbee;border:1px solid #2f9e44;padding:8px 12px;border-radius:6px;margin:10px 0}
tr.dep td{color:#8c959f;background:#f6f8fa}
.up{color:#1a7f37;font-weight:600}.down{color:#cf222e;font-weight:600}.small{font-size:12px;color:#57606a}
.prompt{border:1px solid #d0d7de;border-radius:8px;padding:10px 14px;margin:14px 0}
.strip{display:flex;gap:10px;overflow-x:auto;padding:4px 0}
.card{flex:0 0 270px;border:1px solid #d0d7de;border-radius:6px;padding:6px;font-size:12.5px;
  background:#fff}.card.best{border:3px solid #1f6feb;background:#f0f6ff}
.card img{display:block;width:256px;height:auto;margin:4px 0}
.cmp img{display:block;max-width:256px;height:auto}
.badge{display:inline-block;background:#1f6feb;color:#fff;border-radius:10px;padding:0 8px;
  font-size:11px;margin-left:6px}.label{color:#57606a;font-size:11px;text-transform:uppercase}
.text{white-space:pre-wrap;word-break:break-word}
table.cmp{width:100%;table-layout:fixed}.cmp td{width:50%}
.imgs{display:flex;flex-wrap:wrap;gap:8px}.imgs figure{margin:0}
figcaption{font-size:11px;color:#57606a}.plots img{max-width:100%;border:1px solid #d0d7de}
"""


def esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def link(rel: str) -> str:
    """A relative URL for a run-relative path, escaped for an attribute."""
    return esc(quote(rel))


def fmt(x: float, digits: int = 3, sign: bool = False) -> str:
    return number(x, sign=sign, digits=digits)


def page(title: str, body: Iterable[str]) -> str:
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{esc(title)}</title><style>{CSS}</style></head><body>\n"
            + "\n".join(body) + "\n</body></html>\n")


# Images in report.html are inline base64 JPEG thumbnails wrapped in a relative link to the
# full PNG: the page stays complete when it is mailed or moved alone (plain links would break),
# the full images open when it sits in its run folder, and at 256 px a thumbnail costs
# ~5-20 KB, so a few hundred rounds stay a few MB. compare.html only links (it shows every
# seed of every prompt and lives beside the images).
def thumbnail(path: Path, px: int = 256) -> str | None:
    """`data:` URL of a JPEG thumbnail, or None when the image cannot be read."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            im.thumbnail((px, px))
            buf = io.BytesIO()
            im.save(buf, format="JPEG", quality=78, optimize=True)
    except (OSError, UnidentifiedImageError, ValueError):
        return None
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def inline_png(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def run_images(run_dir: Path, prompt_id: str) -> dict[str, list[tuple[int, str]]]:
    """variant -> [(seed, run-relative path)] for images/ID/VARIANT-sSEED.png."""
    out: dict[str, list[tuple[int, str]]] = defaultdict(list)
    folder = run_dir / "images" / prompt_id
    for path in sorted(folder.glob("*.png")) if folder.is_dir() else []:
        m = IMAGE_NAME.match(path.name)
        if m:
            out[m["variant"]].append((int(m["seed"]), path.relative_to(run_dir).as_posix()))
    return {k: sorted(v) for k, v in out.items()}


# ---------------------------------------------------------------- compare.html

def _figure_links(images: list[tuple[int, str]], width: int = 256) -> str:
    if not images:
        return '<p class="small">no images yet</p>'
    figs = [f'<figure><a href="{link(rel)}"><img src="{link(rel)}" width="{width}" loading="lazy" '
            f'alt="seed {seed}"></a><figcaption>seed {seed}</figcaption></figure>' for seed, rel in images]
    return f'<div class="imgs">{"".join(figs)}</div>'


def _upsampled_cell(up: dict) -> str:
    """The chosen rewrite with its CLIP token count, and every candidate with its count.
    `clip_tokens` is one count per candidate (with `chosen` the index), or a single count."""
    cands = [str(c) for c in up.get("candidates") or []]
    counts = up.get("clip_tokens")
    per_cand = counts if isinstance(counts, list) and len(counts) == len(cands) else [None] * len(cands)
    chosen = up.get("chosen")
    if chosen is None and up.get("upsampled") in cands:
        chosen = cands.index(up["upsampled"])
    count = counts
    if isinstance(counts, list):
        count = per_cand[chosen] if isinstance(chosen, int) and 0 <= chosen < len(cands) else None
    over = ' <b class="down">over the limit: the encoder truncates it</b>' if up.get("over_limit") else ""
    tokens = (f'<div class="small">{esc(count)} CLIP tokens{over}</div>'
              if isinstance(count, int) else "")
    items = "".join(f'<li class="text">{esc(c)}' + (f" <span class=small>({esc(n)} tokens)</span>"
                                                     if n is not None else "")
                    + (" <b>← chosen</b>" if i == chosen else "") + "</li>"
                    for i, (c, n) in enumerate(zip(cands, per_cand, strict=True)))
    details = (f"<details><summary class=small>{len(cands)} candidates</summary><ol start=0>{items}</ol>"
               "</details>" if cands else "")
    return f'<div class="text">{esc(up.get("upsampled", ""))}</div>{tokens}{details}'


def _compare_block(run_dir: Path, row: dict, up: dict | None) -> str:
    images = run_images(run_dir, row["id"])
    right = _upsampled_cell(up) if up else '<p class="small">not upsampled yet</p>'
    return (f'<div class="prompt" id="{esc(row["id"])}"><h3>{esc(row["id"])}</h3>'
            '<table class="cmp"><tr><th>original</th><th>upsampled</th></tr>'
            f'<tr><td class="text">{esc(row.get("prompt", ""))}</td><td>{right}</td></tr>'
            f'<tr><td>{_figure_links(images.get("original", []))}</td>'
            f'<td>{_figure_links(images.get("upsampled", []))}</td></tr></table></div>')


def write_compare_html(run_dir: Path) -> Path:
    """`compare.html`: each prompt beside its upsampled version, with their images."""
    run_dir = Path(run_dir)
    ups = read_upsampled(run_dir)
    rows = read_prompts(run_dir) or [
        {"id": u["id"], "prompt": u.get("prompt", ""), "category": u.get("category", "")}
        for u in ups.values()]
    by_cat: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        by_cat[row.get("category") or ups.get(row["id"], {}).get("category") or "(none)"].append(row)
    body = [f"<h1>Original vs upsampled: {esc(run_dir.name)}</h1>",
            f'<p class="meta">{len(rows)} prompts in {len(by_cat)} categories; images of every seed '
            "(the same seeds for both prompts). Click an image for full size.</p>"]
    toc = " · ".join(f'<a href="#cat-{i}">{esc(c)}</a> ({len(by_cat[c])})'
                     for i, c in enumerate(sorted(by_cat)))
    body.append(f"<p>{toc}</p>")
    for i, cat in enumerate(sorted(by_cat)):
        body.append(f'<h2 id="cat-{i}">{esc(cat)}</h2>')
        body += [_compare_block(run_dir, row, ups.get(row["id"])) for row in by_cat[cat]]
    path = run_dir / "compare.html"
    atomic_write_text(path, page(f"compare {run_dir.name}", body))
    return path


# ---------------------------------------------------------------- report.html: summaries

def _test_model_banner(run_dir: Path, rows: list[MetricRow], evaluation: dict[str, Scorer],
                       sample: int = 40) -> list[str]:
    """A warning when the run's images come from a test model (generate.model = tiny: a random
    SDXL), read from the backend identity recorded in the PNGs (a sample of them); and one
    when a metric with values was scored by a test model (evaluate.clip_model = tiny: a random
    CLIP), whatever made the images."""
    from PIL import Image

    out = []
    folder = run_dir / "images"
    seen = 0
    for path in folder.rglob("*.png") if folder.is_dir() else []:
        if seen >= sample:
            break
        seen += 1
        try:
            with Image.open(path) as im:
                backend = json.loads(getattr(im, "text", {}).get("backend", "{}"))
        except (OSError, ValueError, SyntaxError):
            continue
        if isinstance(backend, dict) and str(backend.get("model", "")).startswith("tiny"):
            out.append('<div class="banner"><b>Test model: these images are noise.</b> They come from '
                       f"{esc(backend['model'])} (generate.model = tiny), a randomly initialised SDXL "
                       "built for tests and the offline demo. Every score, difference and colour on "
                       "this page measures noise, not the prompts.</div>")
            break
    scored = {r.metric for r in rows if math.isfinite(r.value)}
    tests = {m: why for m in metric_order(scored) if (why := test_model(evaluation.get(m)))}
    if tests:
        items = "".join(f"<li><b>{esc(m)}</b>: {esc(why)}</li>" for m, why in tests.items())
        out.append('<div class="banner"><b>Test model: some metrics are noise.</b> These were scored '
                   f"by a test model, so they say nothing about the prompts; they are never coloured "
                   f"(set evaluate.clip_model to a real CLIP, e.g. ViT-B-32):<ul>{items}</ul></div>")
    return out


def _scorer_rows(loop: Loop) -> list[str]:
    if not loop.traces:
        return ["<p>No current Socratic traces: nothing picked a best round.</p>"]
    lines = ["<table><tr><th>part of the Socratic loop</th><th>model (as recorded in the traces)</th></tr>"]
    for role in LOOP_ROLES:
        scorers = getattr(loop, role)
        names = "; ".join(s.label for s in scorers) or "not recorded"
        lines.append(f"<tr><td>{esc(ROLE_WORDS[role])}</td><td>{esc(names)}</td></tr>")
    lines.append("</table>")
    if loop.unrecorded:
        lines.append(f"<p class=small>{loop.unrecorded} of {loop.traces} traces do not record every "
                     "model (written by an older version): every metric counts as not independent.</p>")
    return lines


def _scorer_section(rows: list[MetricRow], evaluation: dict[str, Scorer], loop: Loop) -> list[str]:
    recorded: dict[str, set[str]] = defaultdict(set)
    for r in rows:
        if math.isfinite(r.value):
            recorded[r.metric].add(r.scorer)
    empty = [m for m in metric_order(evaluation) if m not in recorded]
    lines = ["<h2>Scorers</h2>", "<h3>The Socratic loop</h3>", *_scorer_rows(loop),
             "<h3>Evaluation</h3><table><tr><th>metric</th><th>scored by</th><th>reads captions by</th>"
             "<th>scorer in metrics.csv</th><th>independent of the loop</th></tr>"]
    dependent: dict[str, list[str]] = {}
    for m in metric_order(recorded):
        scorer = evaluation.get(m)
        reasons = metric_dependence(m, evaluation, loop)
        if reasons:
            dependent[m] = reasons
        verdict = ("–" if not loop.traces else "no: " + "; ".join(reasons) if reasons else "yes")
        lines.append(f"<tr><td>{esc(m)}</td><td>{esc(scorer.label if scorer else '–')}</td>"
                     f"<td>{esc(scorer.captioner if scorer and scorer.captioner else '–')}</td>"
                     f"<td>{esc(', '.join(sorted(recorded.get(m, []))) or '–')}</td>"
                     f"<td>{esc(verdict)}</td></tr>")
    lines.append("</table>")
    if empty:
        lines.append(f"<p class=small>Asked for but without any value, so left out of every table: "
                     f"{esc(', '.join(empty))} (image_similarity needs reference images).</p>")
    if dependent:
        independent = [m for m in metric_order(recorded) if m not in dependent]
        advice = (f"Judge the loop by {', '.join(independent)} only." if independent else
                  "No metric here is independent: give the evaluation models the loop does not use "
                  "(socratic.clip_model or evaluate.clip_model, evaluate.judge_model, "
                  "evaluate.vision_backend / evaluate.vision_model).")
        items = "".join(f"<li><b>{esc(m)}</b>: {esc('; '.join(why))}</li>" for m, why in dependent.items())
        lines.append('<div class="warn"><b>WARNING: metrics not independent of the Socratic loop.</b> '
                     "The loop stopped on, or picked for, what these metrics see, so best − first and "
                     "the round curves on them lean upward even when nothing improved; they are "
                     f"shown greyed and never coloured.<ul>{items}</ul>{esc(advice)}</div>")
    elif loop.traces:
        lines.append('<div class="ok">Every metric is independent of the Socratic loop: no model '
                     "or caption is shared with its captioner, judge or selector.</div>")
    return lines


def _variant_table(rows: list[MetricRow]) -> list[str]:
    variants = variant_order(r.variant for r in rows)
    metrics = metric_order(r.metric for r in rows if math.isfinite(r.value))
    head = "".join(f"<th>{esc(v)}</th>" for v in variants)
    lines = ["<h3>Mean score by variant (95% t-interval over prompts; descriptive, not a test)</h3>",
             f"<table><tr><th>metric</th>{head}</tr>"]
    for m in metrics:
        cells = []
        for v in variants:
            s = mean_ci(list(per_prompt(rows, m, v).values()))
            ci = (f"<br><span class=small>[{fmt(s.ci_low)}, {fmt(s.ci_high)}] n={s.n}</span>"
                  if s.n > 1 else f"<br><span class=small>n={s.n}</span>" if s.n else "")
            cells.append(f'<td class="num">{fmt(s.mean)}{ci}</td>')
        lines.append(f"<tr><td>{esc(m)}</td>{''.join(cells)}</tr>")
    lines.append("</table>")
    return lines


def _share(res: PairedResult, count: int) -> str:
    return f"{count} ({100 * res.share(count):.0f}%)"


def _interval(res: PairedResult) -> str:
    """The median's interval, said honestly: unbounded below 6 pairs, "not estimable" when
    every difference is the same, and a zero-width interval named as such."""
    if res.n == 0:
        return "–"
    if not res.estimable:
        return (f"not estimable: all {res.n} differences are {fmt(res.median_diff, sign=True)} "
                "(no spread)" if res.n > 1 else "not estimable: one pair")
    if not res.bounded:
        return f"unbounded (n &lt; {min_pairs()})"
    text = f"[{fmt(res.ci_low, sign=True)}, {fmt(res.ci_high, sign=True)}]"
    if res.ci_low == res.ci_high:
        text += ("<br><span class=small>zero width: the median sits on a tied value; not "
                 "certainty</span>")
    return text


def _mean_cell(res: PairedResult) -> str:
    if res.n == 0:
        return "–"
    ci = (f"[{fmt(res.mean_low, sign=True)}, {fmt(res.mean_high, sign=True)}]"
          if math.isfinite(res.mean_low) else "interval not estimable")
    return f"{fmt(res.mean_diff, sign=True)}<br><span class=small>{ci}</span>"


def _p(x: float) -> str:
    if not math.isfinite(x):
        return "–"
    return "&lt;0.001" if x < 0.001 else f"{x:.3f}"


def _n_cell(res: PairedResult, of: int) -> str:
    out = f"{res.n} of {of}" if of > res.n else f"{res.n}"
    return out + f"<br><span class=small>{res.n_eff} untied</span>"


def _diff_note(c: Comparison) -> str:
    res = c.result
    if not c.eligible:
        why = [f"scored by a test model ({c.test_model})"] if c.test_model else []
        if c.not_independent:
            why.append("not independent of the loop: " + "; ".join(c.not_independent))
        return "; ".join(why) + "; never coloured"
    if res.n_eff < min_pairs():
        return f"{res.n_eff} untied prompt(s): fewer than {min_pairs()}, so no test can reach 5%"
    if math.isfinite(c.holm_p) and c.holm_p <= 0.05 and not c.flag:
        return "the sign test rejects, but the median interval includes 0 (ties): not coloured"
    return ""


def _diff_row(c: Comparison, of: int) -> str:
    res = c.result
    cls = ' class="dep"' if not c.eligible else ""
    return (f"<tr{cls}><td>{esc(c.metric)}</td><td>{esc(c.label)}</td><td class=\"num\">"
            f"{_n_cell(res, of)}</td>"
            f'<td class="num {c.flag}">{fmt(res.median_diff, sign=True)}</td>'
            f'<td class="num">{_interval(res)}</td>'
            f'<td class="num">{_share(res, res.helped)}</td><td class="num">{_share(res, res.hurt)}</td>'
            f'<td class="num">{_share(res, res.tied)}</td>'
            f'<td class="num">{_p(res.p_value)}</td><td class="num">{_p(c.holm_p)}</td>'
            f'<td class="num">{_mean_cell(res)}</td><td class="small">{esc(_diff_note(c))}</td></tr>')


DIFF_HEAD = ("<th>n prompts</th><th>median diff</th><th>95% interval of the median</th>"
             "<th>helped</th><th>hurt</th><th>tied</th><th>sign test p</th><th>Holm p</th>"
             f"<th>mean diff<br><span class=small>({APPROXIMATE})</span></th><th>note</th>")


def _method_note(comps: list[Comparison], n_category: int) -> str:
    family = sum(c.eligible for c in comps)
    return (f'<p class="small">Later minus earlier, per prompt (seeds averaged first). Helped and '
            f"hurt count prompts; a difference within {TIE_TOL:g} is a tie, in the test and the "
            "interval alike. The test is an exact sign test of helped against hurt (ties dropped; "
            "\"untied\" is the n it uses); the interval is the exact order-statistic interval of the "
            "median difference (at least 95% for any shape of differences). Both hold at any n; "
            f"below {min_pairs()} untied prompts nothing can reach 5%. The mean difference is a "
            f"description, its bootstrap-t interval {APPROXIMATE}, and it is never coloured. This "
            f"page makes {len(comps)} headline comparison(s); the {family} independent of the loop "
            "and not scored by a test model form one family, Holm-adjusted, and a median "
            "difference is coloured (green up, red down) only when its Holm p ≤ 0.05 and its "
            "interval is on the same side of 0. Greyed rows (not independent of the loop, or "
            "scored by a test model) are never coloured. The "
            f"{n_category} per-category comparison(s) below are exploratory: not adjusted, never "
            "coloured.</p>")


def _loop_note(choice: LoopChoice, comps: list[Comparison], total: int = 0) -> str:
    """How many prompts give a best − first pair; said plainly when none does, and how many
    prompts of the run have no finished loop (failed, unfinished or stale)."""
    if not choice.loops:
        return ""
    fresh = any(c.a == "first_fresh" for c in comps)
    lost = (f" {total - choice.loops} of {total} prompts have no finished Socratic loop "
            "(failed, unfinished or stale: see the socratic stage's summary) and are not counted."
            if total > choice.loops else "")
    if choice.moved == 0:
        return (f"<p><b>best − first: 0 informative pairs.</b> All {choice.loops} loops chose round 0 "
                f"as best, so the chosen prompt is the first prompt and there is nothing to compare."
                f"{lost}</p>")
    how = ("both rendered again with seeds that took no part in selection or stopping"
           if fresh else "but none has scored fresh renders: socratic.fresh_seeds = 0 makes none, so "
           "best − first is not compared; set it to 2 or more and run the socratic and evaluate "
           "stages")
    return (f"<p>best − first: {choice.moved} of {choice.loops} loops chose a round other than "
            f"round 0; those prompts are the pairs ({how}).{lost}</p>")


def _upsample_note(rows: list[MetricRow], total: int) -> str:
    """How many prompts have an upsampled image scored beside the original, when not all."""
    have = {r.id for r in rows if r.variant == "upsampled" and math.isfinite(r.value)}
    if not total or len(have) >= total:
        return ""
    return (f"<p>upsampled − original: {len(have)} of {total} prompts have an upsampled image "
            f"scored; {total - len(have)} failed or are unfinished (see the upsample and generate "
            "stages' summaries).</p>")


def _paired_tables(rows: list[MetricRow], comps: list[Comparison], resamples: int,
                   total: int, choice: LoopChoice) -> list[str]:
    loop = _loop_note(choice, comps, total) + _upsample_note(rows, total)
    if not comps:
        return ["<h3>Paired differences</h3><p>No prompt has both variants of a comparison "
                "(original/upsampled, or first/best on fresh seeds) scored on the same seed.</p>", loop]
    cats = by_category(rows, comps, resamples=resamples)
    n_category = sum(cell is not None and cell.n > 0 for cells in cats.values() for cell in cells)
    lines = ["<h3>Paired differences (headline)</h3>", loop,
             f"<table><tr><th>metric</th><th>comparison</th>{DIFF_HEAD}</tr>",
             *(_diff_row(c, choice.moved if c.a == "first_fresh" else total) for c in comps),
             "</table>", _method_note(comps, n_category)]
    return lines + _category_table(comps, cats)


def _diff_compact(res: PairedResult | None) -> str:
    """One cell of the per-category table: the median difference, its interval, n and counts."""
    if res is None or not res.n:
        return '<td class="num">–</td>'
    return (f'<td class="num">{fmt(res.median_diff, sign=True)}<br><span class="small">{_interval(res)}'
            f"<br>n={res.n}: {res.helped}↑ {res.hurt}↓ {res.tied}=</span></td>")


def _category_table(comps: list[Comparison], cats: dict[str, list[PairedResult | None]]) -> list[str]:
    groups: dict[str, list[Comparison]] = defaultdict(list)
    for c in comps:
        groups[c.label].append(c)
    top = "".join(f'<th colspan="{len(cs)}">{esc(label)}</th>' for label, cs in groups.items())
    sub = "".join(f"<th>{esc(c.metric)}{' (not independent)' if c.not_independent else ''}</th>"
                  for cs in groups.values() for c in cs)
    lines = ["<h3>Paired differences by category (exploratory: unadjusted, never coloured)</h3>",
             f'<table><tr><th rowspan="2">category</th>{top}</tr><tr>{sub}</tr>']
    order = [comps.index(c) for cs in groups.values() for c in cs]
    for cat, cells in cats.items():
        lines.append(f"<tr><td>{esc(cat or '(none)')}</td>"
                     + "".join(_diff_compact(cells[k]) for k in order) + "</tr>")
    return lines + ["</table>"]


def _plots_section(run_dir: Path, rows: list[MetricRow], traces: list[dict]) -> list[str]:
    lines = ['<h2>Plots</h2><div class="plots">']
    for name, reason in plot_plan(rows, traces).items():
        path = run_dir / "plots" / name
        if reason:
            lines.append(f"<p><b>{esc(TITLES[name])}</b>: not drawn: {esc(reason)}.</p>")
        elif not path.is_file():
            lines.append(f"<p><b>{esc(TITLES[name])}</b>: not drawn yet (write_plots was not run).</p>")
        else:
            rel = f"plots/{name}"
            lines.append(f'<h3>{esc(TITLES[name])}</h3><a href="{link(rel)}">'
                         f'<img src="{inline_png(path)}" alt="{esc(TITLES[name])}"></a>')
    return lines + ["</div>"]


# ---------------------------------------------------------------- report.html: per prompt

def _scores_by_prompt(rows: list[MetricRow]) -> dict[str, dict[str, dict[str, list[MetricRow]]]]:
    """id -> variant -> metric -> rows."""
    out: dict = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    for r in rows:
        out[r.id][r.variant][r.metric].append(r)
    return out


def _score_list(trace_scores: dict, metric_rows: dict[str, list[MetricRow]]) -> str:
    items = [f"{esc(k)}: {fmt(float(v))}" for k, v in (trace_scores or {}).items()
             if isinstance(v, (int, float))]
    for m in metric_order(metric_rows):
        vals = [r.value for r in metric_rows[m] if math.isfinite(r.value)]
        if vals:
            notes = "; ".join(r.note for r in metric_rows[m] if r.note)
            tip = f' title="{esc(notes)}"' if notes else ""
            items.append(f"<span{tip}>{esc(m)}: {fmt(sum(vals) / len(vals))}</span>")
    return "<br>".join(items) or "–"


def _card(run_dir: Path, index: int, it: dict, is_best: bool, metric_rows: dict, px: int) -> str:
    rel = str(it.get("image", ""))
    path = run_dir / rel
    data = thumbnail(path, px) if rel else None
    img = (f'<img src="{data}" alt="round {index}">' if data else
           f'<p class="small">image missing: {esc(rel)}</p>')
    if data and rel and not Path(rel).is_absolute() and ".." not in Path(rel).parts:
        img = f'<a href="{link(Path(rel).as_posix())}">{img}</a>'
    v = it.get("verdict") or {}
    missing = ", ".join(str(x) for x in v.get("missing") or []) or "nothing"
    badge = '<span class="badge">BEST</span>' if is_best else ""
    parts = [("prompt", f'<div class="text">{esc(it.get("prompt", ""))}</div>'),
             ("caption of the image", f'<div class="text">{esc(it.get("caption", ""))}</div>'),
             ("verdict", f'<div>matches: <b>{"yes" if v.get("matches") else "no"}</b>; '
                         f"missing: {esc(missing)}</div>"),
             ("revised prompt", f'<div class="text">{esc(v.get("revised_prompt", ""))}</div>'
                                + (f'<div class="down">rejected: {esc(v["rejected"])}</div>'
                                   if v.get("rejected") else "")
                                + (f'<div class="small">composed by the pipeline, not the judge: '
                                   f'{esc(v.get("composed_why", ""))}</div>'
                                   if v.get("revised_by") == "composed" else "")
                                + (f'<div class="small">{esc(v["overruled"])}: not a match</div>'
                                   if v.get("overruled") else "")),
             ("scores", f"<div>{_score_list(it.get('scores'), metric_rows)}</div>")]
    body = "".join(f'<div class="label">{label}</div>{html_}' for label, html_ in parts)
    return f'<div class="card{" best" if is_best else ""}"><b>round {index}</b>{badge}{img}{body}</div>'


def _prompt_block(run_dir: Path, pid: str, text: str, category: str, trace: dict | None,
                  scores: dict, px: int) -> str:
    side = (f' · <a href="compare.html#{link(pid)}">original vs upsampled</a>'
            if (run_dir / "compare.html").is_file() else "")
    head = (f'<div class="prompt" id="p-{esc(pid)}"><h3>{esc(pid)} <span class="small">{esc(category)}'
            f'{side}</span></h3><div class="text">{esc(text)}</div>')
    variants = variant_order(v for v in scores if iteration_index(v) is None)
    summary = ""
    if variants:
        metrics = metric_order({m for v in variants for m in scores[v]})
        cells = "".join(f"<th>{esc(v)}</th>" for v in variants)
        body = "".join(f"<tr><td>{esc(m)}</td>" + "".join(
            f'<td class="num">{fmt(_mean(scores[v].get(m, [])))}</td>' for v in variants) + "</tr>"
            for m in metrics)
        summary = f'<table class="small"><tr><th></th>{cells}</tr>{body}</table>'
    if not trace or not trace.get("iterations"):
        return head + summary + '<p class="small">no Socratic rounds</p></div>'
    its, best = trace["iterations"], trace.get("best")
    selection = trace.get("selection") or {}
    why = selection.get("why", "")
    by = (selection.get("scorer") or {}).get("label") if isinstance(selection.get("scorer"), dict) else ""
    why = f"{why} (picked by {by})" if why and by else why
    stop = (f'<p class="small">{len(its)} round(s); stopped: {esc(stop_kind(trace))}'
            + (f" ({esc(trace['stop_reason'])})" if trace.get("stop_reason") else "")
            + (f"; best = round {esc(best)}" + (f", {esc(why)}" if why else "") if best is not None
               else "; no best chosen yet") + "</p>")
    cards = "".join(_card(run_dir, i, it, i == best, scores.get(f"iter{i:02d}", {}), px)
                    for i, it in enumerate(its))
    return head + stop + summary + f'<div class="strip">{cards}</div></div>'


def _mean(rows: list[MetricRow]) -> float:
    vals = [r.value for r in rows if math.isfinite(r.value)]
    return sum(vals) / len(vals) if vals else math.nan


def _prompt_sections(run_dir: Path, rows: list[MetricRow], px: int, traces: list[dict],
                     bad: list[str]) -> list[str]:
    by_id = {str(t.get("id")): t for t in traces}
    meta = {r["id"]: r for r in read_prompts(run_dir)}
    cat_of = categories(rows)
    ids = list(meta) + sorted((set(by_id) | set(cat_of)) - set(meta))
    scores = _scores_by_prompt(rows)
    groups: dict[str, list[str]] = defaultdict(list)
    for pid in ids:
        cat = meta.get(pid, {}).get("category") or by_id.get(pid, {}).get("category") or cat_of.get(pid)
        groups[cat or "(none)"].append(pid)
    lines = ["<h2>Prompts</h2>"]
    if bad:
        lines.append("<p class=warn>Unreadable Socratic traces: " + esc("; ".join(bad)) + "</p>")
    for cat in sorted(groups):
        lines.append(f"<h3>Category: {esc(cat)} ({len(groups[cat])})</h3>")
        for pid in groups[cat]:
            text = meta.get(pid, {}).get("prompt") or by_id.get(pid, {}).get("prompt", "")
            lines.append(_prompt_block(run_dir, pid, text, cat, by_id.get(pid), scores.get(pid, {}), px))
    return lines


def write_report_html(run_dir: Path, rows: list[MetricRow], *, evaluation: dict[str, Scorer],
                      traces: list[dict] | None = None, notes: Iterable[str] = (), thumb_px: int = 256,
                      resamples: int = DEFAULT_RESAMPLES) -> Path:
    """`report.html`: scorers, summary tables, plots and every prompt's Socratic rounds.

    `evaluation` names the scorer of each metric; `traces` are the current Socratic traces
    (default: every readable trace in the run folder); `notes` are shown at the top (e.g.
    which files were left out as stale)."""
    run_dir = Path(run_dir)
    rows = separate_scorers(rows)
    bad: list[str] = []
    if traces is None:
        traces, bad = read_traces(run_dir)
    loop = loop_from_traces(traces)
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    scored = {r.id for r in rows if math.isfinite(r.value)}
    total = len({str(p["id"]) for p in read_prompts(run_dir)} | scored)
    compare = ' Side by side prompts and images: <a href="compare.html">compare.html</a>.' \
        if (run_dir / "compare.html").exists() else ""
    unscored = (f" ({total - len(scored)} without any score: failed or unfinished)"
                if total > len(scored) else "")
    body = [f"<h1>Refine run: {esc(run_dir.name)}</h1>", *_test_model_banner(run_dir, rows, evaluation),
            f'<p class="meta">{total} prompts in the run, {len(scored)} scored{unscored}; '
            f"{len(rows)} metric rows; written {when}.{compare}</p>",
            *(f'<p class="meta">{esc(n)}</p>' for n in notes)]
    body += _scorer_section(rows, evaluation, loop)
    body.append("<h2>Summary</h2>")
    if rows:
        comps = analyse(rows, evaluation, loop, resamples=resamples)
        body += _variant_table(rows) + _paired_tables(rows, comps, resamples, total,
                                                      loop_choice(traces))
    else:
        body.append("<p>No metric rows: run the evaluate stage.</p>")
    body += _plots_section(run_dir, rows, traces)
    body += _prompt_sections(run_dir, rows, thumb_px, traces, bad)
    path = run_dir / "report.html"
    atomic_write_text(path, page(f"report {run_dir.name}", body))
    return path
