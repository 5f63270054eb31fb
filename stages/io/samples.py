"""Dataset-scale inputs: WebDataset shards and Parquet tables, read sample by sample.

`paths.images` may name, instead of a folder of images:
- a WebDataset shard (`shards/00000.tar`), a glob (`shards/*.tar`) or a brace pattern
  (`shards/{00000..00099}.tar`; a list is `shards/{00000,00007}.tar`);
- a Parquet file (`table.parquet`), or a folder of Parquet files and/or shards.

A shard is `img2dataset`'s layout: `KEY.jpg` (the image; `input.image_column` names the
extension, or alternatives `jpg;png;webp`: the first a sample has is its image), `KEY.txt`
(tags; `input.tags_column`) and `KEY.json` (metadata; with `input.tags_json_field` set, the
tags are that field of it). A Parquet table has one row per sample: `input.key_column`,
`input.image_column` (the first of its alternatives the table has; bytes, a path relative
to the table, or a `{"bytes", "path"}` struct as `datasets` writes it) and `input.tags_column` (text or a
list; empty: no tags).

Nothing is unpacked or loaded whole. A shard's listing reads its tar headers (member data
is skipped by seeking) and the small tag members; a table's listing reads its key and tag
columns in batches. A `Sample` keeps where its image is (the member's offset, or the row),
so a stage reads the bytes again by id, in any process (Ray actors too).

Item ids are `SHARD/KEY`: the shard's name (its path under `paths.images` when that is a
folder, else under the pattern's folder part; without the extension) and the key, with
every character but letters, digits, `_`, `-` and `.` percent-encoded (so `a/b` and
`../x` stay one safe file name). What a shard cannot give becomes a failed item with its
reason; nothing else in the shard is lost:
a duplicated key fails that key, a truncated tar fails from where it breaks (named
`SHARD.tar`), a table without a configured column fails as `SHARD.parquet`, and members
whose name starts with a dot (no key: WebDataset's key ends at the first dot) fail as
`SHARD/~NAME`.
"""

from __future__ import annotations

import json
import os
import re
import tarfile
import threading
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from ..errors import ConfigError, ItemError

SHARD_SUFFIXES = (".tar", ".parquet")
MAX_KEY_LENGTH = 150
LIST_BATCH = 1024            # rows per batch when a table's keys and tags are listed
READ_BATCH = 64              # rows per batch when a table's images are read
MAX_TAR_PADDING = 1 << 20   # zeros allowed after a tar's end marker (blocking factor 2048)
KEPT_CURSORS = 4             # tables kept open per process (their readers hold the file)
KEPT_BATCHES = 8             # image batches kept per process (covers the items in flight)


@dataclass(frozen=True)
class InputColumns:
    """The `[input]` settings, as the listing and reader use them."""

    image: str = "jpg"          # alternatives separated by `;`, the first one present wins
    tags: str = "txt"
    key: str = "key"
    tags_json_field: str = ""

    @property
    def images(self) -> tuple[str, ...]:
        """The image member extensions (or table columns) to look for, in order."""
        return tuple(part.strip() for part in self.image.split(";") if part.strip())


@dataclass(frozen=True)
class Sample:
    """Where one sample is, small and picklable: its image bytes are read on demand."""

    shard: str                  # the shard or table file, absolute
    unit: str                   # the shard's name: what --shard splits on, names the output
    key: str                    # the sample key as the shard has it
    offset: int                 # tar: where the image bytes start; Parquet: the row
    size: int = 0               # tar: the image member's size
    member: str = ""            # tar: the image member's name
    tags: Any = None            # raw tags: bytes of KEY.txt / KEY.json, or the column's value
    tags_kind: str = ""         # text | json | value ('' when the sample has none)
    stamp: str = ""             # the shard's size, mtime, inode and ctime when listed
    paths: bool = False         # Parquet: the image column may hold paths (not only bytes)
    column: str = ""            # Parquet: the image column (the first of input.image_column found)

    def where(self) -> str:
        return f"{self.shard}#{self.member or self.offset}"


# -- what paths.images names --------------------------------------------------------------

def _is_pattern(text: str) -> bool:
    """Whether `text` is a glob or brace pattern. A path that exists is itself, whatever its
    name holds: a folder `photos [2023]` is a folder, not a character class."""
    return any(c in text for c in "*?[{") and not os.path.lexists(text)


