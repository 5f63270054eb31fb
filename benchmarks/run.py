#!/usr/bin/env python3
"""Performance figures, measured in one run on this machine; prints `name: value` lines.

    python benchmarks/run.py --quick     # 30 minutes measured on 2 busy cores
    python benchmarks/run.py             # larger samples

Figures (ratios are the point; absolute numbers depend on the machine):
- raw_requests_per_s / caption_requests_per_s / saturation_ratio: the caption path
  (interpret stage through the project's chat backend and runner) against a raw asyncio +
  openai-client load generator sending the same request bodies, same local server (its
  own process) with a fixed 200 ms latency, concurrency 8. The `_50ms` variants repeat it
  at 50 ms, where on 2 cores the client and the server compete for CPU.
- raw_efficiency (_50ms): raw req/s / (concurrency / latency), the share of the server's
  ceiling the raw load reaches; below 0.9 at 200 ms the harness itself (server, sockets)
  is the bottleneck and the ratios above mean little.
- warm_rerun_calls, warm_rerun_s_per_1k_items: a second run over the unchanged folder.
- images_per_s_c1 / _c8 / _c32: interrogate (openai vision) + interpret per image, 50 ms
  server latency, at three concurrency levels, on 8x8 images; images_per_s_c8_1mp: the
  same at concurrency 8 on 1-megapixel JPEG photos (scikit-image's samples resized), where
  decoding, resizing and encoding are real work (done in worker threads).
- upsample_prompts_per_s_c1 / _c8: the upsample stage through the local server.
- tiny_sdxl_images_per_s_b1 / _b4: the tiny random SDXL on CPU at batch 1 and 4.
- rss_mb_10k_items / rss_mb_100k_items: peak RSS of `caption.py --dry-run` over generated
  folders of small tagged images.
- rss_mb_run_2k / rss_mb_run_20k / rss_run_growth: peak RSS of real caption runs (interpret
  through the local server at zero latency, one candidate per image) over 2,000 and 20,000
  tiny tagged images, and their ratio (goal <= 1.25: memory does not grow with the folder).
- median_coverage_n10 / _n30 / _n50, null_flag_rate_n10 / _n30 / _n50,
  report_null_flag_rate_n10 / _n30 / _n50 (each the worst over the shapes), and
  power_uneven_effect_n30: the report's coloured statistic (exact sign test, order-statistic
  interval of the median difference) on 20,000 simulated datasets per shape and size whose
  true median is 0 (symmetric, centred exponential and lognormal, integer judge ratings,
  clamped CLIPScores, Cauchy tails): how often the interval covers the median, how often one
  comparison is coloured, how often a report of 8 Holm-adjusted comparisons (4,000 reports)
  colours anything; and how often a real, uneven effect is coloured at n = 30
  (benchmarks/interval_coverage.py).
- folder_items_per_s_Nk / shards_items_per_s_Nk, folder_rss_mb_Nk / shards_rss_mb_Nk:
  caption.py over N distinct small images (N = 2,000 and 20,000, also with --quick) as 20
  WebDataset shards and as a folder (local server at zero latency, tags stage skipped):
  items/s over stage time, peak RSS. shards_rss_growth: shard peak RSS at 20k / at 2k (goal
  <= 1.25); shards_vs_folder_rss_20k: shard / folder peak RSS at 20k (goal <= 1.3).
- startup_s: wall time of a caption.py run with every stage reused (the sample folder,
  local server, openai vision; median of 5): the fixed cost of a run. startup_calls (0),
  startup_reused and startup_ok (0) show that nothing was redone.
- caption_quality_*: caption.py with the embedded default (SmolLM2 + classifier) on the
  sample folder images/ (stages/language/quality.py): the share of captions that name the subject
  their first tag states, the mean share of content tags mentioned, how many captions are
  the model's own (`model_kept`) and how many composed fallbacks, and how many copy five
  words of a template. A fallback names its subject by construction, so read the subject
  figure beside `model_kept`. A failed run, or one that leaves images uncaptioned, gives
  `caption_quality_error` (and exit 1) instead of figures. Quality, not speed: the figure
  to compare template or verifier changes by.
- verifier_false_accept_rate_tune / _held_out, verifier_false_reject_rate_tune / _held_out:
  the caption verifier on the hand-labelled cases of benchmarks/verifier_cases.jsonl
  (benchmarks/verifier_bench.py): the share of captions labelled unfaithful that it passes,
  and of captions labelled faithful that it fails. The held-out half was written before the
  verifier was tuned and no test uses it.
- interpret_calls_per_image: chat requests the interpret stage asks for per image (candidates,
  asked for one at a time until one passes the verifier, plus any shortening), with the
  embedded default on the sample folder images/ from a cold cache; the tags and interrogate
  stages run first, apart, so their calls are not counted. interpret_candidates_per_image
  lists each image's candidate count (from NAME.json), interpret_candidate_calls_per_image
  their mean and interpret_shorten_calls the rest (a caption over max_clip_tokens is
  shortened once). Transport retries (timeouts of a busy embedded server) are not calls the
  stage asked for: interpret_call_retries counts them apart. Goal <= 1.2.
Results also go to benchmarks/results.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from stages.fakeserver import serve_in_subprocess  # noqa: E402


def make_folder(root: Path, n: int, *, shared_tags: bool = False) -> None:
    """n tiny tagged images, hard links to one 8x8 PNG so a 100k folder builds in seconds.

    Tag files are unique per item (so every item is a distinct LLM request), or with
    `shared_tags` hard links to 97 variants (for the memory benchmark, which calls nothing).
    """
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (120, 40, 200)).save(buf, format="PNG")
    root.mkdir(parents=True, exist_ok=True)
    sources = root.parent / ".sources"
    sources.mkdir(exist_ok=True)
    pngs = []
    for k in range(n // 50_000 + 1):           # file systems cap links per inode (ext4: 65,000)
        pngs.append(sources / f"image{k}.png")
        pngs[-1].write_bytes(buf.getvalue())
    tag_files = []
    for k in range(97):
        path = sources / f"tags{k}.txt"
        path.write_text(f"tag_{k}, shared_tag, item_{k % 13}")
        tag_files.append(path)
    for i in range(n):
        os.link(pngs[i // 50_000], root / f"img{i:06d}.png")
        if shared_tags:
            os.link(tag_files[i % 97], root / f"img{i:06d}.txt")
        else:
            (root / f"img{i:06d}.txt").write_text(f"tag_{i % 97}, shared_tag, item_{i}")


PHOTOS = ("astronaut", "chelsea", "coffee", "retina", "rocket", "hubble_deep_field")


def make_photo_folder(root: Path, n: int, pixels: int = 1_000_000) -> None:
    """n tagged 1-megapixel JPEG photos: scikit-image's sample photos resized to about
    `pixels` (quality 90), hard-linked in turn, each with its own tag file."""
    from PIL import Image
    from skimage import data

    root.mkdir(parents=True, exist_ok=True)
    sources = root.parent / ".photos"
    sources.mkdir(exist_ok=True)
    jpegs = []
    for name in PHOTOS:
        img = Image.fromarray(getattr(data, name)()).convert("RGB")
        scale = (pixels / (img.width * img.height)) ** 0.5
        img = img.resize((round(img.width * scale), round(img.height * scale)), Image.Resampling.LANCZOS)
        jpegs.append(sources / f"{name}.jpg")
        img.save(jpegs[-1], quality=90)
    for i in range(n):
        os.link(jpegs[i % len(jpegs)], root / f"img{i:06d}.jpg")
        (root / f"img{i:06d}.txt").write_text(f"tag_{i % 97}, shared_tag, item_{i}")


def caption_args(project: Path, url: str, *sets: str) -> list[str]:
    base = [f"llm.base_url={url}", "llm.backoff=0.01", "run.progress=false",
            f"paths.images={project / 'images'}", f"paths.captions={project / 'captions'}",
            f"paths.cache={project / 'cache'}", "tags.skip=true"]
    args = ["--config", str(ROOT / "config.ini"), "--quiet"]
    for item in base + list(sets):
        args += ["--set", item]
    return args


def run_caption(args: list[str]) -> tuple[float, int]:
    """Run caption.py in this process; return (seconds spent in stages, model calls made).

    Stage time excludes the one-off start of a run (imports, config, tokenizer files), so
    the figure is the steady-state throughput of the caption path.
    """
    import caption

    caption.main(args)
    cache = Path(args[args.index(next(a for a in args if a.startswith("paths.cache=")))]
                 .split("=", 1)[1])
    summary = json.loads((cache / "summary-caption.json").read_text())
    seconds = sum(s["seconds"] for s in summary["stages"] if s["state"] == "ran")
    return seconds, summary["calls"]["calls"]


def warm_up(tmp: Path, url: str) -> None:
    """One small run so imports and the tokenizer files are ready before timing."""
    project = Path(tempfile.mkdtemp(dir=tmp, prefix="warmup"))
    make_folder(project / "images", 4)
    run_caption(caption_args(project, url, "vision.backend=openai"))


def sample_messages() -> list[dict]:
    """The interpret prompt for one generated item: the raw load sends the same bodies."""
    from stages.interpret import PLACEHOLDERS, prompt_fields
    from stages.language.verify import Evidence
    from stages.templates import load_template

    template = load_template(ROOT / "templates" / "interpret.txt", "interpret.template", PLACEHOLDERS)
    fields = prompt_fields(Evidence(tags=("tag_1", "shared_tag", "item_1")))
    return template.render(**fields, trigger="(none)", max_tokens="77")


async def raw_load(url: str, n: int, concurrency: int) -> float:
    """Requests/s of a plain openai-client load generator: no project code, but the same
    client path as the project's chat backend (`AsyncOpenAI.post` of a JSON body, see
    stages/backends/chat.py) and the same request bodies (our rendered template)."""
    import openai
    from openai.types.chat import ChatCompletion

    client = openai.AsyncOpenAI(base_url=url, api_key="x", max_retries=0)
    sem = asyncio.Semaphore(concurrency)
    messages = sample_messages()

    async def one(i: int) -> None:
        body = {"model": "fake-model", "max_tokens": 120, "temperature": 0.2, "top_p": 0.95,
                "frequency_penalty": 0.5, "seed": 0,
                "messages": [*messages[:-1], {"role": "user",
                                              "content": messages[-1]["content"] + f" {i}"}]}
        async with sem:
            await client.post("/chat/completions", body=body, cast_to=ChatCompletion)

    started = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(n)))
    elapsed = time.perf_counter() - started
    await client.close()
    return n / elapsed


class Server:
    """The fake OpenAI-compatible server in its own process, with a fixed latency."""

    def __init__(self, latency: float):
        self.proc, self.url = serve_in_subprocess(latency)

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc) -> None:
        self.proc.kill()
        self.proc.wait()


def bench_saturation(tmp: Path, n: int, results: dict, latency: float = 0.2,
                     suffix: str = "", rerun: bool = True) -> None:
    """Caption path vs raw load at concurrency 8 against a server with fixed latency."""
    with Server(latency=latency) as server:
        asyncio.run(raw_load(server.url, 16, 8))                       # warm the server
        warm_up(tmp, server.url)
        raw = asyncio.run(raw_load(server.url, n, 8))
        project = tmp / f"sat{suffix}"
        make_folder(project / "images", n)
        seconds, calls = run_caption(caption_args(project, server.url, "interrogate.skip=true",
                                                  "llm.concurrency=8"))
        results[f"raw_requests_per_s{suffix}"] = round(raw, 2)
        # what the server could give at most: `concurrency` requests every `latency` seconds
        results[f"raw_efficiency{suffix}"] = round(raw / (8 / latency), 3)
        results[f"caption_requests_per_s{suffix}"] = round(calls / seconds, 2)
        results[f"saturation_ratio{suffix}"] = round(calls / seconds / raw, 3)
        if rerun:
            seconds, calls = run_caption(caption_args(project, server.url, "interrogate.skip=true",
                                                      "llm.concurrency=8"))
            results["warm_rerun_calls"] = calls
            results["warm_rerun_s_per_1k_items"] = round(seconds / n * 1000, 3)


def bench_concurrency(tmp: Path, n: int, results: dict) -> None:
    """Vision + caption per image at three concurrency levels on 8x8 images, and at
    concurrency 8 on 1-megapixel JPEG photos (decode, resize and encode then cost real CPU)."""
    with Server(latency=0.05) as server:
        for c in (1, 8, 32):
            project = tmp / f"conc{c}"
            make_folder(project / "images", n)
            seconds, _ = run_caption(caption_args(project, server.url, "vision.backend=openai",
                                                  f"llm.concurrency={c}"))
            results[f"images_per_s_c{c}"] = round(n / seconds, 2)
        project = tmp / "conc8_1mp"
        make_photo_folder(project / "images", n)
        seconds, _ = run_caption(caption_args(project, server.url, "vision.backend=openai",
                                              "llm.concurrency=8"))
        results["images_per_s_c8_1mp"] = round(n / seconds, 2)


def bench_upsample(tmp: Path, n: int, results: dict) -> None:
    import refine

    prompts = tmp / "prompts.txt"
    prompts.write_text("\n".join(f"prompt number {i} with a red cube" for i in range(n)))
    with Server(latency=0.05) as server:
        for c in (1, 8):
            run_dir = tmp / f"up{c}"
            args = ["--config", str(ROOT / "config.ini"), "--quiet", "--only", "upsample"]
            for item in (f"llm.base_url={server.url}", f"llm.concurrency={c}",
                         "upsample.candidates=1", f"upsample.benchmark={prompts}", "upsample.limit=0",
                         f"paths.runs={run_dir}", f"paths.cache={tmp / f'upcache{c}'}", "run.progress=false"):
                args += ["--set", item]
            started = time.perf_counter()
            refine.main(args)
            results[f"upsample_prompts_per_s_c{c}"] = round(n / (time.perf_counter() - started), 2)


def bench_tiny_sdxl(n: int, results: dict) -> None:
    """Tiny random SDXL on CPU at batch 1 and 4 (kept under cache/ between runs)."""
    from bench_images import bench_tiny_images

    results.update(bench_tiny_images(ROOT / "cache", n))


def peak_rss_mb(cmd: list[str]) -> float:
    """Peak RSS of a child process, read from /proc while it runs (MB)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
    peak = 0
    while proc.poll() is None:
        try:
            with open(f"/proc/{proc.pid}/status") as fh:
                for line in fh:
                    if line.startswith("VmHWM:"):
                        peak = max(peak, int(line.split()[1]))
        except OSError:
            pass
        time.sleep(0.05)
    if not peak:
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return round(peak / 1024, 1)


