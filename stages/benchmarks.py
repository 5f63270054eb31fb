"""Prompt benchmarks: PartiPrompts (shipped), DrawBench, or a file of your own.

`upsample.benchmark` is `demo` (five PartiPrompts that upsampling visibly changes, picked
by their content ids: `DEMO_IDS`), `parti` (data/PartiPrompts.tsv, Apache-2.0), `drawbench` (a CSV with
`Prompts,Category` columns from `upsample.benchmark_path`, else the Hugging Face dataset
when the hub is reachable) or a path to a `.txt` (one prompt a line), `.csv` (RFC 4180
quoting), `.tsv` (no quoting: a `"` is an ordinary character, as in PartiPrompts) or
`.jsonl` (`{"prompt", "category"?, "id"?, "image"?}`) file. Relative paths are read from the
folder of config.ini. CSV/TSV headers may name the prompt column prompt, prompts, text or
caption (any case), with optional category and image/reference columns.

Rules every source follows:
- Files are UTF-8, with or without a BOM, with LF or CRLF line ends.
- Text is NFC-normalised and its whitespace collapsed (runs of spaces, tabs and newlines
  become one space, ends stripped); non-ASCII characters are kept. Empty prompts are skipped.
- Identical prompts (after that normalisation) are merged into one item: the first
  occurrence gives its id, category and reference; a category filter matches any category
  the prompt appeared under.
- An id comes from the prompt's text alone: the first 12 hex digits of the SHA-256 of the
  cleaned prompt. Where it lies in the file does not count, so a blank line inserted at the
  top, or prompts reordered, change no id and redo nothing. Distinct prompts whose 12 digits
  agree (rare) both take a longer id, `hhhhhhhhhhhh-hhhhhhhh` (the next 8 digits): a
  suffix from their content, not from their order. Identical prompts are one item (above),
  so a repeated prompt keeps its one id. Ids never contain the prompt's characters (they
  name folders) and do not change when a category filter or a limit picks a subset. A jsonl
  `id` is used as given when it is a safe name (letters, digits, `.`, `_`, `-`; at most 64).
- Categories filter case-insensitively; `limit` applies after filtering.
"""

from __future__ import annotations

import csv
import io
import json
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ConfigError
from .store import atomic_write_text, sha256_text

KEY = "upsample.benchmark"
PATH_KEY = "upsample.benchmark_path"
PROMPT_COLUMNS = ("prompt", "prompts", "text", "caption")
CATEGORY_COLUMNS = ("category",)
REFERENCE_COLUMNS = ("image", "reference")
SUFFIXES = (".txt", ".csv", ".tsv", ".jsonl")
ACCEPTED = "demo, parti, drawbench, or a path to a .txt, .csv, .tsv or .jsonl file"
# The demo: short PartiPrompts that name counts and places, which a good rewrite keeps while
# adding what the short prompt leaves open (materials, light, setting, framing), so the
# upsampled prompt and its image differ visibly. Picked by content id (the prompt's text),
# so editing other lines of the file never changes the demo.
DEMO_IDS = (
    "876a6d640c3c",     # a red box next to a blue box
    "f15b2c0575b5",     # two baseballs to the left of three tennis balls
    "0318079847ab",     # four owls standing on a telephone wire
    "4a52f8e92dbe",     # a red swirl above a black dashed line.
    "8b3a004ea8e2",     # three children on a couch
)
SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
PARTI_FILE = Path("data") / "PartiPrompts.tsv"
REPO = Path(__file__).resolve().parent.parent
DRAWBENCH_DATASET = "sayakpaul/drawbench"
DRAWBENCH_HELP = (f"download the DrawBench CSV (columns Prompts,Category) on a connected machine "
                  f"and set {PATH_KEY} to it")


@dataclass(frozen=True)
class Prompt:
    """One benchmark prompt; `reference` is the path of a reference image when the source has one."""

    id: str
    prompt: str
    category: str = ""
    reference: str | None = None

    def to_json(self) -> dict:
        row = {"id": self.id, "prompt": self.prompt, "category": self.category}
        if self.reference is not None:
            row["reference"] = self.reference
        return row


@dataclass
class _Row:
    """A prompt as read, before merging: where it starts and what the source said."""

    line: int
    prompt: str
    category: str = ""
    reference: str = ""
    id: str = ""
    categories: list[str] = field(default_factory=list)


def clean_text(text: str) -> str:
    """NFC form with whitespace runs collapsed to one space: the form prompts are kept in."""
    return " ".join(unicodedata.normalize("NFC", text).split())


ID_DIGITS = 12


