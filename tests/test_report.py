"""Reports of a refine run: metrics.csv, compare.html, report.html and plots, built from a
synthetic run folder (real small PNGs, Socratic traces, metric rows)."""

from __future__ import annotations

import html
import json
import math
import re
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pytest
from PIL import Image

from stages.report.analysis import analyse, round_curve
from stages.report.metrics import paired, separate_scorers, variant_order
from stages.report.page import (
    MetricRow,
    read_metrics_csv,
    write_compare_html,
    write_metrics_csv,
    write_plots,
    write_report_html,
)
from stages.report.plots import holm_text
from stages.report.scorers import Scorer, clip_scorer, loop_from_traces

XSS = "<script>alert(1)</script> a cat <img src=x onerror=alert(2)>"
PHOTOS = ("chelsea", "coffee", "rocket", "astronaut", "camera", "coins")
PROMPTS = [("p0", "Colors", XSS), ("p1", "Colors", "a red cup of coffee on a blue table"),
           ("p2", "Counting", "three rockets on a launch pad"), ("p3", "Counting", "two astronauts"),
           ("p4", "Text", 'a sign that says "OPEN" & <b>bold</b>'), ("p5", "Text", "a coin with a 5 on it")]
SEEDS = (0, 1)
CLIP = clip_scorer("ViT-B-32")
TINY_CLIP = clip_scorer("tiny")      # the random test CLIP (evaluate.clip_model's default)
TEXT = Scorer("text:all-MiniLM-L6-v2", "text embeddings all-MiniLM-L6-v2",
              captioner="classifier:efficientnet-lite0")
EVALUATION = {"clipscore": CLIP, "caption_score": TEXT}
LOOP = {"captioner": {"model": "classifier:efficientnet-lite0", "label": "classifier efficientnet-lite0",
                      "role": "captioner"},
        "judge": {"model": "llm:judge-model", "label": "LLM judge-model", "role": "judge"}}


def photo(name: str, px: int = 96, shift: int = 0) -> Image.Image:
    from skimage import data

    arr = getattr(data, name)()
    im = Image.fromarray(arr).convert("RGB").resize((px, px))
    return Image.fromarray(np.roll(np.asarray(im), shift * 7, axis=1))