def is_dataset(images: Path) -> bool:
    """Whether `paths.images` names shards or Parquet tables rather than a folder of images."""
    text = str(images)
    if _is_pattern(text) or images.suffix.lower() in SHARD_SUFFIXES:
        return True
    if not images.is_dir():
        return False
    from .imageio import is_image_name

    found = False
    try:
        with os.scandir(images) as entries:           # stops at the first image
            for entry in entries:
                if is_image_name(entry.name):
                    return False
                found = found or os.path.splitext(entry.name)[1].lower() in SHARD_SUFFIXES
    except OSError:
        return False
    if found:
        return True
    from .imageio import is_captions_folder

    for top, folders, files in os.walk(images):   # only sub-folders (shards/a/00000.tar):
        folders[:] = sorted(f for f in folders if not f.startswith(".")   # the first image
                            and not is_captions_folder(os.path.join(top, f)))
        for name in files:                                                 # decides, as above
            if is_image_name(name):
                return False
            found = found or os.path.splitext(name)[1].lower() in SHARD_SUFFIXES
    return found


_BRACE = re.compile(r"\{([^{}]*)\}")


def expand_braces(pattern: str) -> list[str]:
    """`a{0..2}b` -> a0b a1b a2b (zero padding kept), `{x,y}` -> x y; several groups multiply."""
    match = _BRACE.search(pattern)
    if match is None:
        return [pattern]
    body = match.group(1)
    ranged = re.fullmatch(r"(\d+)\.\.(\d+)", body)
    if ranged:
        lo, hi = ranged.groups()
        width = len(lo) if lo.startswith("0") else 0
        step = 1 if int(hi) >= int(lo) else -1
        choices = [str(n).zfill(width) for n in range(int(lo), int(hi) + step, step)]
    else:
        choices = body.split(",")
    head, tail = pattern[:match.start()], pattern[match.end():]
    return [out for choice in choices for out in expand_braces(head + choice + tail)]


def shard_files(images: Path, exclude: Path | None = None) -> list[Path]:
    """The shard and table files `paths.images` names, in order, leaving out any under
    `exclude` (the captions folder: our own output is never input) or under any other
    captions folder inside a folder input (`imageio.is_captions_folder`). A brace pattern may
    name files that are missing (each is then one failed item); a glob or folder that
    finds nothing is a configuration error."""
    text = str(images)
    found: list[Path] = []
    if images.is_dir() and not _is_pattern(text):
        from .imageio import is_captions_folder

        found = sorted(p for p in images.rglob("*")
                       if p.suffix.lower() in SHARD_SUFFIXES and p.is_file()
                       and not any(part.startswith(".") for part in p.relative_to(images).parts)
                       and not any(is_captions_folder(f) for f in p.parents[:-1]
                                   if f != images and f.is_relative_to(images)))
    elif not _is_pattern(text):                # one file, named as it is (`take [1].tar`)
        found = [images]
    else:
        import glob

        root = shard_root(images)              # taken as it is: a folder `data [v2]` is no class
        for part in expand_braces(str(Path(*images.parts[len(root.parts):]))):
            if any(c in part for c in "*?["):
                found += sorted(Path(p) for p in glob.glob(os.path.join(glob.escape(str(root)), part)))
            else:
                found.append(root / part)
    found = [p for p in dict.fromkeys(found) if p.suffix.lower() in SHARD_SUFFIXES
             and not (exclude and p.resolve().is_relative_to(exclude.resolve()))]
    if not found:
        raise ConfigError(f"paths.images = {images}: no .tar shard or .parquet table found; point "
                          "it at a folder of images, a shard, a glob or brace pattern "
                          "(shards/{00000..00099}.tar), or a Parquet file or folder")
    return found


def shard_root(images: Path) -> Path:
    """The folder shard names are taken under: `paths.images` itself when it is a folder,
    else the part of the pattern (or file name) before its first wildcard component. It
    depends on the setting only, never on which files are found: a shard added in another
    subfolder renames no other shard (their ids, caches and outputs stay)."""
    text = str(images)
    if images.is_dir() and not _is_pattern(text):
        return images
    parts = images.parts
    plain = next((n for n, part in enumerate(parts) if _is_pattern(str(Path(*parts[:n + 1])))),
                 len(parts) - 1)
    return Path(*parts[:plain]) if plain else Path(".")


