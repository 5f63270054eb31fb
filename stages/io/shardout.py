"""Captions of a WebDataset shard or Parquet table as one Parquet file: `CAPTIONS/SHARD.parquet`.

One row per captioned sample, in key order: `key` (the sample key as the shard has it),
`id` (the item id), `caption`, `tags` (after hygiene), `score` (the verifier's grounding
score), `flags` (`fallback`, `over_clip_tokens`) and `provenance` (the whole record as
JSON: inputs, models, template hashes, verdicts, the item key). Written atomically
(temp file + rename); a file whose rows are already these is left as it is. It loads with
`datasets.load_dataset("parquet", data_files="captions/*.parquet")` or pandas/pyarrow.

Every shard Parquet of a process is written from one dedicated thread (`write_shard` hands
the work to it), with pyarrow's system (malloc) memory pool handed to the JSON reader and
the Parquet writer. pyarrow's default pool (mimalloc) keeps a store per thread that has
built a table, kept after the write: written from asyncio's default executor (up to 32
threads) a long run's memory stepped up with each new writer thread. pyarrow itself is
imported there, when the first table is written or read. Tables are built by pyarrow's
JSON reader (`rows_table`) and read by `pq.ParquetFile` (`read_table`), so a local run
never imports pandas: `Table.from_pylist` imports it to check for pandas objects, and
`pq.read_table` through `pyarrow.dataset` (23 MB of a 2,000-sample shard run's peak:
190 -> 167 MB). Ray Data brings pandas with it anyway.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from ..store import hash_value

ROWS_DIGEST = b"tagcap.rows_sha256"
ROW_GROUP = 200                      # rows converted and written at a time


def shard_path(captions: Path, unit: str) -> Path:
    return captions / f"{unit}.parquet"


WRITER_THREAD = "shard-writer"
_writer: ThreadPoolExecutor | None = None
_writer_lock = threading.Lock()


def _submit(fn, *args) -> Future:
    """Run `fn(*args)` on the process's one shard-writer thread (started on first use)."""
    global _writer
    with _writer_lock:
        if _writer is None:
            _writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix=WRITER_THREAD)
        return _writer.submit(fn, *args)


def write_shard(captions: Path, unit: str, records: list[dict]) -> bool:
    """Write the shard's Parquet from its caption records on the writer thread (waiting for
    it); False when the file already holds them."""
    return _submit(_write_shard, captions, unit, records).result()


def _write_shard(captions: Path, unit: str, records: list[dict]) -> bool:
    import pyarrow as pa
    import pyarrow.parquet as pq

    records = sorted(records, key=lambda r: str(r.get("sample_key", r.get("id"))))
    digest = hash_value([[r.get("id"), r.get("key"), r.get("caption_sha256")] for r in records])
    path = shard_path(captions, unit)
    try:
        if (pq.read_schema(path).metadata or {}).get(ROWS_DIGEST) == digest.encode():
            return False
    except (OSError, pa.ArrowException):
        pass
    schema = pa.schema([("key", pa.string()), ("id", pa.string()), ("caption", pa.string()),
                        ("tags", pa.list_(pa.string())), ("score", pa.float64()),
                        ("flags", pa.list_(pa.string())), ("provenance", pa.string())],
                       metadata={ROWS_DIGEST: digest.encode()})
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        pool = pa.system_memory_pool()
        with pq.ParquetWriter(tmp, schema, memory_pool=pool) as writer:  # a row group per
            for start in range(0, len(records), ROW_GROUP):    # batch: one batch in Arrow
                writer.write_table(_table(records[start:start + ROW_GROUP], schema, pool))
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    finally:
        pa.system_memory_pool().release_unused()      # malloc_trim: give the buffers back
    return True


def remove_stale(captions: Path, root: Path) -> list[str]:
    """Remove the shard Parquet files of `captions` (ours: they carry our rows digest) whose
    shard file is gone from `root`, the folder shard names are taken under (a renamed or
    removed shard; a shard that a narrower pattern leaves out keeps its Parquet):
    `load_dataset("parquet", data_files="captions/*.parquet")` then reads the current
    samples only. Returns the names removed."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    removed = []
    for path in sorted(captions.rglob("*.parquet")) if captions.is_dir() else []:
        unit = path.relative_to(captions).with_suffix("").as_posix()
        if any(part.startswith(".") for part in path.relative_to(captions).parts) \
                or _source_exists(root, unit):
            continue
        try:
            ours = ROWS_DIGEST in (pq.read_schema(path).metadata or {})
        except (OSError, pa.ArrowException):
            ours = False
        if ours:
            path.unlink(missing_ok=True)
            removed.append(unit)
    return removed


def _source_exists(root: Path, unit: str) -> bool:
    """Whether shard `unit` still has its .tar or .parquet file (any case) under `root`."""
    folder, name = (root / unit).parent, Path(unit).name
    try:
        return any(Path(entry).stem == name and Path(entry).suffix.lower() in (".tar", ".parquet")
                   for entry in os.listdir(folder))
    except OSError:
        return False


def _table(records: list[dict], schema, pool=None):
    """The shard's rows as an Arrow table (see `rows_table`)."""
    import math

    def score(value):
        return value if isinstance(value, (int, float)) and math.isfinite(value) else None

    return rows_table([{
        "key": str(r.get("sample_key", "")), "id": str(r.get("id")), "caption": str(r.get("caption")),
        "tags": [str(t) for t in r.get("tags", [])], "score": score(r.get("score")),
        "flags": [str(f) for f in r.get("flags", [])],
        "provenance": json.dumps(r, ensure_ascii=False, sort_keys=True)} for r in records],
        schema, pool)


def rows_table(rows: list[dict], schema, pool=None):
    """`rows` (dicts of the schema's columns) as an Arrow table with `schema` (its metadata
    included), parsed from JSON lines by pyarrow's own reader on this thread. Not
    `Table.from_pylist`, which imports pandas only to check for pandas objects."""
    import io

    import pyarrow as pa
    import pyarrow.json as pj

    if not rows:
        return pa.Table.from_batches([], schema=schema)     # not empty_table(): pandas
    lines = "\n".join(json.dumps(row, ensure_ascii=False) for row in rows).encode("utf-8")
    table = pj.read_json(io.BytesIO(lines), memory_pool=pool or pa.default_memory_pool(),
                         read_options=pj.ReadOptions(use_threads=False, block_size=len(lines) + 1),
                         parse_options=pj.ParseOptions(explicit_schema=schema,
                                                       unexpected_field_behavior="error"))
    return table.select(schema.names).replace_schema_metadata(schema.metadata)


def read_table(path: Path, columns: list[str] | None = None):
    """The Parquet file at `path` (those columns) as an Arrow table, read by `pq.ParquetFile`:
    `pq.read_table` goes through `pyarrow.dataset`, which imports pandas."""
    import pyarrow.parquet as pq

    with pq.ParquetFile(path) as file:
        return file.read(columns=columns)


def read_shard(captions: Path, unit: str) -> dict[str, dict]:
    """id -> row of a written shard Parquet ({} when there is none)."""
    path = shard_path(captions, unit)
    if not path.exists():
        return {}
    rows = read_table(path, columns=["id", "key", "caption", "tags", "flags",
                                        "provenance"]).to_pylist()
    for row in rows:                     # what the caption was made from, not the whole record
        made = json.loads(row.pop("provenance") or "{}")
        row["image_sha256"] = made.get("image_sha256")
        if "trigger_words" in made:
            row["trigger_words"] = made["trigger_words"]
    return {row["id"]: row for row in rows}
