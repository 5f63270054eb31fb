"""Ray Data executor (`run.executor = ray`): the same stage item functions across a cluster.

How a stage runs:
- The driver lists the stage's items lazily with the same `pending()` as the local executor
  (same keys, so either executor resumes the other's work) and hands the items that need
  work, in chunks, to a small feeder actor on the driver's node (a bounded queue: the
  listing waits while the cluster is busy, so neither the pending items nor the results are
  ever all in memory).
- A Ray Dataset reads those chunks (one read task on the driver's node, pulling from the
  feeder) and `map_batches` sends them through a pool of `StageWorker` actors. An actor
  lives for the whole stage: it has one event loop (in its own thread), builds its Context,
  stage and backends once (an embedded llama.cpp server starts once per actor, at its first
  call), processes every batch it is given on that loop, and closes its backends when it
  ends (Ray Data calls `__del__` when the pool shuts down; `close()` does the work).
- The driver consumes one status row per item as batches finish (`iter_batches`) and fills
  the stage report. A `FatalError` in an actor (a server it cannot reach, a full disk)
  stops the run with that one message, as in a local run.
- Actors get the driver's own `Config` (pickled: what the driver read at launch, --set
  values included) and the prompt templates its stage read (`worker_config`); neither
  config.ini nor a template file is read again, so an edit during a run cannot reach
  outputs whose keys the driver computed from the old values.
- Outputs are written by the actors to the shared filesystem exactly as in a local run
  (per item, atomically), so an item whose worker dies is simply redone by the next run.

The pool size is `run.ray_actors` (0: one actor per CPU of the cluster, or per GPU when
the stage's backends run on GPUs; such actors ask Ray for one GPU each).

Optional: `pip install "ray[data]"`. Connects to `RAY_ADDRESS` when set, else starts a
local instance.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import pickle
import threading
import warnings
from collections.abc import Iterable, Iterator
from typing import Any

from ..errors import ConfigError, FatalError, ToolkitError
from ..resources import evaluation_vision
from . import outcome, pending

CHUNKS_QUEUED_PER_ACTOR = 2     # chunks waiting in the feeder per actor (backpressure)
STATS = ("calls", "cache_hits", "retries")      # the call counts each batch reports
TALLY = "tally_"                # column prefix of a stage's tallies (Stage.tallies)
LISTING_STOP_S = 300            # hang guard only: a stopped listing ends at its next chunk
LOST = ("its Ray worker stopped before reporting it ({why}); rerun to finish it "
        "(finished items are kept)")


def worker_config(ctx) -> bytes:
    """What an actor works from, pickled: the driver's Config and the prompt templates the
    driver's stage read (their text is in the keys the driver computes). An actor started
    or restarted later (a lost node) reads neither config.ini nor a template file again, so
    an edit during the run cannot put new text under a key made from the old."""
    return pickle.dumps((ctx.cfg, dict(ctx._templates)))


class StageWorker:
    """A Ray Data actor: one stage instance with its own event loop and backends, for the
    life of the stage. Ray Data calls it once per batch of items."""

    def __init__(self, config: bytes, program: str, stage: str):
        from ..registry import stage_class
        from ..stage import Context, RunOptions

        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="tagcap-stage-loop",
                                       daemon=True)
        self.thread.start()
        self.ctx = None
        self.stage = None
        self.fatal = ""          # why this actor cannot work: every batch reports it
        self.tallies = tuple(stage_class(stage).tallies)
        try:
            cfg, templates = pickle.loads(config)   # what the driver read (worker_config)
            self.ctx = Context(cfg, program=program, options=RunOptions(quiet=True))
            self.ctx._templates.update(templates)   # never read again from disk here
            self.stage = stage_class(stage)(self.ctx)
            self.stage.prepare()
            self._wait(self.stage.start())
        except ToolkitError as exc:
            self.fatal = str(exc)
        except Exception as exc:  # a stage that cannot start on a worker stops the run, once
            self.fatal = (f"the {stage} stage could not start on a Ray worker: "
                          f"{type(exc).__name__}: {exc}")[:500]

    def _wait(self, coro) -> Any:
        """Run `coro` on this actor's own loop and wait for it."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def __call__(self, batch: dict) -> dict:
        ids = [str(i) for i in batch["id"]]
        if self.fatal:
            statuses = [("fatal", self.fatal)] * len(ids)
            spent = {name: 0 for name in STATS + tuple(TALLY + t for t in self.tallies)}
        else:
            work = [pickle.loads(blob) for blob in batch["item"]]
            before = self._counts()
            statuses = self._wait(self._run(work, [str(k) for k in batch["key"]]))
            after = self._counts()
            spent = {name: after[name] - before[name] for name in after}
        first = [True] + [False] * (len(ids) - 1)           # the batch's counts ride on its first row
        return {"id": ids, "status": [s for s, _ in statuses], "reason": [r for _, r in statuses],
                **{name: [n if f else 0 for f in first] for name, n in spent.items()}}

    def _counts(self) -> dict[str, int]:
        """The call stats and the stage's tallies (prefixed), as they stand."""
        stats = self.ctx.stats.as_dict()
        return {**{name: int(stats[name]) for name in STATS},
                **{TALLY + name: int(getattr(self.stage, name)) for name in self.tallies}}

    async def _run(self, items: list, keys: list[str]) -> list[tuple[str, str]]:
        slots = asyncio.Semaphore(self.stage.in_flight)

        async def one(item, key: str) -> tuple[str, str]:
            async with slots:
                try:
                    await self.stage.process(item, key)
                    return "ok", ""
                except Exception as exc:  # one bad item never stops a batch; fatal ones stop the run
                    return outcome(exc)

        statuses = list(await asyncio.gather(*(one(i, k) for i, k in zip(items, keys, strict=True))))
        try:
            await asyncio.to_thread(self.stage.flush)
        except Exception as exc:  # the batch's buffered outputs were not saved: its items failed
            state, reason = outcome(exc)
            if state == "fatal":
                return [(state, reason)] * len(statuses)
            return [(s, r) if s != "ok" else ("failed", f"its output could not be saved: {reason}")
                    for s, r in statuses]
        return statuses

    def close(self) -> None:
        """Close the backends (stops an embedded server) and the loop; idempotent."""
        loop, self.loop = self.loop, None
        if loop is None:
            return
        try:
            if self.ctx is not None:
                asyncio.run_coroutine_threadsafe(self.ctx.aclose(), loop).result(timeout=60)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            self.thread.join(timeout=10)
            if not self.thread.is_alive():
                loop.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # an actor going away must not fail on its way out
            pass