def make_id(prompt: str, *, longer: bool = False) -> str:
    """The id of a cleaned prompt, from its content only (`longer` when another prompt's
    short id is the same)."""
    digest = sha256_text(prompt)
    return f"{digest[:ID_DIGITS]}-{digest[ID_DIGITS:ID_DIGITS + 8]}" if longer else digest[:ID_DIGITS]


def load_benchmark(spec: str, *, path: str = "", categories: tuple[str, ...] = (), limit: int = 0,
                   base_dir: Path) -> list[Prompt]:
    """The prompts of a benchmark, merged, filtered by category and cut to `limit`."""
    name = spec.strip()
    if name.lower() in ("parti", "demo"):
        source = _existing(path, PATH_KEY, base_dir) if path.strip() else _parti_file(base_dir)
        rows = list(_read_file(source))
    elif name.lower() == "drawbench":
        if path.strip():
            source = _existing(path, PATH_KEY, base_dir)
            rows = list(_read_file(source))
        else:
            source, rows = Path(f"hf://datasets/{DRAWBENCH_DATASET}"), list(_read_drawbench_hub())
    elif Path(name).suffix.lower() in SUFFIXES:
        source = _existing(name, KEY, base_dir)
        rows = list(_read_file(source))
    else:
        raise ConfigError(f"{KEY} = {spec!r} is not a benchmark; accepted: {ACCEPTED}")
    items = _merge(rows, source)
    if name.lower() == "demo":
        items = _demo(items, source)
    if not items:
        raise ConfigError(f"{KEY}: {source} contains no prompts")
    chosen = _select(items, categories, source)
    if limit > 0:
        chosen = chosen[:limit]
    return [_finish(row, source) for row in chosen]


def write_prompts_jsonl(prompts: Iterable[Prompt], path: Path) -> None:
    """`runs/RUN/prompts.jsonl`: one `Prompt.to_json()` a line, written atomically."""
    atomic_write_text(path, "".join(json.dumps(p.to_json(), ensure_ascii=False) + "\n" for p in prompts))


def _existing(value: str, key: str, base_dir: Path) -> Path:
    path = Path(value.strip()).expanduser()
    if not path.is_absolute():
        path = Path(base_dir) / path
    if not path.is_file():
        raise ConfigError(f"{key}: file not found: {path}")
    return path


def _parti_file(base_dir: Path) -> Path:
    for folder in (Path(base_dir), REPO):
        if (folder / PARTI_FILE).is_file():
            return folder / PARTI_FILE
    raise ConfigError(f"{KEY} = parti: {Path(base_dir) / PARTI_FILE} is missing; restore it from "
                      f"the repository or set {PATH_KEY} to a copy")


def _read_file(path: Path) -> Iterator[_Row]:
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        return _read_jsonl(path)
    if suffix in (".csv", ".tsv"):
        return _read_table(path, "\t" if suffix == ".tsv" else ",")
    if suffix == ".txt":
        return _read_txt(path)
    raise ConfigError(f"{KEY}: {path} has an unsupported extension; accepted: {', '.join(SUFFIXES)}")


def _read_text(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{KEY}: {path} is not UTF-8 (bad byte at offset {exc.start}); "
                          "save it as UTF-8") from None


def _lines(text: str) -> list[str]:
    return re.split(r"\r\n|\r|\n", text)


def _read_txt(path: Path) -> Iterator[_Row]:
    for number, line in enumerate(_lines(_read_text(path)), start=1):
        yield _Row(number, line)


def _column(header: list[str], names: tuple[str, ...]) -> int | None:
    folded = [h.strip().lower() for h in header]
    for name in names:
        if name in folded:
            return folded.index(name)
    return None


def _read_table(path: Path, delimiter: str) -> Iterator[_Row]:
    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    reader = csv.reader(io.StringIO(_read_text(path), newline=""), delimiter=delimiter, quoting=quoting)
    try:
        header = next((cells for cells in reader if any(c.strip() for c in cells)), None)
        if header is None:
            return
        p, c, r = (_column(header, names) for names in (PROMPT_COLUMNS, CATEGORY_COLUMNS, REFERENCE_COLUMNS))
        if p is None:
            found = ", ".join(repr(h.strip()) for h in header)
            raise ConfigError(f"{KEY}: {path} has no prompt column (columns found: {found}); "
                              f"accepted names: {', '.join(PROMPT_COLUMNS)} (any case)")
        last = reader.line_num
        for cells in reader:
            start, last = last + 1, reader.line_num

            def cell(i: int | None, cells=cells) -> str:
                return cells[i] if i is not None and i < len(cells) else ""
            yield _Row(start, cell(p), cell(c), cell(r).strip())
    except csv.Error as exc:
        raise ConfigError(f"{KEY}: {path}:{reader.line_num}: unreadable row ({exc})") from None


