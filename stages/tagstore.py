"""The tag store, `cache/tags.json`: one entry per tag with its wiki text and summary.

Entries record the source, model and template hash that produced them, so a changed
template or model re-summarises. Writers take a lock file, re-read what is on disk, merge
their entries and replace the file atomically: several shards can share one store, and a
reader never sees a half-written file.
"""

from __future__ import annotations

import fcntl
import json
import os
from contextlib import contextmanager
from pathlib import Path

from .store import atomic_write_json

VERSION = 1


class TagStore:
    def __init__(self, path: Path):
        self.path = Path(path)

    def load(self) -> dict[str, dict]:
        try:
            with open(self.path, encoding="utf-8") as fh:
                data = json.load(fh)
        except FileNotFoundError:
            return {}
        except (json.JSONDecodeError, UnicodeDecodeError):
            return {}
        tags = data.get("tags", {}) if isinstance(data, dict) else {}
        return {k: v for k, v in tags.items() if isinstance(v, dict)}

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
            merged = self.load()
            merged.update(entries)
            atomic_write_json(self.path, {"version": VERSION,
                                          "tags": dict(sorted(merged.items()))})


def summaries_for(tags: list[str], store: dict[str, dict]) -> dict[str, str]:
    """The summaries known for `tags`, in tag order."""
    out = {}
    for tag in tags:
        summary = store.get(tag, {}).get("summary")
        if summary:
            out[tag] = summary
    return out