def shard_units(files: list[Path], images: Path | None = None) -> list[tuple[Path, str]]:
    """(file, name): names are paths under `shard_root(images)` (or, without `images`, the
    files' common folder), without the extension."""
    root = shard_root(images) if images is not None else None
    if root is None or not all(p.is_relative_to(root) for p in files):
        root = Path(os.path.commonpath([str(p.parent) for p in files]))
    named = [(p, p.relative_to(root).with_suffix("").as_posix()) for p in files]
    seen: dict[str, Path] = {}
    for path, unit in named:
        if unit in seen:
            raise ConfigError(f"paths.images: {seen[unit].name} and {path.name} would both be "
                              f"shard {unit!r} (one output {unit}.parquet); rename one")
        seen[unit] = path
    return named


def safe_key(key: str) -> str:
    """A sample key as one safe file name (injective: distinct keys stay distinct). It
    never holds `~` (encoded), so the ids of listing failures that are not a key
    (`SHARD/~row-N`, an over-long key) use it and can never be a sample's id."""
    safe = quote(key.encode("utf-8", "surrogateescape"), safe="").replace("~", "%7E")
    return "%2E" + safe[1:] if safe.startswith(".") else safe


# -- listing ------------------------------------------------------------------------------

def dataset_items(images: Path, columns: InputColumns, shard: tuple[int, int] = (0, 1),
                  exclude: Path | None = None):
    """Every sample of every shard in this --shard partition, lazily, as Items."""
    from ..stage import in_shard

    for path, unit in shard_units(shard_files(images, exclude), images):
        if not in_shard(unit, shard):
            continue
        if not path.is_file():
            yield _failed(f"{unit}{path.suffix}", unit, "shard file not found")
            continue
        if path.suffix.lower() == ".tar":
            yield from _tar_items(path, unit, columns)
        else:
            yield from _parquet_items(path, unit, columns)


def _failed(item_id: str, unit: str, reason: str):
    from ..stage import Item

    return Item(item_id, error=reason, unit=unit)


def _item(sample: Sample):
    from ..stage import Item

    safe = safe_key(sample.key)
    try:
        sample.key.encode("utf-8")
    except UnicodeEncodeError:        # a tar member name in another encoding
        return Item(f"{sample.unit}/{safe}", error=f"the member name {sample.member or safe!r} "
                    "is not UTF-8; rename it (img2dataset's keys are digits)", unit=sample.unit)
    if len(safe) > MAX_KEY_LENGTH:
        from hashlib import sha256

        digest = sha256(sample.key.encode("utf-8", "surrogatepass")).hexdigest()[:12]
        return Item(f"{sample.unit}/{safe[:40]}~{digest}", error=(
            f"key is longer than {MAX_KEY_LENGTH} characters once made a safe file name"),
            unit=sample.unit)
    return Item(f"{sample.unit}/{safe}", sample, unit=sample.unit)


def _stamp(path: Path) -> str:
    st = os.stat(path)             # inode and ctime: a same-size, same-mtime swap shows
    return f"{st.st_size}:{st.st_mtime_ns}:{st.st_ino}:{st.st_ctime_ns}"


def _plain(name: str) -> str:
    """A member name without the leading `./` that `tar -C dir .` writes."""
    while name.startswith("./"):
        name = name[2:]
    return name


def _split_member(name: str) -> tuple[str, str]:
    """WebDataset's rule: the key is the path up to the first dot of the base name (a
    leading `./`, as `tar -C dir .` writes, is not part of it)."""
    name = _plain(name)
    folder, _, base = name.rpartition("/")
    stem, _, ext = base.partition(".")
    return (f"{folder}/{stem}" if folder else stem), ext.lower()


