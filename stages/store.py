"""Atomic file writes and content hashing shared by every stage."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from . import faults


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` so readers see either the old file or the whole new one."""
    atomic_write_chunks(path, (data,))


def atomic_write_chunks(path: str | os.PathLike, chunks: Iterable[bytes]) -> None:
    """`atomic_write_bytes` for data made piece by piece (never all held at once)."""
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except FileNotFoundError:                      # first file in a new folder
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.fchmod(fd, _FILE_MODE)                      # mkstemp makes 0600; artifacts are shared
    try:
        with os.fdopen(fd, "wb") as fh:
            for chunk in chunks:
                fh.write(chunk)
        faults.point("store.before_replace")
        os.replace(tmp, path)
        faults.point("store.after_replace")
    except OSError as exc:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if exc.filename is None:
            exc.filename = str(path)
        raise
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_link_or_copy(source: str | os.PathLike, path: str | os.PathLike) -> str:
    """Make `path` the same file as `source`: a hard link where the file system allows it,
    else a copy; atomically either way. Returns "hard link" or "copy"."""
    source, path = Path(source), Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.link.tmp")
    try:
        tmp.unlink(missing_ok=True)
        os.link(source, tmp)
        os.replace(tmp, path)
        return "hard link"
    except OSError:
        tmp.unlink(missing_ok=True)
    atomic_write_bytes(path, source.read_bytes())
    return "copy"


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no whitespace variation: the form that gets hashed."""
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def atomic_write_json(path: str | os.PathLike, value: Any) -> None:
    atomic_write_text(path, json.dumps(value, ensure_ascii=False, indent=2, sort_keys=False) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_text(text: str) -> str:
    return sha256_bytes(text.encode("utf-8"))


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def content_digest(path: Path, memo: Path | None = None) -> str:
    """sha256 of a file's bytes, remembered in the JSON file `memo` by resolved path, size and
    mtime, inode and ctime (a file swapped in with the same size and mtime is hashed again),
    so a multi-GB model is hashed once, not on every run. Without a memo it is hashed."""
    st = os.stat(path)
    if memo is None:
        return sha256_file(path)
    stamp = f"{Path(path).resolve()}|{st.st_size}|{st.st_mtime_ns}|{st.st_ino}|{st.st_ctime_ns}"
    try:
        known = read_json(memo)
    except (FileNotFoundError, ValueError):
        known = {}
    if not isinstance(known, dict):
        known = {}
    if stamp not in known:
        known[stamp] = sha256_file(path)
        atomic_write_json(memo, known)
    return known[stamp]


def hash_value(value: Any) -> str:
    """Stable hash of any JSON-serialisable value (dict key order does not matter)."""
    return sha256_text(canonical_json(value))


class CallCache:
    """Content-addressed cache of model answers: `cache/calls/ab/<sha256>.json`.

    The key covers what decides an answer (model, messages with images replaced by their
    content hash, sampling parameters, template hash) and nothing about where or how the
    call was made: no base URL, no API key. A rerun with nothing changed finds every answer.
    """

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict | None:
        try:
            return read_json(self.path(key))
        except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
            return None

    def put(self, key: str, entry: dict) -> None:
        atomic_write_json(self.path(key), entry)
