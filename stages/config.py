"""config.ini -> frozen dataclasses, validated before any work starts.

Every section is a frozen dataclass; every field is a key. Field metadata carries the
checks (choices, ranges, path resolution) so that the error for a bad value can name the
file, the `section.key`, the problem and what is accepted. Unknown sections and keys are
errors: a typo must never silently fall back to a default.

Relative paths in the file resolve against the file's folder; relative paths given with
`--set` resolve against the current directory, where the user typed them.

Comments: a whole line starting with `;` or `#`, or `;`/`#` after a space and followed by a
space (`key = value   ; why`). A value that needs those characters is written in double
quotes (`stop = "###"`); an unquoted ` #x` or ` ;x` is refused rather than cut silently.

Stages and backends do not read a `Config` directly: they get a `ConfigView` that answers
only the keys they declare (see stages/stage.py), so a setting cannot change an output
without being part of that output's key.
"""

from __future__ import annotations

import configparser
import dataclasses
import os
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError, did_you_mean

AUTO = Path("auto")


def _key(default: Any, *, choices: tuple = (), min: float | None = None,
         max: float | None = None, path: bool = False, pattern: str = "",
         describe: str = "", unordered: bool | tuple = False,
         path_or_name: tuple[str, ...] | None = None, by_suffix: bool = False,
         auto: tuple[str, str] = ()) -> Any:
    """A key's default and checks. `unordered`: a list whose order means nothing (a set of
    metrics, of tags); it is kept in one canonical order (the tuple's, else sorted, without
    repeats), so writing it in another order changes no key and redoes nothing.
    `path_or_name`: text that is a path or a name (a model: a hub id or a local folder; a
    benchmark: parti or a file); a relative value that names an existing file or folder, or
    ends with one of these suffixes, is a path and resolves like every path key."""
    meta = {"choices": choices, "min": min, "max": max, "path": path, "pattern": pattern,
            "describe": describe, "unordered": unordered, "path_or_name": path_or_name,
            "by_suffix": by_suffix, "auto": auto}
    if isinstance(default, (list, tuple)):
        return field(default=tuple(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class PathsConfig:
    images: Path = _key(Path("images"), path=True)
    captions: Path = _key(Path("captions"), path=True)
    cache: Path = _key(Path("cache"), path=True)
    runs: Path = _key(Path("runs"), path=True)


_COLUMN = r"[^\s,;#]+"


@dataclass(frozen=True)
class InputConfig:
    """How samples are read when paths.images names WebDataset shards or Parquet tables."""

    image_column: str = _key("jpg;jpeg;png;webp;gif;bmp;tif;tiff",
                             pattern=r"[^\s,;#]+(;[^\s,;#]+)*",
                             describe="a column name / member extension such as jpg, or "
                             "alternatives such as jpg;png;webp (no spaces or commas)")
    tags_column: str = _key("txt", pattern=r"[^\s,;#]*", describe="a column name / member "
                            "extension such as txt, or empty for no tags")
    key_column: str = _key("key", pattern=_COLUMN, describe="a column name such as key")
    tags_json_field: str = _key("", pattern=r"[^\s,;#]*", describe="a field name of KEY.json "
                                "such as tags, or empty")


@dataclass(frozen=True)
class RunConfig:
    name: str = _key("default", pattern=r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}",
                     describe="a plain folder name (letters, digits, '.', '_', '-'; no slashes)")
    executor: str = _key("local", choices=("local", "ray"))
    ray_actors: int = _key(0, min=0, max=100_000)
    progress: bool = _key(True)


@dataclass(frozen=True)
class LLMConfig:
    base_url: tuple[str, ...] = _key(("local",))
    model: str = _key("", path_or_name=(".gguf",), by_suffix=True)
    backend: str = _key("openai", choices=("openai", "vllm"))
    api_key_env: str = _key("OPENAI_API_KEY")
    temperature: float = _key(0.2, min=0.0, max=2.0)
    top_p: float = _key(0.95, min=0.0, max=1.0)
    frequency_penalty: float = _key(0.5, min=-2.0, max=2.0)
    presence_penalty: float = _key(0.0, min=-2.0, max=2.0)
    max_tokens: int = _key(200, min=1, max=32768)
    seed: int = _key(0, min=-1)
    stop: tuple[str, ...] = _key(())
    structured: str = _key("auto", choices=("auto", "json_schema", "json_object", "prompt"))
    concurrency: int = _key(8, min=1, max=1024)
    timeout: float = _key(120.0, min=0.1)
    retries: int = _key(4, min=0, max=20)
    backoff: float = _key(1.0, min=0.0, max=60.0)
    local_parallel: int = _key(4, min=1, max=64)
    local_ctx: int = _key(2048, min=256, max=131072)
    local_threads: int = _key(0, min=0, max=512)
    local_start_timeout: float = _key(120.0, min=1.0)


@dataclass(frozen=True)
class VisionConfig:
    backend: str = _key("classifier", choices=("classifier", "openai", "blip"))
    base_url: tuple[str, ...] = _key(())
    model: str = _key("", path_or_name=())
    max_side: int = _key(768, min=64, max=8192)
    top_k: int = _key(3, min=1, max=20)
    device: str = _key("auto", choices=("auto", "cpu", "cuda", "mps"))
    max_new_tokens: int = _key(60, min=1, max=2048)


@dataclass(frozen=True)
class TagsConfig:
    skip: bool = _key(False)
    source: str = _key("file", choices=("file", "danbooru"))
    wiki_file: Path = _key(Path("data/wiki.json"), path=True)
    url: str = _key("https://danbooru.donmai.us")
    min_post_count: int = _key(0, min=0)
    include_tags_without_wiki: bool = _key(False)
    template: Path = _key(Path("templates/tag_summary.txt"), path=True)
    user_agent: str = _key("tagcap/0.1 (dataset captioning; +https://example.invalid/tagcap)")
    requests_per_second: float = _key(2.0, min=0.01, max=100.0)
    timeout: float = _key(20.0, min=0.1)
    retries: int = _key(4, min=0, max=20)
    blacklist: tuple[str, ...] = _key((), unordered=True)
    drop_meta: bool = _key(True)
    drop_copyright: bool = _key(True)


@dataclass(frozen=True)
class InterrogateConfig:
    skip: bool = _key(False)
    template: Path = _key(Path("templates/interrogate.txt"), path=True)
    tags_hint: bool = _key(True)
    max_pixels: int = _key(50_000_000, min=1)


@dataclass(frozen=True)
class InterpretConfig:
    skip: bool = _key(False)
    template: Path = _key(AUTO, path=True, auto=("templates/interpret.txt",
                                                 "templates/interpret_full.txt"))
    shorten_template: Path = _key(Path("templates/shorten.txt"), path=True)
    candidates: int = _key(3, min=1, max=16)
    trigger_words: tuple[str, ...] = _key(())
    max_clip_tokens: int = _key(77, min=8, max=1024)
    overwrite: bool = _key(False)
    write_beside_images: bool = _key(False)
    beside_extension: str = _key(".caption")


@dataclass(frozen=True)
class UpsampleConfig:
    skip: bool = _key(False)
    benchmark: str = _key("demo", path_or_name=(".txt", ".csv", ".tsv", ".jsonl"),
                           by_suffix=True)
    benchmark_path: str = _key("", path_or_name=("",), by_suffix=True)
    limit: int = _key(5, min=0)
    categories: tuple[str, ...] = _key((), unordered=True)
    template: Path = _key(Path("templates/upsample.txt"), path=True)
    candidates: int = _key(2, min=1, max=16)
    max_clip_tokens: int = _key(77, min=8, max=1024)
    temperature: float = _key(0.7, min=0.0, max=2.0)


@dataclass(frozen=True)
class GenerateConfig:
    skip: bool = _key(False)
    backend: str = _key("diffusers", choices=("diffusers", "a1111"))
    model: str = _key("tiny", path_or_name=())
    refiner: str = _key("", path_or_name=())
    scheduler: str = _key("")
    device: str = _key("auto", choices=("auto", "cpu", "cuda", "mps"))
    dtype: str = _key("auto", choices=("auto", "float16", "bfloat16", "float32"))
    steps: int = _key(4, min=1, max=1000)
    guidance: float = _key(5.0, min=0.0, max=50.0)
    width: int = _key(64, min=8, max=8192)
    height: int = _key(64, min=8, max=8192)
    seeds: tuple[int, ...] = _key((0,), min=0)
    batch_size: int = _key(4, min=1, max=256)
    negative_prompt: str = _key("")
    url: str = _key("http://127.0.0.1:7860")
    # a1111 only (issue 12):
    sampler: str = _key("")
    timeout: float = _key(600.0, min=1.0)
    api_auth_env: str = _key("")


@dataclass(frozen=True)
class SocraticConfig:
    skip: bool = _key(False)
    start: str = _key("original", choices=("original", "upsampled"))
    iterations: int = _key(3, min=1, max=50)
    early_stop: bool = _key(True)
    select: str = _key("clip", choices=("clip", "judge"))
    template: Path = _key(Path("templates/socratic.txt"), path=True)
    max_clip_tokens: int = _key(77, min=8, max=1024)
    clip_model: str = _key("", path_or_name=())   # select = clip: empty means evaluate.clip_model
    fresh_seeds: int = _key(2, min=0, max=16)   # re-renders of best and first for best vs first


METRICS = ("clipscore", "image_similarity", "caption_score", "llm_judge")


@dataclass(frozen=True)
class EvaluateConfig:
    skip: bool = _key(False)
    metrics: tuple[str, ...] = _key(METRICS, unordered=METRICS)
    clip_model: str = _key("tiny", path_or_name=())
    text_model: str = _key("all-MiniLM-L6-v2", path_or_name=())
    judge_template: Path = _key(Path("templates/judge.txt"), path=True)
    # An evaluation independent of the Socratic loop (issue 12); empty means the loop's own.
    judge_model: str = _key("", path_or_name=(".gguf",), by_suffix=True)
    vision_backend: str = _key("", choices=("", "classifier", "openai", "blip"))
    vision_model: str = _key("", path_or_name=())
    permutations: int = _key(10000, min=1000, max=1_000_000)




@dataclass(frozen=True)
class Config:
    source: Path
    paths: PathsConfig
    input: InputConfig
    run: RunConfig
    llm: LLMConfig
    vision: VisionConfig
    tags: TagsConfig
    interrogate: InterrogateConfig
    interpret: InterpretConfig
    upsample: UpsampleConfig
    generate: GenerateConfig
    socratic: SocraticConfig
    evaluate: EvaluateConfig

    def section(self, name: str) -> Any:
        return getattr(self, name)


SECTIONS: dict[str, type] = {
    f.name: typing.get_type_hints(Config)[f.name]
    for f in dataclasses.fields(Config) if f.name != "source"
}


def _describe_type(tp: Any, meta: dict) -> str:
    if meta.get("describe"):
        return meta["describe"]
    if meta.get("choices"):
        return "one of: " + ", ".join(meta["choices"])
    if tp is bool:
        return "true or false"
    name = {int: "an integer", float: "a number", str: "text", Path: "a path"}.get(tp)
    if name is None and typing.get_origin(tp) is tuple:
        inner = typing.get_args(tp)[0]
        name = "a comma-separated list of " + ("integers" if inner is int else "values")
    lo, hi = meta.get("min"), meta.get("max")
    if lo is not None and hi is not None:
        name += f" from {lo} to {hi}"
    elif lo is not None:
        name += f" >= {lo}"
    return name or str(tp)


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _split_list(raw: str) -> list[str]:
    return [part.strip() for part in raw.replace("\n", ",").split(",") if part.strip()]


def _convert(tp: Any, raw: str) -> Any:
    raw = raw.strip()
    if tp is bool:
        low = raw.lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise ValueError(f"{raw!r} is not a boolean")
    if tp is int:
        return int(raw.replace("_", ""))
    if tp is float:
        value = float(raw)
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError(f"{raw!r} is not a finite number")
        return value
    if tp is Path:
        return Path(os.path.expanduser(raw))
    if typing.get_origin(tp) is tuple:
        inner = typing.get_args(tp)[0]
        return tuple(_convert(inner, part) for part in _split_list(raw))
    return raw


def _check_range(value: Any, meta: dict) -> str | None:
    values = value if isinstance(value, tuple) else (value,)
    for v in values:
        if meta.get("pattern") and not re.fullmatch(meta["pattern"], str(v)):
            return f"{v!r} is not accepted"
        if meta.get("choices") and v not in meta["choices"]:
            return f"{v!r} is not accepted"
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            if meta.get("min") is not None and v < meta["min"]:
                return f"{v} is below the minimum {meta['min']}"
            if meta.get("max") is not None and v > meta["max"]:
                return f"{v} is above the maximum {meta['max']}"
    return None


def parse_overrides(items: list[str]) -> dict[tuple[str, str], str]:
    """Parse repeated `--set section.key=value` arguments."""
    out: dict[tuple[str, str], str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        section, dot, key = name.strip().partition(".")
        if not sep or not dot or not section or not key:
            raise ConfigError(f"--set {item!r}: expected SECTION.KEY=VALUE; "
                              + (_full_form(name.strip(), value if sep else None).strip()
                                 or "e.g. --set llm.temperature=0.5"))
        out[(section.lower(), key.lower())] = value
    return out


def _full_form(name: str, value: str | None) -> str:
    """'did you mean --set SECTION.KEY=VALUE? ' for a --set without its section (a key that
    one or more sections have: the first named, the others listed) or, for a true/false key,
    without its value; else ''."""
    section, dot, key = name.lower().partition(".")
    if not dot:
        owners = [s for s, cls in SECTIONS.items() if section in {f.name for f in dataclasses.fields(cls)}]
        if not owners or value is None:
            return ""
        also = f"(also a key of [{'], ['.join(owners[1:])}]) " if owners[1:] else ""
        return f"did you mean --set {owners[0]}.{section}={value}? {also}"
    cls = SECTIONS.get(section)
    if value is None and cls is not None and typing.get_type_hints(cls).get(key) is bool:
        return f"did you mean --set {section}.{key}=true? "
    return ""


_MARKER = re.compile(r"(?:^|(?<=\s))[;#]")


def strip_comment(raw: str, where: str) -> str:
    """A value as written in the file without its inline comment; quoted values literal.

    `raw` may span several lines (lists); each line is read on its own.
    """
    return "\n".join(_strip_line(line.strip(), where) for line in raw.split("\n"))


def _strip_line(text: str, where: str) -> str:
    if text.startswith('"'):
        end = text.find('"', 1)
        if end < 0:
            raise ConfigError(f"{where} = {text!r}: the opening quote is never closed")
        rest = text[end + 1:].strip()
        if rest and not _MARKER.match(rest):
            raise ConfigError(f"{where} = {text!r}: text after the closing quote; put a comment "
                              "after '; ' or move the text inside the quotes")
        return text[1:end]
    match = _MARKER.search(text)
    if match is None:
        return text
    after = text[match.end():match.end() + 1]
    if after and not after.isspace():
        marker = match.group(0)
        raise ConfigError(f"{where} = {text!r}: '{marker}' here would start a comment and cut the "
                          f"value; quote the value (\"{text}\") or write '{marker} ' with a space "
                          "if the rest is a comment")
    return text[:match.start()].rstrip()


def _unquote(raw: str, where: str) -> str:
    """A --set value read as the file reads a value: a double-quoted value is taken literally
    without its quotes (`--set 'interpret.trigger_words="ohwx"'` is ohwx, as in the file).
    No comments on the command line: an unquoted value is kept whole."""
    text = raw.strip()
    return _strip_line(text, where) if text.startswith('"') else raw


def _read_file(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(
        interpolation=None, inline_comment_prefixes=None, strict=True,
        empty_lines_in_values=False)
    try:
        with open(path, encoding="utf-8") as fh:
            parser.read_file(fh, source=str(path))
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found; pass --config PATH "
                          "or copy config.ini from the repository") from None
    except (configparser.Error, UnicodeDecodeError) as exc:
        first = str(exc).strip().splitlines()[0]
        raise ConfigError(f"{path}: cannot parse: {first}") from None
    return parser


def load_config(path: str | os.PathLike, overrides: list[str] | None = None,
                cwd: Path | None = None) -> Config:
    """Read, override, convert and validate; raise ConfigError with one clear line."""
    path = Path(path)
    parser = _read_file(path)
    base_file = path.resolve().parent
    base_set = (cwd or Path.cwd()).resolve()
    raw: dict[tuple[str, str], tuple[str, str]] = {}   # (section, key) -> (value, origin)
    for section in parser.sections():
        if section not in SECTIONS:
            raise ConfigError(f"{path}: [{section}]: unknown section; "
                              + did_you_mean(section, SECTIONS, "[", "]")
                              + "accepted sections: " + ", ".join(SECTIONS))
        for key, value in parser.items(section):
            raw[(section, key)] = (strip_comment(value, f"{path}: {section}.{key}"), "file")
    for (section, key), value in parse_overrides(overrides or []).items():
        raw[(section, key)] = (_unquote(value, f"--set {section}.{key}"), "set")
    sections: dict[str, Any] = {}
    for name, cls in SECTIONS.items():
        sections[name] = _build_section(path, name, cls, raw, base_file, base_set)
    for section, key in raw:
        if section not in SECTIONS:
            raise ConfigError(f"--set {section}.{key}: unknown section [{section}]; "
                              + did_you_mean(section, SECTIONS, "", f".{key}")
                              + "accepted sections: " + ", ".join(SECTIONS))
    cfg = _resolve_auto(Config(source=path, **sections), base_file)
    _cross_checks(cfg, {f"{section}.{key}" for (section, key), (_, origin) in raw.items()
                        if origin == "set"})
    return cfg


def _suggest_key(section: str, key: str, fields) -> str:
    """'did you mean section.key? ' for the closest key of this section, or for the same key
    in another section ('' when neither)."""
    close = did_you_mean(key, fields, f"{section}.")
    if close:
        return close
    worded = [name for name in fields if key.lower() in name.split("_")]    # url: base_url
    if worded:
        return f"did you mean {section}.{worded[0]}? "
    elsewhere = [name for name, cls in SECTIONS.items()
                 if key in {f.name for f in dataclasses.fields(cls)}]
    return f"did you mean {elsewhere[0]}.{key}? " if elsewhere else ""


def _build_section(path: Path, name: str, cls: type, raw: dict, base_file: Path,
                   base_set: Path) -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    values: dict[str, Any] = {}
    for (section, key), (value, origin) in raw.items():
        if section != name:
            continue
        where = f"{path}: {name}.{key}" if origin == "file" else f"--set {name}.{key}"
        if key not in fields:
            raise ConfigError(f"{where}: unknown key; " + _suggest_key(name, key, fields)
                              + f"accepted keys in [{name}]: " + ", ".join(fields))
        meta, tp = fields[key].metadata, hints[key]
        try:
            converted = _convert(tp, value)
        except ValueError:
            raise ConfigError(f"{where} = {value.strip()!r}: wrong type; expected "
                              + _describe_type(tp, meta)) from None
        problem = _check_range(converted, meta)
        if problem:
            raise ConfigError(f"{where} = {value.strip()!r}: {problem}; expected "
                              + _describe_type(tp, meta))
        if meta.get("unordered"):
            converted = _canonical(converted, meta["unordered"])
        base = base_file if origin == "file" else base_set
        if meta.get("path") and not converted.is_absolute() and not _is_auto(converted, meta):
            converted = base / converted
        if meta.get("path_or_name") is not None:
            converted = _path_or_name(converted, base, meta["path_or_name"], meta["by_suffix"])
        values[key] = converted
    for key, f in fields.items():
        if (key not in values and f.metadata.get("path") and not f.default.is_absolute()
                and not _is_auto(f.default, f.metadata)):
            values[key] = base_file / f.default
    return cls(**values)


def _is_auto(value: Any, meta: Any) -> bool:
    return bool(meta.get("auto")) and value == AUTO


def embedded_llm(cfg: Config) -> bool:
    """Whether the LLM is the embedded llama.cpp server (llm.base_url = local)."""
    return cfg.llm.backend == "openai" and cfg.llm.base_url == ("local",)


def _resolve_auto(cfg: Config, base_file: Path) -> Config:
    """Path keys set to `auto` become the file their metadata names for this LLM server, so
    that the chosen file (its text) is what enters keys and provenance."""
    for name in SECTIONS:
        section = getattr(cfg, name)
        changes = {}
        for f in dataclasses.fields(section):
            if _is_auto(getattr(section, f.name), f.metadata):
                embedded, other = f.metadata["auto"]
                changes[f.name] = base_file / (embedded if embedded_llm(cfg) else other)
        if changes:
            cfg = dataclasses.replace(cfg, **{name: dataclasses.replace(section, **changes)})
    return cfg


def _path_or_name(value: str, base: Path, suffixes: tuple[str, ...], by_suffix: bool) -> str:
    """`value` as an absolute path when it is one (see `_key`), else unchanged."""
    if not value.strip():
        return value
    path = Path(os.path.expanduser(value.strip()))
    if path.is_absolute():
        return str(path)
    candidate = base / path
    if value.strip().lower().endswith(suffixes) or (not by_suffix and candidate.exists()):
        return str(candidate)
    return value


def _canonical(values: tuple, order: bool | tuple) -> tuple:
    """An unordered list in its one canonical order, without repeats."""
    rank = {v: i for i, v in enumerate(order)} if isinstance(order, tuple) else {}
    return tuple(sorted(set(values), key=lambda v: (rank.get(v, len(rank)), v)))


def _cross_checks(cfg: Config, given: set[str] = frozenset()) -> None:
    """Settings that are wrong together; each message names where its keys were set: a
    --set among `given`, else the file."""
    def where(*keys: str) -> str:
        return "--set " if any(k in given for k in keys) else f"{cfg.source}: "

    unknown = [m for m in cfg.evaluate.metrics if m not in METRICS]
    if unknown:
        raise ConfigError(where("evaluate.metrics") + f"evaluate.metrics: unknown metric {unknown[0]!r}; "
                          "accepted: " + ", ".join(METRICS))
    if not cfg.llm.base_url:
        raise ConfigError(where("llm.base_url") + "llm.base_url is empty; set it to 'local' or a URL such "
                          "as http://127.0.0.1:8000/v1")
    for url in cfg.llm.base_url + cfg.vision.base_url:
        if url != "local" and not url.startswith(("http://", "https://")):
            raise ConfigError(where("llm.base_url", "vision.base_url") + f"llm.base_url: {url!r} is "
                              "not a URL; use 'local' or http(s)://HOST:PORT/v1")
    if any(c in (cfg.input.tags_column.lower(), "json")
           for c in cfg.input.image_column.lower().split(";")):
        raise ConfigError(where("input.image_column", "input.tags_column")
                          + f"input.image_column = {cfg.input.image_column!r}: the same as "
                          "input.tags_column or KEY.json; name the image member or column, e.g. jpg")
    if not cfg.generate.seeds:
        raise ConfigError(where("generate.seeds") + "generate.seeds is empty; give at least one integer seed")
    if cfg.vision.backend == "blip" and not cfg.vision.model:
        raise ConfigError(where("vision.backend", "vision.model") + "vision.model: the blip backend "
                          "needs a hub id or local folder, e.g. Salesforce/blip-image-captioning-base")
    if cfg.llm.backend == "vllm" and not cfg.llm.model:
        raise ConfigError(where("llm.backend", "llm.model") + "llm.model: llm.backend = vllm loads "
                          "the model in process, so it needs a hub id or local folder, e.g. "
                          "Qwen/Qwen2.5-7B-Instruct")
    inherited = cfg.vision.model if cfg.vision.backend == "blip" else ""
    if cfg.evaluate.vision_backend == "blip" and not (cfg.evaluate.vision_model or inherited):
        raise ConfigError(where("evaluate.vision_backend", "evaluate.vision_model", "vision.model")
                          + "evaluate.vision_model: the blip backend needs a hub id or local "
                          "folder, e.g. Salesforce/blip-image-captioning-large")
    if cfg.generate.backend == "a1111" and cfg.generate.model.strip() in ("", "tiny"):
        raise ConfigError(where("generate.backend", "generate.model")
                          + f"generate.model = {cfg.generate.model!r}: with generate.backend = "
                          "a1111 it must name a web UI checkpoint, e.g. 'sd_xl_base_1.0.safetensors "
                          "[31e35c80fc]' (the titles are listed at GENERATE_URL/sdapi/v1/sd-models)")


def default_config_path() -> Path:
    """config.ini beside the CLIs, so the tools work from any current directory."""
    return Path(__file__).resolve().parent.parent / "config.ini"



# -- declared access ------------------------------------------------------------------------

def all_keys() -> list[str]:
    """Every `section.key` the configuration has, in file order."""
    return [f"{name}.{f.name}" for name, cls in SECTIONS.items() for f in dataclasses.fields(cls)]


def setting(cfg: Config, name: str) -> Any:
    """The value of `section.key`."""
    section, _, key = name.partition(".")
    return getattr(getattr(cfg, section), key)


class UndeclaredSetting(AssertionError):
    """Code read a setting it does not declare: a programming error, never a user's."""


def _allowed(name: str, allowed: frozenset[str]) -> bool:
    return name in allowed or name.split(".", 1)[0] + ".*" in allowed


class SectionView:
    """One section of a ConfigView: attribute access to the declared keys only."""

    def __init__(self, section: Any, name: str, allowed: frozenset[str], who: str):
        self._section, self._name, self._allowed, self._who = section, name, allowed, who

    def __getattr__(self, key: str) -> Any:
        if key.startswith("_"):
            raise AttributeError(key)
        name = f"{self._name}.{key}"
        if not _allowed(name, self._allowed):
            raise UndeclaredSetting(f"{self._who} reads {name} without declaring it; add it to the "
                                    "keys its output depends on (or to its operational keys)")
        return getattr(self._section, key)


class ConfigView:
    """A Config that answers only `allowed` keys (`section.key`, or `section.*`)."""

    def __init__(self, cfg: Config, allowed: frozenset[str] | set[str], who: str):
        self._cfg, self._allowed, self._who = cfg, frozenset(allowed), who

    @property
    def source(self) -> Path:
        return self._cfg.source

    def __getattr__(self, section: str) -> SectionView:
        if section.startswith("_") or section not in SECTIONS:
            raise AttributeError(section)
        return SectionView(getattr(self._cfg, section), section, self._allowed, self._who)

    def section(self, name: str) -> SectionView:
        return getattr(self, name)