def make_run(root: Path, *, rounds: int = 3, socratic: bool = True, upsample: bool = True) -> Path:
    """A run folder as the stages leave it; returns it. Scores are seeded and plausible."""
    run = root / "runs" / "demo"
    rng = np.random.default_rng(7)
    rows: list[MetricRow] = []
    (run / "socratic").mkdir(parents=True)
    with open(run / "prompts.jsonl", "w", encoding="utf-8") as fh:
        for pid, cat, text in PROMPTS:
            fh.write(json.dumps({"id": pid, "prompt": text, "category": cat}) + "\n")
    with open(run / "upsampled.jsonl", "w", encoding="utf-8") as fh:
        for k, (pid, cat, text) in enumerate(PROMPTS):
            cands = [f"{text} <u>x</u>", f"{text}, detailed <i>photo</i>"]
            # the upsample stage's form (a count per candidate) and the plain single count
            tokens = {"clip_tokens": [90, 21], "chosen": 1, "over_limit": False} if k % 2 else \
                {"clip_tokens": 21}
            fh.write(json.dumps({"id": pid, "prompt": text, "upsampled": cands[1], "candidates": cands,
                                 "category": cat, **tokens}) + "\n")
    for k, (pid, cat, text) in enumerate(PROMPTS):
        name = PHOTOS[k % len(PHOTOS)]
        (run / "images" / pid).mkdir(parents=True)
        variants = (["original", "upsampled"] if upsample else []) + \
            [f"iter{i:02d}" for i in range(rounds if socratic else 0)]
        n_rounds = 1 + k % rounds if socratic else 0
        for j, variant in enumerate(variants):
            if variant.startswith("iter") and int(variant[4:]) >= n_rounds:
                continue
            for seed in SEEDS if not variant.startswith("iter") else SEEDS[:1]:
                photo(name, shift=j + seed).save(run / "images" / pid / f"{variant}-s{seed}.png")
                base = {"original": 0.6, "upsampled": 0.7}.get(variant, 0.62 + 0.05 * j)
                for metric, scale, scorer in (("clipscore", 1.0, "CLIP tiny"),
                                              ("caption_score", 0.5, "all-MiniLM-L6-v2")):
                    rows.append(MetricRow(pid, cat, variant, seed, metric,
                                          float(scale * base + rng.normal(0, 0.05)), scorer))
        if not socratic:
            continue
        its = [{"prompt": text if i == 0 else f"{text}, round {i}",
                "image": f"images/{pid}/iter{i:02d}-s0.png",
                "caption": f"a photo <b>{name}</b> round {i}",
                "verdict": {"matches": i == n_rounds - 1 and k % 2 == 0,
                            "missing": ["<em>detail</em>"] if i < n_rounds - 1 else [],
                            "revised_prompt": f"{text}, round {i + 1}"},
                "scores": {"select_clip": 0.6 + 0.01 * i}} for i in range(n_rounds)]
        best = n_rounds - 1
        fresh = {"seeds": [], "first": [], "best": [], "best_is_first": best == 0}
        if best:
            fresh = {"seeds": [10_000_001, 10_000_002], "best_is_first": False,
                     "first": [f"images/{pid}/first_fresh-s{s}.png" for s in (10_000_001, 10_000_002)],
                     "best": [f"images/{pid}/best_fresh-s{s}.png" for s in (10_000_001, 10_000_002)]}
            for j, seed in enumerate(fresh["seeds"]):
                for variant, lift in (("first_fresh", 0.0), ("best_fresh", 0.01)):
                    photo(name, shift=5 + j).save(run / "images" / pid / f"{variant}-s{seed}.png")
                    for metric, scale, scorer in (("clipscore", 1.0, "CLIP tiny"),
                                                  ("caption_score", 0.5, "all-MiniLM-L6-v2")):
                        rows.append(MetricRow(pid, cat, variant, seed, metric,
                                              float(scale * 0.6 + lift + rng.normal(0, 0.05)), scorer))
        (run / "socratic" / f"{pid}.json").write_text(json.dumps({
            "id": pid, "prompt": text, "category": cat, "seed": 0, "iterations": its, "best": best,
            "stopped_early": its[-1]["verdict"]["matches"], "fresh": fresh,
            "loop": LOOP, "selection": {"by": "clip", "why": "highest CLIP similarity <to> the prompt",
                                        "scorer": {**CLIP.as_dict(), "role": "selector"}}}))
        for r in [r for r in rows if r.id == pid and r.variant == f"iter{best:02d}"]:
            rows.append(MetricRow(pid, cat, "best", r.seed, r.metric, r.value, r.scorer))
    write_metrics_csv(rows, run / "metrics.csv")
    return run


class Links(HTMLParser):
    """Collects src/href attributes and the text of <script> elements."""

    def __init__(self):
        super().__init__()
        self.urls: list[str] = []
        self.scripts = 0
        self.handlers: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.scripts += tag == "script"
        for key, value in attrs:
            if key in ("src", "href") and value:
                self.urls.append(value)
            if key.startswith("on"):
                self.handlers.append(key)


def parse(path: Path) -> Links:
    parser = Links()
    parser.feed(path.read_text(encoding="utf-8"))
    return parser


def check_relative_links(run: Path, page: Path) -> int:
    parser = parse(page)
    relative = [u for u in parser.urls if not re.match(r"^(data:|https?:|#|mailto:)", u)]
    for url in relative:
        assert (run / unquote(url.split("#")[0])).is_file(), f"{page.name} links missing {url}"
    return len(relative)


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, list[MetricRow], list[Path]]:
    run = make_run(tmp_path_factory.mktemp("report"))
    rows = read_metrics_csv(run / "metrics.csv")
    plots = write_plots(run, rows, evaluation=EVALUATION)
    write_compare_html(run)
    write_report_html(run, rows, evaluation=EVALUATION)
    return run, rows, plots