def _tar_items(path: Path, unit: str, columns: InputColumns):
    """Headers only (data skipped by seeking), then the samples in member order."""
    stamp, size = _stamp(path), os.path.getsize(path)
    groups: dict[str, dict[str, list[tuple[int, int, str]]]] = {}
    problem, last, whole = "", "", False
    links: dict[str, str] = {}                  # key -> a link member that cannot be read
    dotted: dict[str, list[str]] = {}           # members named .x...: no key, each fails
    try:
        with tarfile.open(path, "r:") as tar:
            while True:
                member = tar.next()
                tar.members.clear()                 # keep no index of the whole shard
                if member is None:
                    problem, whole = _end_problem(path, tar.offset, size)
                    break
                key, ext = _split_member(member.name)
                if _dotted(member.name) and (member.isfile() or member.islnk() or member.issym()):
                    dotted.setdefault(_dotted(member.name), []).append(_plain(member.name))
                    continue
                if member.islnk() or member.issym():   # `tar cf` stores a repeated file as a
                    if key and ext:                    # hard link to its first copy's bytes
                        last = key
                        target = _link_target(groups, member) if member.islnk() else None
                        if target is None:
                            links[key] = f"{member.name} is a link to {member.linkname}"
                        else:
                            groups.setdefault(key, {}).setdefault(ext, []).append(target)
                    continue
                if not member.isfile():
                    continue
                if member.offset_data + member.size > size:
                    problem = f"truncated: member {member.name} is cut short"
                    break
                if key and ext:
                    last = key
                    groups.setdefault(key, {}).setdefault(ext, []).append(
                        (member.offset_data, member.size, member.name))
    except (tarfile.TarError, OSError, EOFError) as exc:
        problem = f"truncated or not a tar: {exc}"
    if problem and last and not whole:
        groups.pop(last, None)         # the sample being read when it broke may miss members
    want_tags = (("json", "json") if columns.tags_json_field
                 else (columns.tags.lower(), "text") if columns.tags else None)
    for name, members in dotted.items():
        yield _failed(f"{unit}/~{safe_key(name)}", unit, (
            f"{', '.join(members)} in {path.name}: a name that starts with a dot has no sample "
            "key (WebDataset's key ends at the first dot of the name); rename it, e.g. "
            f"{name.lstrip('.') or 'KEY'}.jpg"))
    for key in [k for k in links if k not in groups]:
        yield _failed_key(unit, key, f"{links.pop(key)} in {path.name}, not a file: create the "
                          "shard with `tar --hard-dereference` (or img2dataset)")
    with open(path, "rb") as fh:
        for key, fields in groups.items():
            if key in links:
                yield _failed_key(unit, key, f"{links[key]} in {path.name}, not a file: create "
                                  "the shard with `tar --hard-dereference` (or img2dataset)")
                continue
            doubled = sorted(f"{key}.{ext}" for ext, found in fields.items() if len(found) > 1)
            if doubled:
                yield _failed_key(unit, key, f"duplicate key in {path.name}: "
                                  f"{', '.join(doubled)} appear more than once; one key, one sample")
                continue
            image = next((fields[e.lower()] for e in columns.images if e.lower() in fields), None)
            if image is None:
                has = ", ".join(sorted(fields))
                yield _failed_key(unit, key, f"no {key}.{'|'.join(columns.images)} in {path.name} "
                                  f"(it has: {has}); set input.image_column to the image's "
                                  "extension (alternatives: jpg;png;webp)")
                continue
            offset, length, member = image[0]
            tags, kind = None, ""
            if want_tags and want_tags[0] in fields:
                t_off, t_len, _ = fields[want_tags[0]][0]
                fh.seek(t_off)
                tags, kind = fh.read(t_len), want_tags[1]
            yield _item(Sample(str(path), unit, key, offset, length, member, tags, kind, stamp))
    if problem:
        yield _failed(f"{unit}.tar", unit, f"{problem}; the {len(groups)} samples listed before "
                      "it are kept, the rest of this shard is lost: rewrite the shard")


def _dotted(name: str) -> str:
    """For a member whose base name starts with a dot, that name up to its next dot
    (`.d.jpg` -> `.d`, with its folder); else ''."""
    folder, _, base = _plain(name).rpartition("/")
    if not base.startswith("."):
        return ""
    stem = "." + base[1:].partition(".")[0]
    return f"{folder}/{stem}" if folder else stem


def _link_target(groups: dict, member: tarfile.TarInfo) -> tuple[int, int, str] | None:
    """The bytes a hard link member stands for: those of the earlier member it names."""
    key, ext = _split_member(member.linkname)
    for offset, length, name in groups.get(key, {}).get(ext, []):
        if _plain(name) == _plain(member.linkname):
            return offset, length, member.name
    return None


