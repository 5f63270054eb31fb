"""Fault-injection points for crash tests: the process kills itself at a named point.

`TAGCAP_KILL_AT=NAME` sends the process SIGKILL (what `kill -9` does) the first time it
reaches point NAME; `TAGCAP_KILL_AT=NAME@N` the Nth time (counted in this process, across
its threads). A test kills at a point it names instead of after a random delay, so what the
crash leaves behind is the same on every run. The points:

- `store.before_replace`: an atomic write's temp file is complete, not yet renamed into place
  (every artifact, cache entry, tag store and run record goes through it);
- `store.after_replace`: an atomic write has just been renamed into place;
- `interpret.between_writes`: a caption's provenance (NAME.json) is written, NAME.txt is not;
- `interpret.before_beside`: the caption is written, its copy beside the image is not;
- `interpret.sample_recorded`: a shard sample's caption is in the cache, its shard's Parquet
  file is not written yet;
- `interpret.shard_written`: a shard's Parquet file has just been written, during the run.

Unset (always, outside tests) a point costs one environment lookup.
"""

from __future__ import annotations

import os
import signal
import threading

POINTS = ("store.before_replace", "store.after_replace", "interpret.between_writes",
          "interpret.before_beside", "interpret.sample_recorded", "interpret.shard_written")
_reached: dict[str, int] = {}       # per process, only while TAGCAP_KILL_AT names a point
_lock = threading.Lock()


def parse(spec: str) -> tuple[str, int]:
    """`NAME` or `NAME@N` as (name, n); ValueError naming what is wrong."""
    name, _, nth = spec.partition("@")
    if name not in POINTS:
        raise ValueError(f"TAGCAP_KILL_AT={spec}: unknown point {name!r}; points: {', '.join(POINTS)}")
    if nth and not (nth.isdigit() and int(nth) >= 1):
        raise ValueError(f"TAGCAP_KILL_AT={spec}: N in NAME@N must be a whole number >= 1")
    return name, int(nth or 1)


def point(name: str) -> None:
    spec = os.environ.get("TAGCAP_KILL_AT")
    if not spec or not spec.startswith(name):
        return
    target, nth = parse(spec)
    if target != name:
        return
    with _lock:
        _reached[name] = _reached.get(name, 0) + 1
        if _reached[name] == nth:
            os.kill(os.getpid(), signal.SIGKILL)
