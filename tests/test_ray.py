"""run.executor = ray on a simulated two-node Ray cluster (`ray.cluster_utils.Cluster`).

The cluster is this module's own (a head without CPUs, so every actor runs on a worker
node); the tests attach to it by its address, never to another cluster. The caption
program runs in this process as the Ray driver, against the real local OpenAI-compatible
test server (and, for the embedded-server test, the real llama.cpp server).
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
from pathlib import Path

import pytest
from fakes import FakeOpenAI
from PIL import Image

import caption

ray = pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'ray[data]'")
ROOT = Path(__file__).resolve().parent.parent
HANG_GUARD_S = 120                      # wide bound that only catches a hung run, not a slow one


@pytest.fixture(scope="module")
def cluster():
    from ray.cluster_utils import Cluster

    saved = os.environ.pop("RAY_ADDRESS", None)          # never attach to another cluster
    nodes = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    try:
        nodes.add_node(num_cpus=2)
        ray.init(address=nodes.address, log_to_driver=False, logging_level=logging.WARNING)
        yield nodes
    finally:
        ray.shutdown()
        nodes.shutdown()
        if saved is not None:
            os.environ["RAY_ADDRESS"] = saved


def make_folder(folder: Path, n: int, tags: str = "cat, animal") -> list[str]:
    """n tiny real PNGs with tag files; their ids."""
    folder.mkdir(parents=True, exist_ok=True)
    ids = [f"img{i:03d}" for i in range(n)]
    for i, name in enumerate(ids):
        Image.new("RGB", (24, 16), (i * 4 % 256, 90, (200 - i) % 256)).save(folder / f"{name}.png")
        (folder / f"{name}.txt").write_text(tags + "\n")
    return ids


def cli(tmp: Path, url: str, *extra: str) -> list[str]:
    args = ["--config", str(ROOT / "config.ini"), "--quiet"]
    for item in (f"llm.base_url={url}", f"paths.images={tmp / 'images'}",
                 f"paths.captions={tmp / 'captions'}", f"paths.cache={tmp / 'cache'}",
                 "vision.backend=openai", "run.executor=ray", "llm.backoff=0.01",
                 f"tags.wiki_file={ROOT / 'data' / 'wiki.json'}", *extra):
        args += ["--set", item]
    return args


def summary(tmp: Path) -> tuple[dict, dict]:
    data = json.loads((tmp / "cache" / "summary-caption.json").read_text())
    return data, {s["name"]: s for s in data["stages"]}


def caption_ids(tmp: Path) -> list[str]:
    return sorted(p.stem for p in (tmp / "captions").glob("*.txt"))


@pytest.mark.slow                       # runs by default and in CI (pyproject.toml)
def test_many_batches_with_broken_files_then_a_rerun_that_calls_nothing(cluster, tmp_path):
    """60 images in batches of 4 over 2 actors (many batches each), plus two broken files:
    exit 1, every valid image captioned once, the broken ones failed by name, every model
    call counted once; the rerun makes no call at all."""
    ids = make_folder(tmp_path / "images", 60)
    (tmp_path / "images" / "broken1.png").write_text("not an image")
    (tmp_path / "images" / "broken2.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    with FakeOpenAI() as server:
        args = cli(tmp_path, server.url, "run.ray_actors=2", "llm.concurrency=1")
        assert caption.main(args) == 1                      # the broken files fail
        assert caption_ids(tmp_path) == ids
        data, stages = summary(tmp_path)
        for name in ("interrogate", "interpret"):
            assert stages[name]["ok"] == 60 and stages[name]["reused"] == 0, name
            assert sorted(f["id"] for f in stages[name]["failed"]) == ["broken1", "broken2"], name
        # Every call an actor made reached the driver's count exactly once.
        assert data["calls"]["calls"] == len(server.chat_requests) > 60
        calls = len(server.chat_requests)

        assert caption.main(args) == 1
        assert len(server.chat_requests) == calls           # nothing asked again
        data, stages = summary(tmp_path)
        assert data["calls"]["calls"] == 0
        assert stages["interpret"]["reused"] == 60 and stages["interpret"]["ok"] == 0
        # ... and the local executor sees the Ray run's work as done too.
        local = [a if a != "run.executor=ray" else "run.executor=local" for a in args]
        assert caption.main(local) == 1
        assert len(server.chat_requests) == calls


def actors_on(node) -> int:
    """Stage actors running on a node of the simulated cluster (its raylet's worker processes)."""
    import psutil

    try:
        raylet = psutil.Process(node.all_processes["raylet"][0].process.pid)
        return sum("StageWorker" in " ".join(p.cmdline()) for p in raylet.children(recursive=True))
    except (psutil.Error, KeyError, IndexError):
        return 0


@pytest.mark.slow                       # runs by default and in CI (pyproject.toml)
def test_a_worker_node_removed_mid_run_then_a_rerun_loses_and_duplicates_nothing(cluster, tmp_path):
    """A second worker node joins, so 3 actors (1 CPU each) must use both workers; the new
    node is removed, with its actors, while the interpret stage writes captions (the
    earlier stages ran locally, to keep the test short). That run ends
    (Ray restarts the lost actors and retries their batches, or the items are reported as
    lost); a rerun completes every item exactly once with a consistent summary."""
    ids = make_folder(tmp_path / "images", 40)
    extra = cluster.add_node(num_cpus=2)
    cluster.wait_for_nodes()
    removed: list[int] = []

    def remove_when_captioning() -> None:
        deadline = time.monotonic() + HANG_GUARD_S
        while time.monotonic() < deadline:
            busy = actors_on(extra)
            if busy and len(list((tmp_path / "captions").glob("*.txt"))) >= 8:
                cluster.remove_node(extra)
                removed.append(busy)
                return
            time.sleep(0.05)

    with FakeOpenAI() as server:
        args = cli(tmp_path, server.url, "run.ray_actors=3", "llm.concurrency=1")
        local = [a if a != "run.executor=ray" else "run.executor=local" for a in args]
        assert caption.main(local + ["--only", "tags,interrogate"]) == 0     # quick, in process
        server.latency = 0.1                                # keeps the interpret stage busy a while
        remover = threading.Thread(target=remove_when_captioning, daemon=True)
        remover.start()
        first = caption.main(args + ["--only", "interpret"])
        remover.join(HANG_GUARD_S)
        assert removed and removed[0] >= 1, "the node was never removed with an actor on it"
        assert first in (0, 1, 2)
        done_first = caption_ids(tmp_path)
        if first != 2:                          # a finished run's summary adds up
            s = summary(tmp_path)[1]["interpret"]
            assert s["ok"] + s["reused"] + len(s["failed"]) == len(ids), s
            assert all("Ray worker stopped" in f["reason"] for f in s["failed"]), s

        server.latency = 0.0
        assert caption.main(args) == 0
    assert caption_ids(tmp_path) == ids
    data, stages = summary(tmp_path)
    for name in ("interrogate", "interpret"):
        s = stages[name]
        assert s["failed"] == [] and s["ok"] + s["reused"] == len(ids), (name, s)
    assert stages["interpret"]["reused"] >= len(done_first) >= 8
    for name in ids:                                        # one caption each, one line
        assert (tmp_path / "captions" / f"{name}.txt").read_text().count("\n") <= 1


@pytest.mark.slow                       # runs by default and in CI (pyproject.toml)
def test_unreachable_or_unusable_server_stops_with_exit_2_and_one_line(cluster, tmp_path, capsys):
    """A server no one can reach: exit 2 and one line. A server that cannot take images
    (a FatalError inside the actors): also exit 2 and one line, not one failure per item."""
    make_folder(tmp_path / "images", 12)
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
    capsys.readouterr()
    assert caption.main(cli(tmp_path, closed, "llm.timeout=2")) == 2
    out, err = capsys.readouterr()
    assert len(err.strip().splitlines()) == 1 and "cannot reach the LLM server" in err, err
    assert "FAILED" not in out

    with FakeOpenAI(reject_images=True) as server:
        assert caption.main(cli(tmp_path, server.url, "run.ray_actors=2", "llm.concurrency=1")
                            + ["--only", "interrogate"]) == 2
    out, err = capsys.readouterr()
    assert len(err.strip().splitlines()) == 1, err
    assert "vision.backend = openai" in err and "image input is not supported" in err
    assert "FAILED" not in out


@pytest.mark.slow                       # runs by default and in CI (pyproject.toml)
def test_embedded_llama_server_starts_once_per_actor_not_per_batch(cluster, tmp_path):
    """llm.base_url = local: each actor starts one llama.cpp server for the whole stage,
    although there are more batches than actors (12 tags in batches of 4 over 2 actors)."""
    words = ["amber", "basalt", "cobalt", "dune", "ember", "fjord", "glacier", "harbor",
             "iris", "jade", "kelp", "lagoon"]
    make_folder(tmp_path / "images", 2, tags=", ".join(words))
    wiki = {w: f"The word {w} names a thing. It is used in many pictures of {w} scenes. "
               f"Artists draw {w} often." for w in words}
    (tmp_path / "wiki.json").write_text(json.dumps(wiki))
    args = cli(tmp_path, "local", "run.ray_actors=2", "llm.concurrency=1", "llm.local_parallel=1",
               "llm.local_threads=1", "llm.local_ctx=1024", f"tags.wiki_file={tmp_path / 'wiki.json'}")
    assert caption.main(args + ["--only", "tags"]) in (0, 1)
    log = (tmp_path / "cache" / "llama-server.log").read_text(errors="replace")
    starts = re.findall(r"tagcap: starting llama\.cpp on port \d+ for process (\d+)", log)
    batches = -(-len(words) // 4)               # llm.concurrency 1: 2 tags in flight, batches of 4
    assert batches > 2                          # more batches than actors: some actor had several
    assert starts and len(starts) == len(set(starts)) <= 2, starts     # one start per actor
    # ... and each actor stops its server when the stage ends (actors exit in the background
    # after their last batch, so the log is read until it says so, or the hang guard).
    deadline = time.monotonic() + HANG_GUARD_S
    while True:
        log = (tmp_path / "cache" / "llama-server.log").read_text(errors="replace")
        stops = re.findall(r"tagcap: stopped llama\.cpp on \S+ for process (\d+)", log)
        if sorted(stops) == sorted(starts) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert sorted(stops) == sorted(starts), log[-2000:]
    store = json.loads((tmp_path / "cache" / "tags.json").read_text())["tags"]
    assert set(words) <= set(store)


@pytest.mark.slow                       # runs by default and in CI (pyproject.toml)
def test_the_listing_waits_for_the_cluster_instead_of_running_ahead(cluster):
    """The driver lists items only as fast as the cluster takes them: with room for one
    queued chunk, the listing stops one chunk past it; then every item arrives, in
    order, and the listing ends the stream."""
    import itertools

    from stages.executors.ray import _chunk, _Feeder, _Listing
    from stages.stage import Item

    drawn: list[int] = []

    def todo():
        for i in range(100):
            drawn.append(i)
            yield Item(f"i{i:03d}"), f"key{i}"

    feeder = ray.remote(_Feeder).options(num_cpus=0).remote(1)
    items = todo()
    sent: dict[str, None] = {}
    listing = _Listing(_chunk(itertools.islice(items, 4)), items, 4, feeder, sent, threading.Lock())
    listing.start()
    deadline = time.monotonic() + HANG_GUARD_S
    while len(drawn) < 8 and time.monotonic() < deadline:      # one chunk queued, one waiting
        time.sleep(0.05)
    time.sleep(1.0)                                             # room to run ahead, were it eager
    assert len(drawn) == 8, len(drawn)
    got: list[str] = []
    while (chunk := ray.get(feeder.get.remote())) is not None:
        got += chunk["id"]
    listing.join(HANG_GUARD_S)
    assert got == [f"i{i:03d}" for i in range(100)] and list(sent) == got
    assert listing.error is None
    ray.kill(feeder)


def stage_for(tmp: Path, name: str, *sets: str):
    from stages.config import load_config
    from stages.registry import stage_class
    from stages.stage import Context, RunOptions

    cfg = load_config(ROOT / "config.ini", [f"paths.cache={tmp / 'cache'}", *sets], cwd=tmp)
    return stage_class(name)(Context(cfg, program="caption", options=RunOptions(quiet=True)))


def test_pool_size_comes_from_config_or_the_cluster_and_gpu_backends_ask_for_gpus(tmp_path):
    from stages.errors import ConfigError
    from stages.executors.ray import actor_pool

    cluster = {"CPU": 48.0, "GPU": 4.0}
    cpu_only = {"CPU": 48.0}
    assert actor_pool(stage_for(tmp_path, "interpret"), cluster) == (48, {"num_cpus": 1})
    assert actor_pool(stage_for(tmp_path, "interpret", "run.ray_actors=5"), cluster) == (5, {"num_cpus": 1})
    vllm = stage_for(tmp_path, "interpret", "llm.backend=vllm", "llm.model=some/model")
    assert actor_pool(vllm, cluster) == (4, {"num_gpus": 1})
    with pytest.raises(ConfigError, match="has none"):
        actor_pool(vllm, cpu_only)
    blip = ("vision.backend=blip", "vision.model=some/blip")

    def blip_pool(device: str, resources: dict) -> tuple:
        return actor_pool(stage_for(tmp_path, "interrogate", *blip, f"vision.device={device}"), resources)

    assert blip_pool("cuda", cluster) == (4, {"num_gpus": 1})
    assert blip_pool("auto", cluster) == (4, {"num_gpus": 1})
    assert blip_pool("auto", cpu_only) == (48, {"num_cpus": 1})
    assert blip_pool("cpu", cluster) == (48, {"num_cpus": 1})
    assert actor_pool(stage_for(tmp_path, "tags", "llm.backend=vllm", "llm.model=m", "run.ray_actors=2"),
                      cluster) == (2, {"num_gpus": 1})
    with pytest.raises(ConfigError, match="run.ray_actors"):
        stage_for(tmp_path, "interpret", "run.ray_actors=-1")


def test_stage_tallies_made_in_an_actor_reach_the_driver_once(tmp_path):
    """The counters process() keeps for finish() (interpret's fallbacks) are made in the
    actor's copy of the stage: they ride back with the batch and reach the driver's stage,
    which reports them; a batch seen twice (a retried task) adds nothing more. The actor
    runs in this process, without Ray, exactly as Ray Data calls it."""
    import asyncio
    import pickle

    from stages.executors import pending
    from stages.executors.ray import StageWorker, _settle_rows, worker_config
    from stages.stage import StageReport

    make_folder(tmp_path / "images", 6)
    with FakeOpenAI(lambda request: "A lighthouse keeper holds a lantern.") as server:
        sets = [a for a in cli(tmp_path, server.url)[3:] if a != "--set"]
        sets.append("llm.concurrency=1")
        driver = stage_for(tmp_path, "interpret", *sets)
        driver.prepare()
        asyncio.run(driver.start())
        report = StageReport("interpret")
        todo = list(pending(driver, driver.ctx.options, report))
        assert len(todo) == 6
        batch = {"id": [i.id for i, _ in todo], "key": [k for _, k in todo],
                 "item": [pickle.dumps(i) for i, _ in todo]}
        worker = StageWorker(worker_config(driver.ctx), "caption", "interpret")
        try:
            assert worker.fatal == ""
            rows = worker(batch)
        finally:
            worker.close()
    assert worker.stage.fallbacks == 6 and driver.fallbacks == 0
    sent = dict.fromkeys(batch["id"])
    _settle_rows(rows, driver, report, sent, threading.Lock())
    _settle_rows(rows, driver, report, sent, threading.Lock())          # the same batch again
    assert report.ok == 6 and driver.fallbacks == 6 and not sent
    assert driver.ctx.stats.calls == 2 * len(server.chat_requests) > 0  # calls made: both times
    driver.finish(report)
    assert "6 fallback captions" in report.note, report.note


@pytest.mark.slow                       # runs by default and in CI (pyproject.toml)
def test_webdataset_shards_on_ray_one_parquet_each_written_once_by_the_driver(cluster, tmp_path):
    """Shard samples (tar offsets, picklable) go through the actors; each shard's Parquet is
    written once, by the driver as soon as its last sample is reported (the actors only
    write per-sample records), with every sample once; the rerun calls nothing and rewrites
    nothing."""
    from test_webdataset import reply, rows, vision_images, write_shard

    data = tmp_path / "data"
    expected = {f"{s:05d}": write_shard(data / f"{s:05d}.tar", s * 10, 6) for s in range(3)}
    with FakeOpenAI(reply) as server:
        args = cli(tmp_path, server.url, f"paths.images={data}", "run.ray_actors=2",
                   "llm.concurrency=1")
        assert caption.main(args) == 0
        sent = vision_images(server)
        assert len(sent) == 18 and set(sent.values()) == {1}            # each sample once
        stages = summary(tmp_path)[1]
        assert stages["interpret"]["ok"] == 18, stages["interpret"]
        assert "3 shard Parquet files written, 0 unchanged" in stages["interpret"]["note"]
        written = rows(tmp_path / "captions")
        assert {unit: [r["key"] for r in got] for unit, got in written.items()} == expected
        assert all(r["caption"].strip() for got in written.values() for r in got)
        mtimes = {p: p.stat().st_mtime_ns for p in (tmp_path / "captions").glob("*.parquet")}
        calls = len(server.chat_requests)

        assert caption.main(args) == 0
        assert len(server.chat_requests) == calls
        stages = summary(tmp_path)[1]
        assert stages["interpret"]["reused"] == 18 and stages["interpret"]["ok"] == 0
        assert {p: p.stat().st_mtime_ns for p in mtimes} == mtimes


@pytest.mark.slow                       # runs by default and in CI (pyproject.toml)
def test_a_cancelled_run_stops_at_the_next_batch_instead_of_finishing_the_stage(cluster, tmp_path):
    """Ctrl-C cancels the run's task: the Ray driver loop stops at its next batch (and Ray
    Data shuts the actors down), so asyncio.run returns without waiting for the rest of the
    stage (it waited for every item when the loop ran in asyncio.to_thread's executor)."""
    import asyncio

    from stages.executors.ray import RayExecutor
    from stages.stage import StageReport

    ids = make_folder(tmp_path / "images", 60)
    with FakeOpenAI() as server:
        sets = [a for a in cli(tmp_path, server.url, "run.ray_actors=2", "llm.concurrency=1")[3:]
                if a != "--set"]
        assert caption.main(cli(tmp_path, server.url, "run.executor=local")
                            + ["--only", "tags,interrogate"]) == 0
        server.latency = 0.2
        stage = stage_for(tmp_path, "interpret", *sets)
        stage.ctx.overrides = tuple(sets)
        report = StageReport("interpret")

        async def go() -> None:
            stage.prepare()
            await stage.start()
            task = asyncio.create_task(RayExecutor().run(stage, stage.ctx.options, report))
            deadline = time.monotonic() + HANG_GUARD_S
            while not caption_ids(tmp_path) and time.monotonic() < deadline and not task.done():
                await asyncio.sleep(0.05)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

        asyncio.run(go())
        stopped_at = len(caption_ids(tmp_path))
        assert 0 < stopped_at < len(ids), stopped_at
        time.sleep(5)            # the batches the actors were running may still land ...
        settled = len(caption_ids(tmp_path))
        time.sleep(3)            # ... but then nothing goes on in the background
        assert len(caption_ids(tmp_path)) == settled < len(ids), (stopped_at, settled)


def test_a_batch_whose_outputs_cannot_be_saved_fails_its_items_with_the_reason(tmp_path):
    """The tags stage buffers summaries and saves them at the end of each batch (flush): a
    store that cannot be written fails the batch's items with the reason (it escaped the
    actor call, which Ray reports as an opaque task error that stops the whole run)."""
    import asyncio
    import pickle

    from stages.executors import pending
    from stages.executors.ray import StageWorker, worker_config
    from stages.stage import StageReport

    make_folder(tmp_path / "images", 2, tags="cat, dog")
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "tags.json.lock").mkdir()        # the store's lock cannot be opened
    with FakeOpenAI() as server:
        sets = [a for a in cli(tmp_path, server.url)[3:] if a != "--set"]
        driver = stage_for(tmp_path, "tags", *sets)
        driver.prepare()
        asyncio.run(driver.start())
        todo = list(pending(driver, driver.ctx.options, StageReport("tags")))
        batch = {"id": [i.id for i, _ in todo], "key": [k for _, k in todo],
                 "item": [pickle.dumps(i) for i, _ in todo]}
        worker = StageWorker(worker_config(driver.ctx), "caption", "tags")
        try:
            rows = worker(batch)
        finally:
            worker.close()
    assert rows["id"] == ["cat", "dog"] and list(rows["status"]) == ["failed", "failed"], rows
    assert all("could not be saved" in r and "tags.json.lock" in r for r in rows["reason"]), rows


def test_the_tags_summary_counts_what_the_actors_stored(tmp_path):
    """The tags stage's note counts the store's entries: those the actors merged into
    tags.json count too (the driver counted only its own, empty, buffer)."""
    import asyncio
    import pickle

    from stages.executors import pending
    from stages.executors.ray import StageWorker, _settle_rows, worker_config
    from stages.stage import StageReport

    make_folder(tmp_path / "images", 2, tags="cat, dog")
    with FakeOpenAI() as server:
        sets = [a for a in cli(tmp_path, server.url)[3:] if a != "--set"]
        driver = stage_for(tmp_path, "tags", *sets)
        driver.prepare()
        asyncio.run(driver.start())
        report = StageReport("tags")
        todo = list(pending(driver, driver.ctx.options, report))
        batch = {"id": [i.id for i, _ in todo], "key": [k for _, k in todo],
                 "item": [pickle.dumps(i) for i, _ in todo]}
        worker = StageWorker(worker_config(driver.ctx), "caption", "tags")
        try:
            rows = worker(batch)
        finally:
            worker.close()
    _settle_rows(rows, driver, report, dict.fromkeys(batch["id"]), threading.Lock())
    assert report.ok == 2, report
    driver.finish(report)
    stored = json.loads((tmp_path / "cache" / "tags.json").read_text())["tags"]
    assert set(stored) == {"cat", "dog"}
    counted = sum(int(n) for n in re.findall(r"(\d+) \w+", report.note.split(";")[0]))
    assert report.note.startswith("store: ") and counted == 2, report.note