def test_metrics_csv_round_trip_keeps_types_notes_and_nan(tmp_path):
    rows = [MetricRow("a,1", "c \"q\"", "iter00", 3, "llm_judge", 7.0, "judge", "says, \"fine\"\nok"),
            MetricRow("b", "", "best", 0, "clipscore", float("nan"), "CLIP"),
            MetricRow("c", "x", "original", 1, "clipscore", 0.123456789012345, "CLIP")]
    write_metrics_csv(rows, tmp_path / "m.csv")
    back = read_metrics_csv(tmp_path / "m.csv")
    assert back[0] == rows[0] and back[2] == rows[2]
    assert math.isnan(back[1].value) and back[1].id == "b"
    assert not list(tmp_path.glob(".*tmp"))


def test_paired_views_average_seeds_and_pair_only_shared_seeds():
    rows = [MetricRow("a", "c", v, seed, "m", x, "s") for v, seed, x in
            (("original", 0, 1.0), ("original", 1, 3.0), ("upsampled", 0, 2.0))]
    rows.append(MetricRow("b", "c", "original", 0, "m", 5.0, "s"))
    assert paired(rows, "m", "original", "upsampled") == (["a"], [1.0], [2.0])
    assert variant_order(["best", "iter10", "upsampled", "iter02", "original"]) == \
        ["original", "upsampled", "iter02", "iter10", "best"]


def test_report_and_compare_exist_and_relative_links_resolve(built):
    run, _, _ = built
    assert check_relative_links(run, run / "compare.html") >= 4 * len(PROMPTS)
    assert check_relative_links(run, run / "report.html") >= 10
    report = (run / "report.html").read_text(encoding="utf-8")
    assert report.count("data:image/jpeg;base64,") == sum(1 + k % 3 for k in range(len(PROMPTS)))
    assert report.count('class="card best"') == len(PROMPTS)
    assert (run / "report.html").stat().st_size < 2_000_000


def test_compare_shows_each_prompt_with_chosen_candidate_and_token_count(built):
    run, _, _ = built
    text = (run / "compare.html").read_text(encoding="utf-8")
    assert text.count('class="prompt"') == len(PROMPTS)
    assert text.count("21 CLIP tokens") == len(PROMPTS)
    assert text.count("← chosen") == len(PROMPTS) and text.count("(90 tokens)") == len(PROMPTS) // 2
    assert text.index("<h2 id=\"cat-0\">Colors") < text.index("<h2 id=\"cat-1\">Counting")


def test_markup_in_prompts_and_model_text_is_escaped(built):
    run, _, _ = built
    for name in ("report.html", "compare.html"):
        text = (run / name).read_text(encoding="utf-8")
        parser = parse(run / name)
        assert parser.scripts == 0 and parser.handlers == [], name
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
        assert "<img src=x" not in text and "&lt;img src=x onerror=alert(2)&gt;" in text
        assert "<b>bold</b>" not in text
    report = (run / "report.html").read_text(encoding="utf-8")
    assert "&lt;em&gt;detail&lt;/em&gt;" in report and "&lt;b&gt;chelsea&lt;/b&gt;" in report


def warning(page: Path) -> str:
    text = page.read_text(encoding="utf-8")
    if '<div class="warn">' not in text:
        return ""
    part = text[text.index('<div class="warn">'):]
    return html.unescape(part[:part.index("</div>")])


def test_a_metric_sharing_the_selector_is_flagged_greyed_and_never_coloured(built):
    run, rows, _ = built
    text = warning(run / "report.html")
    assert "clipscore" in text and "same model as the scorer that picked the best round" in text
    assert "caption_score" in text and "reads captions by the loop's captioner" in text
    assert "No metric here is independent" in text
    page = (run / "report.html").read_text(encoding="utf-8")
    for line in page.split("<tr"):
        if "best − first (fresh seeds)" in line and "<td>" in line:
            assert line.startswith(' class="dep"') and "not independent" in line
            assert "num up" not in line and "num down" not in line