def _end_problem(path: Path, offset: int, size: int) -> tuple[str, bool]:
    """('', _) when the archive ends with its end-of-archive marker (two zero blocks) and only
    zero padding after it, else why: tarfile takes a cut inside a header for a clean end,
    and stops at the first marker of concatenated tars (`cat a.tar b.tar`) or before a
    zero-filled tail (an interrupted, preallocated download), saying nothing of the rest.
    The flag: the archive before the problem is whole (another tar follows it)."""
    with open(path, "rb") as fh:
        fh.seek(offset)
        tail = fh.read(1024)
        if len(tail) < 1024 or tail.strip(b"\0"):
            return "truncated: the end-of-archive marker is missing", False
        after = size - offset - 1024
        rest = fh.read(min(after, MAX_TAR_PADDING))
    if rest.strip(b"\0"):
        return (f"data after the end-of-archive marker at byte {offset} (concatenated tars?); "
                "the samples after it are not read"), True
    if after > MAX_TAR_PADDING:
        return (f"truncated: {after} zero bytes follow the end-of-archive marker at byte "
                f"{offset} (an interrupted, preallocated copy?)"), False
    return "", True


def _failed_key(unit: str, key: str, reason: str):
    from ..stage import Item

    return Item(f"{unit}/{safe_key(key)}", error=reason, unit=unit)


def _parquet_items(path: Path, unit: str, columns: InputColumns):
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.ParquetFile(path)
    except Exception as exc:  # noqa: BLE001 - not a table: one line, the other shards go on
        yield _failed(f"{unit}.parquet", unit, f"not a readable Parquet file: {exc}"[:300])
        return
    names = table.schema_arrow.names
    column = next((c for c in columns.images if c in names), columns.images[0])
    wanted = {"input.key_column": columns.key, "input.image_column": column}
    if columns.tags:
        wanted["input.tags_column"] = columns.tags
    missing = [f"{setting} = {name}" for setting, name in wanted.items() if name not in names]
    if missing:
        yield _failed(f"{unit}.parquet", unit, f"no column for {'; '.join(missing)} (columns: "
                      f"{', '.join(names)}); set the [input] keys to this table's columns")
        return
    stamp = _stamp(path)
    kind = table.schema_arrow.field(column).type
    paths = not (pa.types.is_binary(kind) or pa.types.is_large_binary(kind)
                 or pa.types.is_fixed_size_binary(kind))
    counts: dict[str, int] = {}
    for batch in table.iter_batches(batch_size=LIST_BATCH, columns=[columns.key]):
        for key in batch.column(0).to_pylist():
            if key is not None:
                counts[str(key)] = counts.get(str(key), 0) + 1
    listed = [columns.key] + ([columns.tags] if columns.tags else [])
    row = 0
    reported: set[str] = set()
    for batch in table.iter_batches(batch_size=LIST_BATCH, columns=listed):
        keys = batch.column(0).to_pylist()
        tags = batch.column(1).to_pylist() if columns.tags else [None] * len(keys)
        for key, value in zip(keys, tags, strict=True):
            if key is None:
                yield _failed(f"{unit}/~row-{row}", unit, f"row {row} of {path.name} has no "
                              f"{columns.key}; give every row a key")
            elif counts[str(key)] > 1:
                if str(key) not in reported:
                    reported.add(str(key))
                    yield _failed_key(unit, str(key), f"duplicate key in {path.name}: "
                                      f"{counts[str(key)]} rows have key {str(key)!r}; one key, "
                                      "one sample")
            else:
                yield _item(Sample(str(path), unit, str(key), row, tags=value,
                                   tags_kind="value" if value is not None else "", stamp=stamp,
                                   paths=paths, column=column))
            row += 1


# -- reading a sample again ---------------------------------------------------------------

