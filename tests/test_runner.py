"""The runner: shards, limits, skip, resume and per-item failures, on a small real stage."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from stages.config import load_config
from stages.errors import FatalError, ItemError
from stages.executors.local import LocalExecutor
from stages.runner import run_stages
from stages.stage import Context, Item, RunOptions, Stage, in_shard, parse_shard
from stages.store import atomic_write_text, read_json

ROOT = Path(__file__).resolve().parent.parent


class UpperStage(Stage):
    """Writes out/<id>.txt = the upper-cased input; fails items named 'bad*'."""

    name = "interpret"

    def __init__(self, ctx, inputs: dict[str, str], out: Path, log: list):
        super().__init__(ctx)
        self.values, self.out, self.log = inputs, out, log

    def items(self):
        for key in sorted(self.values):
            yield Item(key, self.values[key])

    def inputs(self, item):
        return item.data

    def is_done(self, item, key):
        path = self.out / f"{item.id}.json"
        return path.exists() and read_json(path)["key"] == key

    async def process(self, item, key):
        self.log.append(item.id)
        await asyncio.sleep(0.001)
        if item.id.startswith("bad"):
            raise ItemError(f"cannot handle {item.id}")
        if item.id.startswith("fatal"):
            raise FatalError("server gone")
        if item.id.startswith("crash"):
            raise RuntimeError("unexpected")
        atomic_write_text(self.out / f"{item.id}.json", json.dumps({"key": key}))


def run(tmp_path, inputs, *, sets=(), **opts):
    cfg = load_config(ROOT / "config.ini", [f"paths.cache={tmp_path / 'cache'}", *sets])
    ctx = Context(cfg, program="caption", options=RunOptions(**opts))
    log: list[str] = []
    stage = UpperStage(ctx, inputs, tmp_path / "out", log)
    return asyncio.run(run_stages([stage], ctx, LocalExecutor()))[0], log


def test_shards_partition_ids_with_no_gap_and_no_overlap():
    ids = [f"img{i:05d}" for i in range(2000)]
    for n in (1, 2, 3, 7):
        parts = [{i for i in ids if in_shard(i, (k, n))} for k in range(n)]
        assert set().union(*parts) == set(ids)
        assert sum(len(p) for p in parts) == len(ids)
        if n > 1:
            assert all(len(p) > len(ids) / n * 0.8 for p in parts)
    assert parse_shard("1/3") == (1, 3)


def test_failures_are_recorded_and_the_batch_goes_on(tmp_path):
    inputs = {"a": "1", "bad1": "2", "b": "3", "crash": "4", "c": "5"}
    report, log = run(tmp_path, inputs)
    assert report.ok == 3 and report.reused == 0
    assert dict(report.failed) == {"bad1": "cannot handle bad1",
                                   "crash": "RuntimeError: unexpected"}
    again, log2 = run(tmp_path, inputs)
    assert again.reused == 3 and again.ok == 0 and sorted(log2) == ["bad1", "crash"]


def test_changed_input_is_redone_and_others_reused(tmp_path):
    run(tmp_path, {"a": "1", "b": "2"})
    report, log = run(tmp_path, {"a": "1", "b": "changed"})
    assert log == ["b"] and report.reused == 1 and report.ok == 1


def test_limit_and_shard_select_items(tmp_path):
    inputs = {f"i{n}": str(n) for n in range(40)}
    report, log = run(tmp_path, inputs, limit=5)
    assert report.ok == 5 and len(log) == 5
    shard0, log0 = run(tmp_path / "s", inputs, shard=(0, 2))
    shard1, log1 = run(tmp_path / "s", inputs, shard=(1, 2))
    assert set(log0) | set(log1) == set(inputs) and not set(log0) & set(log1)


def test_limit_counts_an_item_that_fails_while_processing_once(tmp_path):
    """--limit N hands out N items even when some fail in process(): their failure lands in
    report.failed while the listing goes on and must not count against the limit again."""
    inputs = {**{f"bad{n}": "x" for n in range(4)}, **{f"i{n}": str(n) for n in range(10)}}
    report, log = run(tmp_path, inputs, limit=6, sets=["llm.concurrency=1"])
    assert len(log) == 6 and len(report.failed) == 4 and report.ok == 2, (log, report)


def test_skip_true_runs_nothing(tmp_path):
    report, log = run(tmp_path, {"a": "1"}, sets=["interpret.skip=true"])
    assert report.state == "skipped" and log == []


def test_dry_run_counts_without_processing(tmp_path):
    run(tmp_path, {"a": "1"})
    report, log = run(tmp_path, {"a": "1", "b": "2", "c": "3"}, dry_run=True)
    assert log == [] and report.ok == 2 and report.reused == 1


def test_fatal_error_stops_the_stage(tmp_path):
    inputs = {f"fatal{n}": str(n) for n in range(3)}
    with pytest.raises(FatalError, match="server gone"):
        run(tmp_path, inputs)


def test_a_shard_that_holds_none_of_the_items_says_so(tmp_path):
    """--shard I/N with no item of this part must not read as an empty input ("no images
    found in images/"): the flag is what left the stage nothing to do."""
    other = next(k for k in range(4) if not in_shard("a", (k, 4)))
    report, log = run(tmp_path, {"a": "1"}, shard=(other, 4))
    assert log == [] and report.ok == 0
    assert f"--shard {other}/4" in report.note and "no items found" not in report.note
    plan, _ = run(tmp_path, {"a": "1"}, shard=(other, 4), dry_run=True)
    assert f"--shard {other}/4" in plan.note
    empty, _ = run(tmp_path, {}, shard=(other, 4))
    assert "no items found" in empty.note                 # an empty input still says that


def test_only_a_skipped_stage_says_which_key_skips_it(tmp_path):
    """`--only interpret` with interpret.skip = true did nothing and said only "skipped"."""
    report, log = run(tmp_path, {"a": "1"}, sets=["interpret.skip=true"], only=("interpret",))
    assert report.state == "skipped" and log == []
    assert "interpret.skip = true" in report.note and "--set interpret.skip=false" in report.note