def _read_jsonl(path: Path) -> Iterator[_Row]:
    for number, line in enumerate(_lines(_read_text(path)), start=1):
        if not line.strip():
            continue
        where = f"{KEY}: {path}:{number}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{where}: not valid JSON ({exc.msg})") from None
        if not isinstance(obj, dict) or not isinstance(obj.get("prompt"), str):
            raise ConfigError(f'{where}: expected an object with a "prompt" string')
        category, item_id = obj.get("category") or "", obj.get("id")
        reference = obj.get("image") or obj.get("reference") or ""
        if not isinstance(category, str) or not isinstance(reference, str):
            raise ConfigError(f'{where}: "category" and "image" must be strings')
        if item_id is not None and not (isinstance(item_id, str) and SAFE_ID.match(item_id)):
            raise ConfigError(f'{where}: "id" {item_id!r} is not a safe name (letters, digits, '
                              "'.', '_', '-'; starts with a letter or digit; at most 64)")
        yield _Row(number, obj["prompt"], category, reference.strip(), item_id or "")


def _read_drawbench_hub() -> Iterator[_Row]:
    from .backends.hub import hub_offline, hub_reachable

    if hub_offline():
        raise ConfigError(f"{KEY} = drawbench: the Hugging Face hub is offline (HF_HUB_OFFLINE); "
                          + DRAWBENCH_HELP)
    if not hub_reachable():
        raise ConfigError(f"{KEY} = drawbench: the Hugging Face hub cannot be reached; " + DRAWBENCH_HELP)
    try:
        from datasets import load_dataset

        records = load_dataset(DRAWBENCH_DATASET, split="train")
    except Exception as exc:  # datasets raises many types; all mean "not available"
        raise ConfigError(f"{KEY} = drawbench: loading {DRAWBENCH_DATASET} failed "
                          f"({type(exc).__name__}); " + DRAWBENCH_HELP) from None
    for index, record in enumerate(records):   # line numbers as in the CSV (header on line 1)
        yield _Row(index + 2, str(record.get("Prompts") or ""), str(record.get("Category") or ""))


def _merge(rows: Iterable[_Row], source: Path) -> list[_Row]:
    """Clean each row, drop empty ones, merge duplicates, give ids, check ids are unique."""
    by_text: dict[str, _Row] = {}
    for row in rows:
        row.prompt, row.category = clean_text(row.prompt), clean_text(row.category)
        if not row.prompt:
            continue
        first = by_text.get(row.prompt)
        if first is not None:
            if row.category and row.category not in first.categories:
                first.categories.append(row.category)
                first.category = first.category or row.category
            continue
        row.categories = [row.category] if row.category else []
        by_text[row.prompt] = row
    short = Counter(make_id(row.prompt) for row in by_text.values() if not row.id)
    by_id: dict[str, int] = {}
    for row in by_text.values():
        row.id = row.id or make_id(row.prompt, longer=short[make_id(row.prompt)] > 1)
        if row.id in by_id:
            raise ConfigError(f"{KEY}: {source}:{row.line}: id {row.id!r} is already used on line "
                              f"{by_id[row.id]}; ids must be unique")
        by_id[row.id] = row.line
    return list(by_text.values())


def _demo(items: list[_Row], source: Path) -> list[_Row]:
    """The demo's prompts, in DEMO_IDS order; all of them, or a clear error."""
    by_id = {row.id: row for row in items}
    missing = [i for i in DEMO_IDS if i not in by_id]
    if missing:
        raise ConfigError(f"{KEY} = demo: {source} lacks the demo prompts with ids {', '.join(missing)}; "
                          "restore data/PartiPrompts.tsv from the repository")
    return [by_id[i] for i in DEMO_IDS]


def _select(items: list[_Row], categories: Iterable[str], source: Path) -> list[_Row]:
    asked = {c.strip().casefold(): c.strip() for c in categories if c.strip()}
    wanted = set(asked)
    if not wanted:
        return items
    known: dict[str, str] = {}
    for row in items:
        for category in row.categories:
            known.setdefault(category.casefold(), category)
    unknown = sorted(asked[c] for c in wanted - known.keys())
    if unknown:
        there = ", ".join(sorted(known.values())) or "none (the benchmark has no categories)"
        raise ConfigError(f"upsample.categories: {', '.join(unknown)} not found in {source}; "
                          f"categories there: {there}")
    return [row for row in items if wanted & {c.casefold() for c in row.categories}]


def _finish(row: _Row, source: Path) -> Prompt:
    reference = None
    if row.reference:
        path = Path(row.reference).expanduser()
        path = path if path.is_absolute() else source.parent / path
        if not path.is_file():
            raise ConfigError(f"{KEY}: {source}:{row.line}: reference image not found: {path}")
        reference = str(path.resolve())
    return Prompt(row.id, row.prompt, row.category, reference)
