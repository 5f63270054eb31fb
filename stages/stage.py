"""What a stage is: items, keys, declarations, reports, run options and the run context.

A stage lists its items lazily, computes each item's key, and processes only the items
whose output is missing or was made from other inputs. Executors (`stages/executors/`)
decide how pending items run; the runner decides which stages run.

Keys are declared, not assembled by hand. Each stage says what its outputs depend on in a
`Declaration`:
- `config`: settings whose values go into every item key (a template path goes in as the
  hash of the file's text, so editing a template redoes what it made);
- `reads`: settings that reach an output only through the item's own inputs (tag hygiene
  settings change an image's tag list, which `inputs(item)` returns);
- `backends`: backends whose `identity()` goes into every key; what each identity covers
  is declared in stages/resources.py (the LLM's identity is the model the server says it
  serves, resolved before any key is computed);
- `completion`: settings that decide when an output is finished rather than what it holds
  (more Socratic rounds extend a trace instead of redoing it);
- `operational`: settings the stage reads that never change an output.
A stage's `cfg` is a view that answers only those settings: reading anything else raises
`UndeclaredSetting`, so a setting cannot change an output without changing its key. The key
of an item is `hash(stage, version, declared settings, backend identities, inputs(item))`;
`version` changes when the stage's own way of making outputs changes. tests/test_keys.py
checks every config key against every stage.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import resources
from .backends.chat import CallStats
from .config import Config, ConfigView, setting
from .errors import ConfigError
from .store import CallCache, hash_value, sha256_file
from .templates import PromptTemplate, load_template

MAX_LISTED_FAILURES = 50
DISK_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


@dataclass(frozen=True)
class Item:
    """One unit of work: `id` is stable across runs and is what shards split on.

    A listing that cannot read an entry yields an Item with `error` set: the runner records
    it as that item's failure and goes on (one bad folder entry never stops a listing).
    `unit`, when set, is what `--shard` splits on instead of the id: the samples of one
    WebDataset shard or Parquet file stay together (stages/io/samples.py).
    """

    id: str
    data: Any = None
    error: str = ""
    unit: str = ""

    @property
    def split_on(self) -> str:
        return self.unit or self.id


@dataclass
class StageReport:
    name: str
    state: str = "ran"                    # ran | skipped | not selected | planned
    ok: int = 0
    reused: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    note: str = ""
    seconds: float = 0.0
    limited: str = ""                     # what cut the item list short, when something did
    total: int | None = None              # the stage's items when known (the progress bar's total)
    outside: int = 0                      # items passed over: another --shard part's


@dataclass(frozen=True)
class RunOptions:
    only: tuple[str, ...] = ()
    limit: int = 0
    shard: tuple[int, int] = (0, 1)
    dry_run: bool = False
    quiet: bool = False


def parse_shard(text: str) -> tuple[int, int]:
    """`I/N` with 0 <= I < N."""
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise ConfigError(f"--shard {text!r}: expected I/N, e.g. --shard 0/4") from None
    if count < 1 or not 0 <= index < count:
        raise ConfigError(f"--shard {text!r}: need 0 <= I < N, e.g. 0/4 ... 3/4")
    return index, count


def in_shard(item_id: str, shard: tuple[int, int]) -> bool:
    index, count = shard
    if count == 1:
        return True
    digest = hashlib.sha256(item_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % count == index


class Context:
    """Everything a run shares: config, caches, counters and lazily built backends."""

    def __init__(self, cfg: Config, *, program: str, options: RunOptions,
                 overrides: tuple[str, ...] = ()):
        self.cfg = cfg
        self.program = program
        self.options = options
        self.overrides = overrides          # --set values as given (cfg already holds them)
        self.stats = CallStats()
        self.calls = CallCache(cfg.paths.cache / "calls")
        self._resources: dict[str, Any] = {}
        self._templates: dict[Path, PromptTemplate] = {}

    @property
    def run_dir(self) -> Path:
        return self.cfg.paths.runs / self.cfg.run.name

    def template(self, path: Path, key: str, allowed: set[str] | None = None) -> PromptTemplate:
        if path not in self._templates:
            self._templates[path] = load_template(path, key, allowed)
        return self._templates[path]

    def resource(self, name: str, factory: Callable[[], Any]) -> Any:
        """A helper that is not an identity-bearing backend (a wiki client, a tokenizer),
        built on first use and kept for the run (closed at the end)."""
        if name not in self._resources:
            self._resources[name] = factory()
        return self._resources[name]

    def backend(self, name: str) -> Any:
        """Backend `name` (see stages/resources.py), built on first use with a view of the
        config that holds only what its identity declares, and kept for the run."""
        if name not in self._resources:
            spec = resources.spec(name, self.cfg)
            view = ConfigView(self.cfg, spec.readable(), f"the {name} backend")
            self._resources[name] = resources.build(name, self, view)
        return self._resources[name]

    def chat(self) -> Any:
        return self.backend("chat")

    async def start(self, names: Iterable[str]) -> None:
        """Resolve what the named backends really serve (models listed by the servers) before
        any key that names them is computed; nothing is loaded or generated."""
        for name in names:
            backend = self.backend(name)
            starter = getattr(backend, "start", None)
            if starter is not None:
                await starter()

    async def aclose(self) -> None:
        for resource in reversed(list(self._resources.values())):
            closer = getattr(resource, "aclose", None) or getattr(resource, "close", None)
            if closer is None:
                continue
            result = closer()
            if asyncio.iscoroutine(result):
                await result
        self._resources.clear()


@dataclass(frozen=True)
class FromConfig:
    """A chat parameter a stage sets from one of its own settings (e.g. upsample.temperature)."""

    key: str


@dataclass(frozen=True)
class Declaration:
    """What a stage's outputs depend on (see the module docstring)."""

    config: tuple[str, ...] = ()
    reads: tuple[str, ...] = ()
    backends: tuple[str, ...] = ()
    completion: tuple[str, ...] = ()
    operational: tuple[str, ...] = ()