def test_independent_evaluation_models_lift_the_warning(built):
    run, rows, _ = built
    other = {"clipscore": clip_scorer("ViT-L-14"),
             "caption_score": Scorer("text:all-MiniLM-L6-v2", "text", captioner="blip:other-blip")}
    page = write_report_html(run, rows, evaluation=other)
    assert warning(page) == "" and "Every metric is independent" in page.read_text(encoding="utf-8")
    assert "independent of the loop" in page.read_text(encoding="utf-8")


def test_plots_are_valid_pngs_of_readable_size(built):
    run, _, plots = built
    assert sorted(p.name for p in plots) == ["best_vs_first_by_category.png", "early_stop_hist.png",
                                             "score_by_iteration.png", "upsampled_vs_original.png"]
    for path in plots:
        with Image.open(path) as im:
            im.verify()
        with Image.open(path) as im:
            assert im.format == "PNG" and im.width >= 400 and im.height >= 250
    assert "not drawn" not in (run / "report.html").read_text(encoding="utf-8")


def test_missing_data_skips_plots_and_says_so(tmp_path):
    run = make_run(tmp_path, socratic=False)
    rows = read_metrics_csv(run / "metrics.csv")
    plots = write_plots(run, rows)
    assert [p.name for p in plots] == ["upsampled_vs_original.png"]
    page = write_report_html(run, rows, evaluation={"clipscore": CLIP})
    text = page.read_text(encoding="utf-8")
    assert text.count("not drawn") == 3 and "no Socratic rounds" in text
    empty = tmp_path / "empty"
    empty.mkdir()
    assert write_plots(empty, []) == []
    assert "No metric rows" in write_report_html(empty, [], evaluation={}).read_text(encoding="utf-8")
    assert write_compare_html(empty).is_file()


def test_broken_trace_and_missing_image_do_not_crash(tmp_path):
    run = make_run(tmp_path, upsample=False)
    (run / "socratic" / "zz.json").write_text("{not json")
    (run / "images" / "p1" / "iter00-s0.png").unlink()
    rows = read_metrics_csv(run / "metrics.csv")
    write_plots(run, rows)
    text = write_report_html(run, rows, evaluation={}).read_text("utf-8")
    assert "Unreadable Socratic traces: zz.json" in text and "image missing: images/p1/iter00-s0.png" in text
    check_relative_links(run, run / "report.html")


def test_round_curve_is_the_paired_change_from_round_0_of_those_that_reached_the_round():
    """Three prompts: one stops after round 0, one after round 1, one runs three rounds. Each
    round's point compares the prompts that reached it with their own round 0 (a level that
    differs by prompt cancels); how many ran is part of the curve."""
    rounds = {"a": [0.0], "b": [1.0, 2.0], "c": [2.0, 3.0, 3.5]}
    rows = [MetricRow(pid, "c", f"iter{i:02d}", 0, "m", v, "s") for pid, vs in rounds.items()
            for i, v in enumerate(vs)]
    curve = round_curve(rows, "m")
    assert curve.rounds == (0, 1, 2) and curve.cohort == 3 and curve.running == (3, 2, 1)
    assert [c.median_diff for c in curve.changes] == pytest.approx([0.0, 1.0, 1.5])
    assert [c.n for c in curve.changes] == [3, 2, 1]
    late = [*rows, MetricRow("d", "c", "iter01", 0, "m", 9.0, "s")]     # no round 0: not in the cohort
    assert round_curve(late, "m").cohort == 3
    assert round_curve(rows, "other").cohort == 0


def test_the_curve_plot_says_the_stopping_rule_shapes_it(built, monkeypatch):
    import stages.report.plots

    run, rows, _ = built
    figures = {}
    monkeypatch.setattr(stages.report.plots, "_save",
                        lambda fig, path: figures.setdefault(path.name, fig) and path)
    write_plots(run, rows, evaluation=EVALUATION)
    fig = figures["score_by_iteration.png"]
    texts = [fig._suptitle.get_text()] + [ax.get_xlabel() + ax.get_ylabel() for ax in fig.axes]
    assert "shaped by the stopping rule" in texts[0]
    assert all("stopping rule" in t and "round − round 0" in t for t in texts[1:] if t)