class _Feeder:
    """Bounded queue of item chunks between the driver's listing and the read task."""

    def __init__(self, capacity: int):
        self.queue: asyncio.Queue = asyncio.Queue(max(1, capacity))

    async def put(self, chunk: dict) -> None:
        await self.queue.put(chunk)

    async def close(self) -> None:
        await self.queue.put(None)

    async def get(self) -> dict | None:
        chunk = await self.queue.get()
        if chunk is None:                    # the end: leave it for any later reader (a retry)
            self.queue.put_nowait(None)
        return chunk


def _chunk_source(feeder: Any):
    """A Ray Data datasource with one read task (on the driver's node) that pulls chunks
    from `feeder` until it closes; one is enough, as it only moves chunks along."""
    import pyarrow as pa
    import ray
    from ray.data.block import BlockMetadata
    from ray.data.datasource import Datasource, ReadTask

    def read() -> Iterator[Any]:
        while (chunk := ray.get(feeder.get.remote())) is not None:
            yield pa.table(chunk)

    class PendingItems(Datasource):
        def estimate_inmemory_data_size(self) -> int | None:
            return None

        def supports_distributed_reads(self) -> bool:
            return False                     # read tasks stay on the driver's node

        def get_read_tasks(self, parallelism: int, per_task_row_limit: int | None = None,
                           data_context: Any = None) -> list:
            meta = BlockMetadata(num_rows=None, size_bytes=None, input_files=None, exec_stats=None)
            return [ReadTask(read, meta)]

    return PendingItems()