def bench_rss(tmp: Path, sizes: list[int], results: dict) -> None:
    for n in sizes:
        project = tmp / f"rss{n}"
        make_folder(project / "images", n, shared_tags=True)
        cmd = [sys.executable, str(ROOT / "caption.py"), "--dry-run", "--config",
               str(ROOT / "config.ini"), "--quiet", "--set", f"paths.images={project / 'images'}",
               "--set", f"paths.captions={project / 'captions'}",
               "--set", f"paths.cache={project / 'cache'}"]
        label = f"{n // 1000}k"
        results[f"rss_mb_{label}_items"] = peak_rss_mb(cmd)
        shutil.rmtree(project, ignore_errors=True)


def bench_rss_run(tmp: Path, sizes: list[int], results: dict) -> None:
    """Peak RSS of real caption runs (interpret through the local server at zero latency,
    one candidate per image) over folders of `sizes` tiny images; memory must stay flat."""
    with Server(latency=0.0) as server:
        peaks = []
        for n in sizes:
            project = tmp / f"rssrun{n}"
            make_folder(project / "images", n)
            cmd = [sys.executable, str(ROOT / "caption.py"),
                   *caption_args(project, server.url, "interrogate.skip=true", "interpret.candidates=1",
                                 "llm.concurrency=8")]
            started = time.perf_counter()
            peaks.append(peak_rss_mb(cmd))
            calls = json.loads((project / "cache" / "summary-caption.json").read_text())["calls"]["calls"]
            results[f"rss_mb_run_{n // 1000}k"] = peaks[-1]
            results[f"rss_run_{n // 1000}k_s"] = round(time.perf_counter() - started, 1)
            results[f"rss_run_{n // 1000}k_calls"] = calls
            shutil.rmtree(project, ignore_errors=True)
        results["rss_run_growth"] = round(peaks[-1] / peaks[0], 3)