def test_rows_of_two_scorers_for_one_metric_are_never_averaged(tmp_path):
    rows = [MetricRow(pid, "c", v, 0, "clipscore", x, scorer) for pid in ("a", "b")
            for v, x, scorer in (("original", 0.2, "CLIP A"), ("upsampled", 0.9, "CLIP B"))]
    split = separate_scorers(rows)
    assert {r.metric for r in split} == {"clipscore [CLIP A]", "clipscore [CLIP B]"}
    assert not paired(split, "clipscore [CLIP A]", "original", "upsampled")[0]
    assert separate_scorers(rows[:1]) == rows[:1]
    page = write_report_html(tmp_path, rows, evaluation={}).read_text(encoding="utf-8")
    assert "clipscore [CLIP A]" in page and "upsampled − original" not in page


def shifted_rows(n: int, shift: float, metric: str = "clipscore") -> list[MetricRow]:
    rng = np.random.default_rng(n)
    rows = []
    for k in range(n):
        base = float(rng.normal(0.5, 0.1))
        rows += [MetricRow(f"p{k}", "c", "original", 0, metric, base, "CLIP tiny"),
                 MetricRow(f"p{k}", "c", "upsampled", 0, metric, base + shift + float(rng.normal(0, 0.01)),
                           "CLIP tiny")]
    return rows


@pytest.mark.parametrize("n, coloured", [(5, False), (12, True)])
def test_a_clear_effect_is_coloured_only_when_the_test_can_reach_it(tmp_path, n, coloured):
    rows = shifted_rows(n, 0.2)
    comps = analyse(rows, {"clipscore": CLIP}, loop_from_traces([]))
    assert [c.flag for c in comps] == (["up"] if coloured else [""])
    text = write_report_html(tmp_path, rows, evaluation={"clipscore": CLIP}).read_text(encoding="utf-8")
    assert ('class="num up"' in text) == coloured
    if not coloured:
        assert "unbounded (n &lt; 6)" in text and "no test can reach 5%" in text
    assert "1 headline comparison(s)" in text


def test_plot_titles_give_the_reports_holm_p_never_a_raw_one(tmp_path, monkeypatch):
    """Two metrics in the family: the scatter's title gives each the Holm-adjusted p of the
    report's table (the raw p is half of it here), and no figure reads "-0.000"."""
    import stages.report.plots

    figures = {}
    monkeypatch.setattr(stages.report.plots, "_save",
                        lambda fig, path: figures.setdefault(path.name, fig) and path)
    rows = shifted_rows(12, 0.0004) + shifted_rows(12, 0.2, metric="caption_score")
    evaluation = {"clipscore": CLIP, "caption_score": CLIP}
    comps = analyse(rows, evaluation, loop_from_traces([]))
    write_plots(tmp_path, rows, traces=[], evaluation=evaluation)
    titles = {ax.get_title().split(":")[0]: ax.get_title()
              for ax in figures["upsampled_vs_original.png"].axes if ax.get_title()}
    for c in comps:
        assert f"Holm p{holm_text(c.holm_p)}" in titles[c.metric]
        assert "-0.000" not in titles[c.metric] and "+0.000" not in titles[c.metric]
    strong = next(c for c in comps if c.metric == "caption_score")
    assert strong.holm_p == pytest.approx(2 * strong.result.p_value)
    assert f"={strong.result.p_value:.3f}" not in titles["caption_score"]