class RayExecutor:
    async def run(self, stage, options, report) -> None:
        """Process the stage's pending items on Ray; fill `report` like the local executor."""
        size = max(1, stage.in_flight * 2)             # items per batch (and per chunk)
        todo = pending(stage, options, report)
        first = _chunk(itertools.islice(todo, size))
        if not first["id"]:                            # nothing to do: no cluster work at all
            return
        connect()                                      # in the main thread (Ray's signal handlers)
        # The Ray driver loop runs in a daemon thread of its own, not asyncio.to_thread: when
        # the run is cancelled (Ctrl-C), `stop` ends it at the next batch (which shuts the
        # actors down), and neither asyncio.run's executor shutdown nor the interpreter's
        # exit waits for the rest of the stage.
        loop = asyncio.get_running_loop()
        finished: asyncio.Future = loop.create_future()
        stop = threading.Event()

        def settle(error: BaseException | None) -> None:
            if finished.done():                        # cancelled meanwhile
                return
            if error is not None:
                finished.set_exception(error)
            else:
                finished.set_result(None)

        def drive() -> None:
            error = None
            try:
                _run_on_ray(stage, options, report, first, todo, size, stop)
            except BaseException as exc:  # handed to the awaiting task, which raises it
                error = exc
            try:
                loop.call_soon_threadsafe(settle, error)
            except RuntimeError:                       # the loop is gone: nobody waits
                pass

        threading.Thread(target=drive, name="tagcap-ray-driver", daemon=True).start()
        try:
            await finished
        except asyncio.CancelledError:
            stop.set()
            raise


def connect() -> Any:
    """The `ray` module, connected to `RAY_ADDRESS` (or a local instance) unless it already is."""
    try:
        import ray
    except ImportError:
        raise ConfigError("run.executor = ray needs Ray: pip install \"ray[data]\" "
                          "(or set run.executor = local)") from None
    if not ray.is_initialized():
        ray.init(address=os.environ.get("RAY_ADDRESS") or None, log_to_driver=False,
                 include_dashboard=False, logging_level=logging.WARNING)
    import ray.data  # sets up its loggers; then quiet their console
    quiet = [h for h in logging.getLogger("ray.data").handlers if h.name == "console"]
    for handler in quiet:                      # no per-dataset chatter (Ray's log file keeps it)
        handler.setLevel(logging.WARNING)
    if not quiet:
        logging.getLogger("ray.data").setLevel(logging.WARNING)
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)   # nor "bars off"
    return ray


def _run_on_ray(stage, options, report, first: dict, todo: Iterator, size: int,
                stop: threading.Event | None = None) -> None:
    """Stream `first` and then the rest of `todo` through a pool of actors; count results.
    A set `stop` ends it at the next batch (the run was cancelled)."""
    ray = connect()
    ctx = stage.ctx
    actors, per_actor = actor_pool(stage, ray.cluster_resources())
    if len(first["id"]) < size:                # the whole stage is one batch: one actor
        actors = 1
    from ray.data import ActorPoolStrategy, DataContext
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    DataContext.get_current().enable_progress_bars = bool(ctx.cfg.run.progress and not options.quiet)
    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    feeder = ray.remote(_Feeder).options(num_cpus=0, scheduling_strategy=here).remote(
        CHUNKS_QUEUED_PER_ACTOR * actors)
    sent: dict[str, None] = {}                 # items handed to the cluster, not yet reported
    lock = threading.Lock()
    listing = _Listing(first, todo, size, feeder, sent, lock)
    dataset = ray.data.read_datasource(_chunk_source(feeder), num_cpus=0)
    results = dataset.map_batches(
        StageWorker, batch_size=size, batch_format="numpy", compute=ActorPoolStrategy(size=actors),
        **per_actor,
        fn_constructor_kwargs={"config": worker_config(ctx), "program": ctx.program,
                               "stage": stage.name})
    listing.start()
    try:
        with warnings.catch_warnings():        # "fewer inputs than actors": the stream is lazy
            warnings.filterwarnings("ignore", message="The minimum number of concurrent actors")
            for rows in results.iter_batches(batch_format="numpy", batch_size=None):
                if stop is not None and stop.is_set():
                    return                     # leaving the loop shuts Ray Data's actors down
                _settle_rows(rows, stage, report, sent, lock)
        listing.join()
    except ray.exceptions.RayError as exc:
        why = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise FatalError(f"the Ray run of the {stage.name} stage stopped: {why}; rerun to go on "
                         "(finished items are kept)") from None
    finally:
        listing.stop()
        ray.kill(feeder)                       # a listing waiting on the feeder returns now
        # The listing reads the stage's state (e.g. interpret's shard bookkeeping): it must
        # be over before the runner calls stage.finish(). It stops at its next chunk.
        listing.join(LISTING_STOP_S)
    if listing.error is not None:
        raise listing.error
    for item_id in sent:                       # handed out, never reported: a worker went away
        report.failed.append((item_id, LOST.format(why="no result came back")))


