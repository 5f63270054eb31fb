"""The tag store, `cache/tags.json`: one entry per tag with its wiki text and summary.

Entries record the source, model, template and key that produced them, so a changed input
re-summarises. Writers take a lock file, re-read what is on disk, merge their entries and
replace the file atomically: several shards can share one store, and a reader never sees a
half-written file. A store that cannot be read is never overwritten: it is moved aside to
`tags.json.corrupt-TIMESTAMP`, said in a warning, and the run goes on with what it rebuilds
(summaries already made come back from the call cache without model calls).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import time
from contextlib import contextmanager
from pathlib import Path

from .errors import FatalError
from .store import atomic_write_json

VERSION = 1
log = logging.getLogger(__name__)


class TagStore:
    def __init__(self, path: Path):
        self.path = Path(path)
        self.moved_aside: list[Path] = []      # unreadable stores set aside during this run
        self.unreadable = ""                   # why the store could not be read (read-only loads)

    def load(self, *, read_only: bool = False) -> dict[str, dict]:
        """The stored entries. An unreadable store is set aside (moved, said) so that it is
        never overwritten; with `read_only` (a dry run) it is only reported in `unreadable`."""
        return self._load(locked=False, read_only=read_only)

    def _load(self, *, locked: bool, read_only: bool = False) -> dict[str, dict]:
        try:
            with open(self.path, "rb") as fh:
                raw = fh.read()
        except FileNotFoundError:
            return {}
        try:
            data = json.loads(raw.decode("utf-8"))
            tags = data["tags"]
            if not isinstance(tags, dict):
                raise TypeError("'tags' is not an object")
        except (ValueError, KeyError, TypeError) as exc:
            why = f"{type(exc).__name__}: {exc}"[:160]
            if read_only:
                self.unreadable = why
            else:
                self._set_aside(why, raw, locked=locked)
            return {}
        return {k: v for k, v in tags.items() if isinstance(v, dict)}

    def _set_aside(self, why: str, raw: bytes, *, locked: bool) -> None:
        if not locked:
            with self._locked():
                return self._set_aside(why, raw, locked=True)
        try:
            if self.path.read_bytes() != raw:      # another writer replaced it meanwhile
                return
        except FileNotFoundError:
            return
        aside = self.path.with_name(f"{self.path.name}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}")
        try:
            os.replace(self.path, aside)
        except OSError as exc:
            raise FatalError(f"{self.path} cannot be read ({why}) and cannot be moved aside "
                             f"({exc.strerror}); move or delete it, then rerun") from None
        self.moved_aside.append(aside)
        log.warning("the tag store %s could not be read (%s); it was moved to %s and is rebuilt "
                    "(summaries already made come back from the call cache)", self.path, why, aside.name)

    @contextmanager
    def _locked(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(str(self.path) + ".lock", os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def update(self, entries: dict[str, dict]) -> None:
        """Merge `entries` into the store on disk (last writer wins per tag)."""
        if not entries:
            return
        with self._locked():
            merged = self._load(locked=True)
            merged.update(entries)
            atomic_write_json(self.path, {"version": VERSION,
                                          "tags": dict(sorted(merged.items()))})


def summaries_for(tags: list[str], store: dict[str, dict]) -> dict[str, str]:
    """The summaries known for `tags`, in tag order."""
    return _known(tags, store, "summary")


def definitions_for(tags: list[str], store: dict[str, dict]) -> dict[str, str]:
    """The wiki definitions known for `tags`, in tag order."""
    return _known(tags, store, "wiki")


def facts_for(store: dict[str, dict]):
    """What the tag source said about each stored tag beyond its text (category, implied
    tags, other names), for stages/language/tagsift.py."""
    from .language.tagsift import TagFacts

    category, implies, other = {}, {}, {}
    for tag, entry in store.items():
        if entry.get("category"):
            category[tag] = str(entry["category"])
        if isinstance(entry.get("implies"), list):
            implies[tag] = tuple(str(t) for t in entry["implies"])
        if isinstance(entry.get("other_names"), list):
            other[tag] = tuple(str(t) for t in entry["other_names"])
    return TagFacts(category=category, implies=implies, other_names=other)


def _known(tags: list[str], store: dict[str, dict], field: str) -> dict[str, str]:
    out = {}
    for tag in tags:
        value = store.get(tag, {}).get(field)
        if value:
            out[tag] = value
    return out