def test_no_interval_is_drawn_as_one_of_zero_width(tmp_path, monkeypatch):
    """One prompt in a category, or a cohort of one: no interval exists, so no error bar or
    band is drawn, rather than one of zero width that looks like certainty."""
    import stages.report.plots

    figures = {}
    monkeypatch.setattr(stages.report.plots, "_save",
                        lambda fig, path: figures.setdefault(path.name, fig) and path)
    rows = []
    for pid, cat in (("a", "one"), ("b", "two"), ("c", "two"), ("d", "two")):
        for i, variant in enumerate(("iter00", "iter01", "first_fresh", "best_fresh")):
            rows.append(MetricRow(pid, cat, variant, 0, "clipscore", 0.5 + 0.1 * i + 0.01 * ord(pid), "CLIP"))
    write_plots(tmp_path, rows, traces=[])
    bars = figures["best_vs_first_by_category.png"].axes[0]
    segments = [seg for c in bars.containers if type(c).__name__ == "ErrorbarContainer"
                for seg in c.lines[2][0].get_segments()]
    assert segments, "the categories with three prompts have error bars"
    assert all(len(seg) and abs(seg[1][0] - seg[0][0]) > 1e-9 for seg in segments if len(seg))
    assert sum(1 for seg in segments if not len(seg)) == 2          # category "one": both bars
    figures.clear()
    write_plots(tmp_path, [r for r in rows if r.id == "a"], traces=[])
    curve = figures["score_by_iteration.png"].axes[0]
    assert not [p for c in curve.collections for p in c.get_paths() if len(p.vertices)]


def test_the_method_note_says_what_is_tested_and_what_is_description(tmp_path):
    rows = shifted_rows(20, 0.0)
    text = write_report_html(tmp_path, rows, evaluation={"clipscore": CLIP}).read_text(encoding="utf-8")
    note = html.unescape(re.sub(r"<[^>]+>", "", text))
    assert "exact sign test" in note and "order-statistic interval of the median" in note
    assert "approximate, assumes roughly symmetric differences" in note and "never coloured" in note
    assert "-0.000" not in note and "+0.000" not in note


def loop_rows(n: int, moved: int) -> tuple[list[MetricRow], list[dict]]:
    """n prompts whose loops chose round 0, except `moved` of them; fresh renders only where
    the chosen round is not round 0 (as the socratic stage writes them)."""
    rows, traces = [], []
    for k in range(n):
        best = 1 if k < moved else 0
        traces.append({"id": f"p{k}", "prompt": "x", "best": best, "loop": LOOP,
                       "iterations": [{"prompt": "x", "verdict": {}}, {"prompt": "y", "verdict": {}}]})
        for i in (0, 1):
            rows.append(MetricRow(f"p{k}", "c", f"iter{i:02d}", 0, "clipscore", 0.5 + 0.1 * i, "CLIP tiny"))
        rows.append(MetricRow(f"p{k}", "c", "best", 0, "clipscore", 0.5 + 0.1 * best, "CLIP tiny"))
        if best:
            rows += [MetricRow(f"p{k}", "c", v, 10_000_001, "clipscore", 0.5, "CLIP tiny")
                     for v in ("first_fresh", "best_fresh")]
    return rows, traces


def test_all_loops_stopped_at_round_0_is_zero_informative_pairs_not_n_12(tmp_path):
    rows, traces = loop_rows(12, 0)
    text = write_report_html(tmp_path, rows, evaluation={"clipscore": clip_scorer("ViT-B-32")},
                             traces=traces).read_text(encoding="utf-8")
    plain = html.unescape(re.sub(r"<[^>]+>", " ", text))
    assert "best − first: 0 informative pairs." in plain and "All 12 loops chose round 0" in plain
    assert "best − first (fresh seeds)" not in plain


def test_best_vs_first_counts_only_the_loops_that_moved(tmp_path):
    rows, traces = loop_rows(12, 7)
    text = write_report_html(tmp_path, rows, evaluation={"clipscore": clip_scorer("ViT-B-32")},
                             traces=traces).read_text(encoding="utf-8")
    plain = html.unescape(re.sub(r"<[^>]+>", " ", text))
    assert "7 of 12 loops chose a round other than round 0" in plain
    row = next(r for r in text.split("<tr") if "best − first (fresh seeds)" in r)
    assert re.search(r">7 <br>|>7<br>", row) and "0 untied" in row