def _chunk(pairs: Iterable[tuple[Any, str]]) -> dict[str, list]:
    """Items and their keys as the columns of one block."""
    chunk: dict[str, list] = {"id": [], "key": [], "item": []}
    for item, key in pairs:
        chunk["id"].append(item.id)
        chunk["key"].append(key)
        chunk["item"].append(pickle.dumps(item))
    return chunk


class _Listing(threading.Thread):
    """The rest of the driver's lazy listing, in a thread: chunks of pending items into the
    feeder, which blocks while the cluster is busy."""

    def __init__(self, first: dict, todo: Iterator, size: int, feeder: Any, sent: dict,
                 lock: threading.Lock):
        super().__init__(name="tagcap-ray-listing", daemon=True)
        self.first, self.todo, self.size = first, todo, size
        self.feeder, self.sent, self.lock = feeder, sent, lock
        self.error: BaseException | None = None
        self.stopped = threading.Event()

    def run(self) -> None:
        import ray

        try:
            chunk = self.first
            while chunk["id"] and not self.stopped.is_set():
                with self.lock:
                    self.sent.update(dict.fromkeys(chunk["id"]))
                ray.get(self.feeder.put.remote(chunk))
                chunk = _chunk(itertools.islice(self.todo, self.size))
        except BaseException as exc:  # a FatalError in the listing stops the run (re-raised by the driver)
            if not self.stopped.is_set():
                self.error = exc
        finally:
            if not self.stopped.is_set():
                try:
                    ray.get(self.feeder.close.remote())
                except ray.exceptions.RayError:
                    pass

    def stop(self) -> None:
        self.stopped.set()


def _settle_rows(rows: dict, stage, report, sent: dict, lock: threading.Lock) -> None:
    """Count one batch of status rows into `report`, the call stats and the driver's stage
    (its tallies); a fatal status stops the run. The call stats count every call an actor
    made, a retried batch's too (they really happened); items and tallies count once."""
    stats = stage.ctx.stats
    for name in STATS:
        setattr(stats, name, getattr(stats, name) + int(sum(rows[name])))
    for row, (item_id, status, reason) in enumerate(zip(rows["id"], rows["status"], rows["reason"],
                                                        strict=True)):
        item_id, status, reason = str(item_id), str(status), str(reason)
        if status == "fatal":
            raise FatalError(reason)
        with lock:
            if item_id not in sent:            # a batch done twice (a retried task): count it once
                continue
            del sent[item_id]
        for name in stage.tallies:
            setattr(stage, name, getattr(stage, name) + int(rows[TALLY + name][row]))
        if status == "ok":
            stage.completed(item_id)           # e.g. the shard's Parquet, once its last sample is in
            report.ok += 1
        else:
            report.failed.append((item_id, reason))


def actor_pool(stage, cluster: dict) -> tuple[int, dict]:
    """(number of actors, Ray resources per actor) for `stage` on a cluster with `cluster`
    resources: `run.ray_actors`, else one per CPU, or one per GPU (and one GPU each) when
    the stage's backends run on GPUs."""
    gpus = int(cluster.get("GPU", 0))
    cfg = stage.ctx.cfg
    wanted = cfg.run.ray_actors
    if uses_gpu(stage, gpus):
        if not gpus:
            raise ConfigError(f"the {stage.name} stage runs its model on a GPU, but the Ray cluster "
                              "has none: add GPU nodes, or set the device to cpu")
        return wanted or gpus, {"num_gpus": 1}
    return wanted or max(1, int(cluster.get("CPU", 1))), {"num_cpus": 1}


def uses_gpu(stage, cluster_gpus: int) -> bool:
    """True when one of the stage's backends loads a model on a GPU (vLLM, a local vision
    model or diffusers on cuda, or on auto where the cluster has GPUs)."""
    cfg = stage.ctx.cfg
    backends = set(stage.declared.backends)

    def on_gpu(device: str) -> bool:
        return device == "cuda" or (device == "auto" and cluster_gpus > 0)

    if "chat" in backends and cfg.llm.backend == "vllm":
        return True
    visions = [cfg.vision] * ("vision" in backends) + [evaluation_vision(cfg)] * ("eval_vision" in backends)
    if any(v.backend in ("classifier", "blip") and on_gpu(v.device) for v in visions):
        return True
    return "images" in backends and cfg.generate.backend == "diffusers" and on_gpu(cfg.generate.device)