def tag_text(sample: Sample, columns: InputColumns) -> list[str] | str | None:
    """The sample's raw tags: text (split like a tag file) or a list, None when it has none.
    Undecodable text or JSON fails the item with the reason."""
    name = f"{sample.key}.{'json' if sample.tags_kind == 'json' else columns.tags}"
    if sample.tags_kind in ("text", "json"):
        try:
            text = sample.tags.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise ItemError(f"{name} is not UTF-8 (offset {exc.start}); save it as UTF-8") from None
        if sample.tags_kind == "text":
            return text
        try:
            value = json.loads(text).get(columns.tags_json_field) if text.strip() else None
        except (ValueError, AttributeError):
            raise ItemError(f"{name} is not a JSON object") from None
    else:
        value = sample.tags
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return list(value)
    raise ItemError(f"the tags of {sample.key} are neither text nor a list of text")


_URL = re.compile(r"^[a-z][a-z0-9+.-]*://", re.I)


class SampleReader:
    """Image bytes of samples by their `Sample`: a seek and a read in a tar; for a table,
    batches of its image column read in order, the last few kept (items are processed
    roughly in listing order, so each batch is read about once). Thread-safe."""

    def __init__(self, columns: InputColumns):
        self.columns = columns
        self._lock = threading.Lock()
        self._batches: OrderedDict[tuple[str, int], list] = OrderedDict()
        self._cursors: OrderedDict[str, tuple[int, Iterator]] = OrderedDict()

    def image_bytes(self, sample: Sample) -> bytes:
        if sample.shard.endswith(".tar"):
            try:
                with open(sample.shard, "rb") as fh:
                    fh.seek(sample.offset)
                    data = fh.read(sample.size)
            except OSError as exc:
                raise ItemError(f"cannot read {sample.where()}: {exc.strerror or exc}") from None
            if len(data) != sample.size:
                raise ItemError(f"{sample.member} is cut short in {Path(sample.shard).name}")
            return data
        return self._cell(sample)

    def image_file(self, sample: Sample) -> Path | None:
        """The file a table's image cell names (a path beside the table), else None: its
        size, mtime, inode and ctime belong in the sample's stamp, the table's own do not cover it."""
        if sample.shard.endswith(".tar") or not sample.paths:
            return None
        value = self._cell_value(sample)
        if isinstance(value, str) and value and not _URL.match(value):
            return Path(sample.shard).parent / value
        return None

    def _cell_value(self, sample: Sample) -> Any:
        value = self._row_value(sample)
        if isinstance(value, dict):                           # datasets' Image struct
            value = value.get("bytes") or value.get("path")
        return value

    def _cell(self, sample: Sample) -> bytes:
        value = self._cell_value(sample)
        if isinstance(value, (bytes, bytearray)):
            return bytes(value)
        if isinstance(value, str) and value:
            if _URL.match(value):
                raise ItemError(f"the image is a URL ({value[:80]}); tagcap does not download: "
                                "fetch the images first (e.g. img2dataset)")
            path = Path(sample.shard).parent / value
            try:
                return path.read_bytes()
            except OSError as exc:
                raise ItemError(f"cannot read the image file {value}: {exc.strerror or exc}") from None
        raise ItemError(f"row {sample.offset} has no image in column {sample.column}")

    def _row_value(self, sample: Sample) -> Any:
        shard, row = sample.shard, sample.offset
        index, within = divmod(row, READ_BATCH)
        with self._lock:
            batch = self._batches.get((shard, index))
            if batch is None:
                batch = self._read_batch(shard, index, sample.column or self.columns.images[0])
            else:
                self._batches.move_to_end((shard, index))
            return batch[within] if within < len(batch) else None

    def _read_batch(self, shard: str, index: int, column: str) -> list:
        import pyarrow.parquet as pq

        cursor = self._cursors.get(shard)
        if cursor is None or cursor[0] > index:
            batches = pq.ParquetFile(shard).iter_batches(batch_size=READ_BATCH,
                                                         columns=[column])
            cursor = (0, iter(batches))
        position, batches = cursor
        for batch in batches:
            self._batches[(shard, position)] = batch.column(0).to_pylist()
            while len(self._batches) > KEPT_BATCHES:
                self._batches.popitem(last=False)
            position += 1
            if position > index:
                break
        self._cursors[shard] = (position, batches)
        self._cursors.move_to_end(shard)
        while len(self._cursors) > KEPT_CURSORS:   # an open reader per table would grow
            self._cursors.popitem(last=False)      # with the table count (and hold its file)
        return self._batches.get((shard, index), [])