def tiny_png(path: Path, model: str) -> None:
    from stages.backends.images import save_png

    path.parent.mkdir(parents=True, exist_ok=True)
    save_png(path, photo("coffee", 32), {"prompt": "x", "seed": 0,
                                         "backend": json.dumps({"backend": "diffusers", "model": model})})


def test_a_test_model_gets_a_banner_and_unscored_prompts_are_counted(tmp_path):
    rows = shifted_rows(4, 0.1)
    with open(tmp_path / "prompts.jsonl", "w", encoding="utf-8") as fh:
        for k in range(6):
            fh.write(json.dumps({"id": f"p{k}", "prompt": "x", "category": "c"}) + "\n")
    tiny_png(tmp_path / "images" / "p0" / "original-s0.png", "tiny-sdxl-1")
    evaluation = {"clipscore": CLIP, "image_similarity": CLIP}
    text = write_report_html(tmp_path, rows, evaluation=evaluation).read_text(encoding="utf-8")
    plain = html.unescape(re.sub(r"<[^>]+>", " ", text))
    assert "Test model: these images are noise." in plain and "tiny-sdxl-1" in plain
    assert "6 prompts in the run, 4 scored (2 without any score: failed or unfinished)" in plain
    assert "4 of 6" in plain and "4 of 6 prompts have an upsampled image scored; 2 failed" in plain
    assert "<td>image_similarity</td>" not in text and "without any value" in plain
    real = tmp_path / "real"
    tiny_png(real / "images" / "p0" / "original-s0.png", "stabilityai/sdxl")
    assert "Test model" not in write_report_html(real, rows, evaluation=evaluation).read_text("utf-8")


def test_the_report_package_has_one_entry_point_per_job():
    import stages.report as report
    from stages.report import page, stats

    assert report.write_report_html is page.write_report_html and report.paired_test is stats.paired_test
    assert set(report.__all__) >= {"write_plots", "analyse", "write_metrics_csv", "read_metrics_csv"}
    with pytest.raises(AttributeError):
        report.not_a_job  # noqa: B018


def test_a_metric_scored_by_the_random_test_clip_gets_a_banner_and_no_colour(tmp_path):
    """evaluate.clip_model defaults to tiny, a randomly initialised CLIP: with real images its
    clipscore measures nothing about the prompts, yet a clear difference in it was coloured
    with no banner. It now gets a banner naming the metric and stays out of the coloured
    family; a metric from a real model beside it is still tested and coloured."""
    rows = shifted_rows(12, 0.2) + shifted_rows(12, 0.2, metric="caption_score")
    tiny_png(tmp_path / "images" / "p0" / "original-s0.png", "stabilityai/sdxl")
    evaluation = {"clipscore": TINY_CLIP, "caption_score": TEXT}
    comps = {c.metric: c for c in analyse(rows, evaluation, loop_from_traces([]))}
    assert comps["clipscore"].flag == "" and math.isnan(comps["clipscore"].holm_p)
    assert comps["caption_score"].flag == "up"
    assert comps["caption_score"].holm_p == pytest.approx(comps["caption_score"].result.p_value)
    text = write_report_html(tmp_path, rows, evaluation=evaluation).read_text(encoding="utf-8")
    plain = html.unescape(re.sub(r"<[^>]+>", " ", text))
    assert "Test model" in plain and "clipscore" in plain.split("Test model")[1][:400]
    assert "Test model: these images are noise." not in plain
    row = next(r for r in text.split("<tr") if "<td>clipscore</td>" in r and "upsampled" in r)
    assert 'class="num up"' not in row and "test model" in html.unescape(row)
    real = {"clipscore": CLIP, "caption_score": TEXT}
    other = tmp_path / "real"
    tiny_png(other / "images" / "p0" / "original-s0.png", "stabilityai/sdxl")
    assert "Test model" not in write_report_html(other, rows, evaluation=real).read_text("utf-8")


