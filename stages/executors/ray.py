"""Ray Data executor (`run.executor = ray`): the same stage item functions across a cluster.

The driver lists a stage's items and keeps those that are not done (the same keys as the
local executor, so both resume each other's work). The rest become a Ray Dataset that
`map_batches` sends through a pool of actors: each actor builds its own Context and stage
from the same config (backends load once per actor) and processes its batch with the
stage's own `process`, with bounded async concurrency. Results come back as one status
row per item; the driver fills the stage report. Outputs are written by the actors to the
shared filesystem exactly as in a local run.

Optional: `pip install "ray[data]"`. Connects to `RAY_ADDRESS` when set, else starts a
local instance.
"""

from __future__ import annotations

import asyncio
import pickle
from pathlib import Path

from ..errors import ConfigError, FatalError, ItemError


class StageWorker:
    """A Ray actor: one stage instance with its own backends, fed batches of items."""

    def __init__(self, config: str, overrides: list[str], cwd: str, program: str, stage: str):
        from ..config import load_config
        from ..registry import stage_class
        from ..stage import Context, RunOptions

        cfg = load_config(Path(config), overrides, cwd=Path(cwd))
        self.ctx = Context(cfg, program=program, options=RunOptions(quiet=True))
        self.stage = stage_class(stage)(self.ctx)
        self.stage.prepare()

    def __call__(self, batch: dict) -> dict:
        items = [pickle.loads(blob) for blob in batch["item"]]
        before = self.ctx.stats.calls
        statuses = asyncio.run(self._run(items))
        return {"id": [i.id for i in items], "status": [s for s, _ in statuses],
                "reason": [r for _, r in statuses],
                "calls": [self.ctx.stats.calls - before] + [0] * (len(items) - 1)}

    async def _run(self, items: list) -> list[tuple[str, str]]:
        await self.stage.start()
        sem = asyncio.Semaphore(self.stage.concurrency)

        async def one(item) -> tuple[str, str]:
            async with sem:
                try:
                    await self.stage.process(item, self.stage.key(item))
                    return "ok", ""
                except (ItemError, FatalError) as exc:
                    return "failed", str(exc)
                except Exception as exc:  # one bad item never stops a batch
                    return "failed", f"{type(exc).__name__}: {exc}"[:300]

        try:
            return list(await asyncio.gather(*(one(i) for i in items)))
        finally:
            self.stage.flush()
            await self._close_async_backends()

    async def _close_async_backends(self) -> None:
        await self.ctx.aclose()


class RayExecutor:
    async def run(self, stage, options, report) -> None:
        import asyncio

        await asyncio.to_thread(run_stage_on_ray, stage, report, options)


def run_stage_on_ray(stage, report, options) -> None:
    """Process the stage's pending items on Ray; fill `report` like the local executor."""
    try:
        import ray
    except ImportError:
        raise ConfigError("run.executor = ray needs Ray: pip install \"ray[data]\" "
                          "(or set run.executor = local)") from None
    from ..stage import in_shard
    from . import triage

    pending = []
    for item in stage.items():
        if not in_shard(item.split_on, options.shard):
            continue
        if options.limit and len(pending) + report.reused + len(report.failed) >= options.limit:
            report.limited = f"--limit {options.limit}"
            break
        state, key_or_reason = triage(stage, item)
        if state == "failed":
            report.failed.append((item.id, key_or_reason))
        elif state == "done":
            report.reused += 1
        else:
            pending.append({"item": pickle.dumps(item)})
    if not pending:
        return
    if not ray.is_initialized():
        ray.init(ignore_reinit_error=True, log_to_driver=False, include_dashboard=False)
    ctx = stage.ctx
    cfg_path = str(Path(ctx.cfg.source).resolve())
    dataset = ray.data.from_items(pending)
    results = dataset.map_batches(
        StageWorker, batch_size=max(1, stage.concurrency * 2), batch_format="numpy",
        fn_constructor_kwargs={"config": cfg_path, "overrides": list(ctx.overrides),
                               "cwd": str(Path.cwd()),
                               "program": ctx.program, "stage": stage.name},
        concurrency=ray_actors(ctx)).take_all()
    for row in results:
        ctx.stats.calls += int(row["calls"])
        if row["status"] == "ok":
            report.ok += 1
        else:
            report.failed.append((str(row["id"]), str(row["reason"])))


def ray_actors(ctx) -> int:
    import ray

    cpus = int(ray.cluster_resources().get("CPU", 1))
    return max(1, min(cpus, 8))
