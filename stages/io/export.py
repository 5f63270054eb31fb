"""Export a captioned folder for training: a Hugging Face `datasets` dataset and an imagefolder.

`PATH/dataset/` is written with `Dataset.save_to_disk` (columns image, caption, tags, id);
`PATH/imagefolder/` holds the images (hard-linked when possible) with a `metadata.jsonl`
that `datasets.load_dataset("imagefolder", data_dir=...)` reads as it is.

With WebDataset shards or Parquet tables as input, only `PATH/dataset/` is written (with a
`key` column too), from the shards' caption Parquet files and the images read from the
shards sample by sample; an imagefolder would unpack every shard to disk.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..config import Config
from ..errors import ConfigError
from ..store import atomic_write_text, sha256_bytes
from .folder import artifact, image_items, read_tags


def captioned(cfg: Config) -> Iterator[dict]:
    for item in image_items(cfg.paths.images):
        if item.error:
            continue                  # a clash or an unreadable folder: it has no caption
        txt = artifact(cfg.paths.captions, item.id, ".txt")
        if txt.exists():
            yield {"id": item.id, "path": item.data, "caption": txt.read_text(encoding="utf-8").strip(),
                   "tags": read_tags(item.data, cfg)}


def _link_or_copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists():
        dst.unlink()
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


@contextmanager
def quiet_datasets(quiet: bool):
    """With --quiet, no `datasets` progress bars ("Saving the dataset", "Generating train
    split") and no info logs while exporting; restored afterwards."""
    import datasets
    from datasets.utils import logging as ds_logging

    if not quiet:
        yield
        return
    bars_off, level = datasets.are_progress_bars_disabled(), ds_logging.get_verbosity()
    datasets.disable_progress_bars()
    ds_logging.set_verbosity_error()
    try:
        yield
    finally:
        ds_logging.set_verbosity(level)
        if not bars_off:
            datasets.enable_progress_bars()


def export_hf(cfg: Config, out: Path, quiet: bool = False) -> int:
    """Write both layouts; return the number of captioned images exported."""
    with quiet_datasets(quiet):
        return _export_hf(cfg, out)


def _export_hf(cfg: Config, out: Path) -> int:
    import datasets

    from .samples import is_dataset

    if is_dataset(cfg.paths.images):
        return export_hf_samples(cfg, out)
    rows = list(captioned(cfg))
    if not rows:
        raise ConfigError(f"--export: no captions in {cfg.paths.captions}; run caption.py first")
    folder = out / "imagefolder"
    lines = []
    for row in rows:
        rel = row["path"].relative_to(cfg.paths.images)
        _link_or_copy(row["path"], folder / rel)
        lines.append(json.dumps({"file_name": rel.as_posix(), "caption": row["caption"],
                                 "tags": row["tags"], "id": row["id"]}, ensure_ascii=False))
    atomic_write_text(folder / "metadata.jsonl", "\n".join(lines) + "\n")
    features = datasets.Features({"image": datasets.Image(), "caption": datasets.Value("string"),
                                  "tags": datasets.Sequence(datasets.Value("string")),
                                  "id": datasets.Value("string")})
    table = datasets.Dataset.from_dict({
        "image": [str(r["path"]) for r in rows], "caption": [r["caption"] for r in rows],
        "tags": [r["tags"] for r in rows], "id": [r["id"] for r in rows]}, features=features)
    _save_dataset(table, out)
    return len(rows)


def _save_dataset(table, out: Path) -> None:
    """`out/dataset` replaced by this table's save_to_disk, through a temporary folder."""
    target, tmp = out / "dataset", out / ".dataset.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    table.save_to_disk(str(tmp))
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)


def _sample_rows(cfg: Config):
    """Captioned samples, shard by shard: the captions of one shard in memory at a time."""
    from .inputs import ImageInput
    from .shardout import read_shard

    source = ImageInput(cfg)
    unit, captions = None, {}
    for item in source.items():
        if item.error:
            continue
        if item.unit != unit:
            unit, captions = item.unit, read_shard(cfg.paths.captions, item.unit)
        row = captions.get(item.id)
        if row is not None:
            data = source.image(item)
            if sha256_bytes(data) != row["image_sha256"]:
                raise ConfigError(f"--export: the image of {item.id} changed after its caption "
                                  f"in {cfg.paths.captions} was written; run caption.py first")
            yield {"image": {"bytes": data, "path": None}, "caption": row["caption"],
                   "tags": row["tags"], "id": item.id, "key": row["key"]}


def export_hf_samples(cfg: Config, out: Path) -> int:
    import datasets

    features = datasets.Features({"image": datasets.Image(), "caption": datasets.Value("string"),
                                  "tags": datasets.Sequence(datasets.Value("string")),
                                  "id": datasets.Value("string"), "key": datasets.Value("string")})
    work = out / ".export-cache"
    try:
        table = datasets.Dataset.from_generator(_sample_rows, features=features,
                                                gen_kwargs={"cfg": cfg}, cache_dir=str(work))
    except datasets.exceptions.DatasetGenerationError as exc:
        if isinstance(exc.__cause__, ConfigError):
            raise exc.__cause__ from None
        raise
    except ValueError as exc:                 # an empty generator
        if "no examples" not in str(exc).lower() and "empty" not in str(exc).lower():
            raise
        table = None
    if table is None or len(table) == 0:
        shutil.rmtree(work, ignore_errors=True)
        raise ConfigError(f"--export: no shard captions in {cfg.paths.captions}; run caption.py first")
    _save_dataset(table, out)
    count = len(table)
    del table
    shutil.rmtree(work, ignore_errors=True)
    return count