def test_plots_keep_two_scorers_of_one_metric_apart_as_the_page_does(tmp_path, monkeypatch):
    """Original scored by one CLIP and upsampled by another: the page refuses to compare them
    (separate_scorers), but the scatter paired them into "clipscore: median diff +0.7" with a
    Holm p of a comparison the page does not make."""
    import stages.report.plots

    figures = {}
    monkeypatch.setattr(stages.report.plots, "_save",
                        lambda fig, path: figures.setdefault(path.name, fig) and path)
    rows = [MetricRow(f"p{k}", "c", v, 0, "clipscore", x + 0.01 * k, scorer) for k in range(12)
            for v, x, scorer in (("original", 0.2, "CLIP A"), ("upsampled", 0.9, "CLIP B"))]
    written = write_plots(tmp_path, rows, traces=[], evaluation={"clipscore": CLIP})
    assert "upsampled_vs_original.png" not in {p.name for p in written}
    assert "upsampled_vs_original.png" not in figures


def test_a_holm_p_below_0_001_never_reads_0_000_in_a_plot_title(tmp_path, monkeypatch):
    import stages.report.plots

    figures = {}
    monkeypatch.setattr(stages.report.plots, "_save",
                        lambda fig, path: figures.setdefault(path.name, fig) and path)
    rows = shifted_rows(12, 0.2)
    comp, = analyse(rows, {"clipscore": CLIP}, loop_from_traces([]))
    assert comp.holm_p < 0.0005
    write_plots(tmp_path, rows, traces=[], evaluation={"clipscore": CLIP})
    title = figures["upsampled_vs_original.png"].axes[0].get_title()
    assert "Holm p<0.001" in title and "0.000" not in title


def test_prompts_without_a_finished_loop_are_counted_beside_best_vs_first(tmp_path):
    """15 prompts, 12 finished loops: "7 of 12 loops" alone hid the 3 whose loop failed."""
    rows, traces = loop_rows(12, 7)
    with open(tmp_path / "prompts.jsonl", "w", encoding="utf-8") as fh:
        for k in range(15):
            fh.write(json.dumps({"id": f"p{k}", "prompt": "x", "category": "c"}) + "\n")
    text = write_report_html(tmp_path, rows, evaluation={"clipscore": CLIP},
                             traces=traces).read_text(encoding="utf-8")
    plain = " ".join(html.unescape(re.sub(r"<[^>]+>", " ", text)).split())
    assert "7 of 12 loops chose a round other than round 0" in plain
    assert "3 of 15 prompts have no finished Socratic loop" in plain
    rows0, traces0 = loop_rows(12, 0)
    text = write_report_html(tmp_path, rows0, evaluation={"clipscore": CLIP},
                             traces=traces0).read_text(encoding="utf-8")
    assert "3 of 15 prompts have no finished Socratic loop" in html.unescape(text)


def test_loops_that_moved_without_fresh_renders_say_why_there_is_no_comparison(tmp_path):
    """socratic.fresh_seeds = 0: the loops moved but nothing was rendered again; the page
    told the user to run the socratic stage again, which makes none either."""
    rows, traces = loop_rows(12, 7)
    rows = [r for r in rows if not r.variant.endswith("_fresh")]
    text = write_report_html(tmp_path, rows, evaluation={"clipscore": CLIP},
                             traces=traces).read_text(encoding="utf-8")
    plain = " ".join(html.unescape(re.sub(r"<[^>]+>", " ", text)).split())
    assert "socratic.fresh_seeds = 0 makes none" in plain and "run the socratic stage again" not in plain


def test_the_scatter_says_why_a_test_model_metric_is_not_tested(tmp_path, monkeypatch):
    import stages.report.plots

    figures = {}
    monkeypatch.setattr(stages.report.plots, "_save",
                        lambda fig, path: figures.setdefault(path.name, fig) and path)
    write_plots(tmp_path, shifted_rows(12, 0.2), traces=[], evaluation={"clipscore": TINY_CLIP})
    title = figures["upsampled_vs_original.png"].axes[0].get_title()
    assert "not tested: scored by a test model" in title and "Holm" not in title