# Settings every stage may read that decide where and how, never what.
GLOBAL_OPERATIONAL = ("paths.*", "run.*", "llm.concurrency")


class Stage(ABC):
    """A step that turns files on disk into other files on disk, item by item."""

    name: str = ""
    version: int = 1
    # Chat parameters this stage sets itself instead of [llm]: a value, or FromConfig(key).
    chat_params: dict[str, Any] = {}
    llm_bound = False       # True when items mostly wait on LLM requests
    # Integer attributes that process() adds to and finish() reports (e.g. fallbacks made):
    # an executor that runs process() in another copy of the stage (Ray) carries them back.
    tallies: tuple[str, ...] = ()

    def __init__(self, ctx: Context):
        self.ctx = ctx
        self.declared = self.declare(ctx.cfg)
        readable = (self.declared_keys() | set(self.declared.completion) | set(self.declared.operational)
                    | set(GLOBAL_OPERATIONAL) | {f"{self.name}.skip"})
        self.cfg = ConfigView(ctx.cfg, readable, f"the {self.name} stage")
        self._settings: dict[str, Any] | None = None
        self._identities: dict[str, Any] | None = None

    # -- what outputs depend on ---------------------------------------------------------------
    @classmethod
    def declare(cls, cfg: Config) -> Declaration:
        """What this stage's outputs depend on under `cfg` (conditions allowed)."""
        return Declaration()

    def declared_keys(self) -> set[str]:
        """Every setting that changes this stage's outputs (through the key or completion)."""
        d = self.declared
        keys = set(d.config) | set(d.reads) | set(d.completion)
        for name in d.backends:
            backend_keys = set(resources.spec(name, self.ctx.cfg).keys)
            if name == "chat":
                backend_keys -= {f"llm.{param}" for param in self.chat_params}
                backend_keys |= {v.key for v in self.chat_params.values() if isinstance(v, FromConfig)}
            keys |= backend_keys
        return keys

    def backend(self, name: str) -> Any:
        if name not in self.declared.backends:
            raise AssertionError(f"the {self.name} stage uses the {name} backend without declaring it")
        return self.ctx.backend(name)

    def chat_overrides(self) -> dict[str, Any]:
        """The chat parameters this stage sets, with FromConfig values read from its settings."""
        return {param: setting(self.ctx.cfg, v.key) if isinstance(v, FromConfig) else v
                for param, v in self.chat_params.items()}

    def load_template(self, key: str, placeholders: set[str]) -> PromptTemplate:
        """The template a declared setting names (placeholders checked)."""
        section, _, name = key.partition(".")
        return self.ctx.template(getattr(self.cfg.section(section), name), key, placeholders)

    async def start(self) -> None:
        """Resolve backend identities and fix the declared settings; runs before any key."""
        await self.ctx.start(self.declared.backends)
        self._settings = {key: _hashable(setting(self.ctx.cfg, key)) for key in sorted(self.declared.config)}
        self._identities = {}
        for name in self.declared.backends:
            backend = self.ctx.backend(name)
            self._identities[name] = (backend.identity(**self.chat_overrides()) if name == "chat"
                                      else backend.identity())

    @abstractmethod
    def inputs(self, item: Item) -> Any:
        """The item's own inputs that its output depends on (JSON-serialisable): its text,
        the hash of its image, the keys of the upstream artefacts it reads."""

    def key(self, item: Item) -> str:
        """The item's key, computed from the declaration alone (see the module docstring)."""
        if self._settings is None:
            raise AssertionError(f"the {self.name} stage computed a key before start()")
        return hash_value({"stage": self.name, "version": self.version, "settings": self._settings,
                           "backends": self._identities, "inputs": self.inputs(item)})

    # -- how it runs ----------------------------------------------------------------------------
    @property
    def skip(self) -> bool:
        return bool(getattr(self.cfg.section(self.name), "skip", False))

    @property
    def concurrency(self) -> int:
        return self.cfg.llm.concurrency

    @property
    def in_flight(self) -> int:
        """Items processed at once. LLM-bound stages keep twice as many items as request
        slots (the backend bounds requests to llm.concurrency), so one item's file work
        overlaps the others' requests and the server never waits for us."""
        return self.concurrency * 2 if self.llm_bound else self.concurrency

    @abstractmethod
    def items(self) -> Iterable[Item]:
        """The stage's inputs, lazily, in a stable order."""

    def count(self) -> int | None:
        """Number of items if cheap to know (for the progress bar), else None."""
        return None

    @abstractmethod
    def is_done(self, item: Item, key: str) -> bool:
        """True when the item's output exists and was made from `key`."""

    @abstractmethod
    async def process(self, item: Item, key: str) -> None:
        """Make the item's output; raise ItemError with a reason when it cannot."""

    def precheck(self, item: Item) -> None:
        """Raise the ItemError a real run would raise for this item before any model call
        (an unreadable image). A dry run calls it for every item it would process, so its
        WOULD FAIL lines are the run's FAILED ones; process() makes the same check."""

    def prepare(self) -> None:
        """Checks before the first item (templates, inputs). Writes nothing: a dry run calls it."""

    def begin(self) -> None:
        """Set-up that writes (index files a run keeps); not called on dry runs."""

    def missing_inputs(self) -> str:
        """Why this stage could not run now (used to warn when an earlier stage is skipped)."""
        return ""

    def plan(self) -> list[str]:
        """Lines for --dry-run: which backends and settings the stage would use."""
        return []

    def limited(self) -> str:
        """What cut this stage's items short beyond --limit (e.g. upsample.limit), or ''."""
        return ""

    def nothing_found(self) -> str:
        """What the summary says when the stage found no items at all (a typo in a path
        must not look like a finished run)."""
        return "no items found"

    def completed(self, item_id: str) -> None:
        """Called in the driver's process once an item's output is made, here or by a Ray
        actor (for bookkeeping across items, such as a shard's Parquet once its last sample
        is done). Runs outside the event loop; it may block on a write."""

    def flush(self) -> None:
        """Persist anything buffered in memory (called after each batch by executors)."""

    def finish(self, report: StageReport) -> None:
        """Work after all items (indexes, reports). Runs also when some items failed."""


def _hashable(value: Any) -> Any:
    """A setting as it enters a key: files by the hash of their content, tuples as lists."""
    if isinstance(value, Path):
        try:
            return "sha256:" + sha256_file(value)
        except OSError:
            return f"unreadable file {value.name}"
    if isinstance(value, tuple):
        return [_hashable(v) for v in value]
    return value