def make_shards(root: Path, n: int, shards: int) -> tuple[Path, str]:
    """n distinct 8x8 PNGs with unique tags as `shards` WebDataset shards and as one folder;
    returns (folder, shard pattern)."""
    import io
    import tarfile

    from PIL import Image

    folder, tars = root / "folder", root / "tars"
    folder.mkdir(parents=True)
    tars.mkdir()
    per = n // shards
    for s in range(shards):
        with tarfile.open(tars / f"{s:05d}.tar", "w") as tar:
            for i in range(s * per, (s + 1) * per):
                buf = io.BytesIO()
                Image.new("RGB", (8, 8), (i % 256, i // 256 % 256, 77)).save(buf, format="PNG")
                files = {f"{i:09d}.png": buf.getvalue(),
                         f"{i:09d}.txt": f"tag_{i % 97}, shared_tag, item_{i}".encode()}
                for name, data in files.items():
                    (folder / name).write_bytes(data)
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    return folder, str(tars / f"{{00000..{shards - 1:05d}}}.tar")


def bench_shards(tmp: Path, sizes: list[int], results: dict, shards: int = 20) -> None:
    """caption.py (openai vision + interpret, tags skipped) over n distinct 8x8 PNGs with
    unique tags, as `shards` WebDataset shards and as one folder, against the local server
    at zero latency, each in its own process: items/s (stage time) and peak RSS at each size;
    how shard memory grows from the first size to the last, and how it compares with a
    folder's at the last."""
    with Server(0.0) as server:
        for n in sizes:
            project = tmp / f"shards-bench-{n}"
            folder, pattern = make_shards(project, n, shards)
            for label, images in (("folder", folder), ("shards", pattern)):
                out = project / label
                cmd = [sys.executable, str(ROOT / "caption.py"), *caption_args(
                    out, server.url, "vision.backend=openai", f"paths.images={images}",
                    "input.image_column=png")]
                results[f"{label}_rss_mb_{n / 1000:g}k"] = peak_rss_mb(cmd)
                summary = json.loads((out / "cache" / "summary-caption.json").read_text())
                ran = [s for s in summary["stages"] if s["state"] == "ran"]
                done = min(s["ok"] + s["reused"] for s in ran)
                results[f"{label}_items_per_s_{n / 1000:g}k"] = round(
                    done / sum(s["seconds"] for s in ran), 1)
                results[f"{label}_items_ok_{n / 1000:g}k"] = done
            shutil.rmtree(project, ignore_errors=True)
    first, last = (f"{n / 1000:g}k" for n in (sizes[0], sizes[-1]))
    results["shards_rss_growth"] = round(results[f"shards_rss_mb_{last}"]
                                         / results[f"shards_rss_mb_{first}"], 3)
    results[f"shards_vs_folder_rss_{last}"] = round(results[f"shards_rss_mb_{last}"]
                                                    / results[f"folder_rss_mb_{last}"], 3)


def bench_startup(tmp: Path, results: dict, repeats: int = 5) -> None:
    """Wall time of a caption.py run in which every stage is reused (tags from the wiki file,
    openai vision, interpret) on a copy of the sample folder, against the local server: the
    fixed cost every run pays (interpreter, imports, config, keys, the review page). The
    median of `repeats` runs after one that made the captions."""
    project = Path(tempfile.mkdtemp(dir=tmp, prefix="startup"))
    for name in ("images", "data", "templates"):
        shutil.copytree(ROOT / name, project / name)
    shutil.copy(ROOT / "config.ini", project / "config.ini")
    with Server(0.0) as server:
        cmd = [sys.executable, str(ROOT / "caption.py"), "--config", str(project / "config.ini"),
               "--quiet", "--set", f"llm.base_url={server.url}", "--set", "vision.backend=openai",
               "--set", "run.progress=false"]
        subprocess.run(cmd, cwd=project, check=True, capture_output=True)
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            subprocess.run(cmd, cwd=project, check=True, capture_output=True)
            times.append(time.perf_counter() - started)
    summary = json.loads((project / "cache" / "summary-caption.json").read_text())
    results["startup_s"] = round(sorted(times)[len(times) // 2], 2)
    results["startup_calls"] = summary["calls"]["calls"]
    results["startup_reused"] = sum(s["reused"] for s in summary["stages"])
    results["startup_ok"] = sum(s["ok"] for s in summary["stages"])


def bench_coverage(datasets: int, reports: int, results: dict) -> None:
    from interval_coverage import simulate

    results.update(simulate(datasets, reports))


def bench_caption_quality(tmp: Path, results: dict) -> None:
    """The embedded default on a copy of the sample folder, from a cold cache."""
    from stages.language.quality import check_captions, summarise
    from stages.templates import load_template

    project = Path(tempfile.mkdtemp(dir=tmp, prefix="quality"))
    for name in ("images", "data", "templates"):
        shutil.copytree(ROOT / name, project / name)
    shutil.copy(ROOT / "config.ini", project / "config.ini")
    import caption

    started = time.perf_counter()
    code = caption.main(["--config", str(project / "config.ini"), "--quiet",
                         "--set", "run.progress=false"])
    results["caption_quality_run_s"] = round(time.perf_counter() - started, 1)
    templates = tuple(load_template(project / "templates" / name, "interpret").literal()
                      for name in ("interpret.txt", "shorten.txt"))
    figures = summarise(check_captions(project / "captions", templates))
    images = sum(1 for p in (project / "images").iterdir() if p.suffix != ".txt")
    if code != 0 or figures["captions"] != images:
        # Figures over a failed run or a subset of the folder would compare with nothing.
        results["caption_quality_error"] = (f"caption.py exited {code} with {figures['captions']} "
                                            f"of {images} images captioned; see its output above")
        return
    results["caption_quality_images"] = images
    for key, value in figures.items():
        results[f"caption_quality_{key}"] = value


def bench_verifier(results: dict) -> None:
    from verifier_bench import load_cases, rates

    results.update(rates(load_cases()))
def bench_interpret_calls(tmp: Path, results: dict) -> None:
    """The embedded default on a copy of the sample folder: interpret's requests per image."""
    project = Path(tempfile.mkdtemp(dir=tmp, prefix="calls"))
    for name in ("images", "data", "templates"):
        shutil.copytree(ROOT / name, project / name)
    shutil.copy(ROOT / "config.ini", project / "config.ini")
    import caption

    base = ["--config", str(project / "config.ini"), "--quiet", "--set", "run.progress=false"]
    code = caption.main(base + ["--only", "tags,interrogate"])
    code = code or caption.main(base + ["--only", "interpret"])
    summary = json.loads((project / "cache" / "summary-caption.json").read_text())
    stats = summary["calls"]              # `calls` counts every attempt, retries included
    calls = stats["calls"] - stats["retries"] + stats["cache_hits"]
    results["interpret_call_retries"] = stats["retries"]
    images = sorted(p.stem for p in (project / "images").iterdir() if p.suffix != ".txt")
    metas = {name: json.loads((project / "captions" / f"{name}.json").read_text())
             for name in images if (project / "captions" / f"{name}.json").exists()}
    if code != 0 or len(metas) != len(images):
        results["interpret_calls_error"] = (f"caption.py exited {code} with {len(metas)} of "
                                            f"{len(images)} images captioned")
        return
    candidates = {n: len(m["candidates"]) for n, m in metas.items()}
    results["interpret_calls_per_image"] = round(calls / len(images), 3)
    results["interpret_candidate_calls_per_image"] = round(sum(candidates.values()) / len(images), 3)
    results["interpret_shorten_calls"] = calls - sum(candidates.values())
    results["interpret_candidates_per_image"] = candidates
    results["interpret_calls_fallbacks"] = sum("fallback" in m["flags"] for m in metas.values())
    results["interpret_rejected_candidates"] = {      # why a second call was needed
        n: [f"{c['caption']} -- {'; '.join(c['reasons'])}" for c in m["candidates"] if not c["passed"]]
        for n, m in metas.items() if any(not c["passed"] for c in m["candidates"])}
    results["interpret_captions"] = {n: m["caption"] for n, m in metas.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small samples (the 2k/20k memory runs stay)")
    parser.add_argument("--skip", default="", help="comma-separated groups to skip: "
                        "saturation,saturation50,concurrency,upsample,sdxl,rss,rssrun,coverage,shards,"
                        "startup,quality,verifier,calls")
    parser.add_argument("--only", default="", help="comma-separated groups to run (the rest are skipped)")
    args = parser.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    only = set(filter(None, args.only.split(",")))
    q = args.quick
    results: dict = {"machine": f"{platform.machine()} {os.cpu_count()} cores, "
                                f"Python {platform.python_version()}", "quick": q}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        groups = [
            ("saturation", lambda: bench_saturation(tmp, 320 if q else 1600, results)),
            ("saturation50", lambda: bench_saturation(tmp, 600 if q else 2000, results, 0.05,
                                                      "_50ms", rerun=False)),
            ("concurrency", lambda: bench_concurrency(tmp, 32 if q else 128, results)),
            ("upsample", lambda: bench_upsample(tmp, 24 if q else 96, results)),
            ("sdxl", lambda: bench_tiny_sdxl(8 if q else 32, results)),
            ("rss", lambda: bench_rss(tmp, [10_000, 100_000], results)),
            ("rssrun", lambda: bench_rss_run(tmp, [2_000, 20_000], results)),
            ("coverage", lambda: bench_coverage(4000 if q else 20_000, 1000 if q else 4000, results)),
            ("shards", lambda: bench_shards(tmp, [2_000, 20_000], results)),
            ("startup", lambda: bench_startup(tmp, results)),
            ("quality", lambda: bench_caption_quality(tmp, results)),
            ("verifier", lambda: bench_verifier(results)),
            ("calls", lambda: bench_interpret_calls(tmp, results)),
        ]
        for name, fn in groups:
            if name in skip or (only and name not in only):
                continue
            started = time.perf_counter()
            fn()
            results[f"{name}_bench_s"] = round(time.perf_counter() - started, 1)
    for key, value in results.items():
        print(f"{key}: {value}")
    out = ROOT / "benchmarks" / "results.json"
    # A partial run (--only/--skip) updates its own figures and keeps the others.
    merged = json.loads(out.read_text()) if out.exists() and (skip or only) else {}
    merged.update(results)
    out.write_text(json.dumps(merged, indent=2) + "\n")
    return 1 if any(key.endswith("_error") for key in results) else 0


if __name__ == "__main__":
    sys.exit(main())
