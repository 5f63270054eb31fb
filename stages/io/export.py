"""Export a captioned folder for training: a Hugging Face `datasets` dataset and an imagefolder.

`PATH/dataset/` is written with `Dataset.save_to_disk` (columns image, caption, tags, id,
flags, review);
`PATH/imagefolder/` holds the images (hard-linked when possible) with a `metadata.jsonl`
that `datasets.load_dataset("imagefolder", data_dir=...)` reads as it is.

With WebDataset shards or Parquet tables as input, only `PATH/dataset/` is written (with a
`key` column too), from the shards' caption Parquet files and the images read from the
shards sample by sample; an imagefolder would unpack every shard to disk.

Review decisions (stages/decisions.py) are respected: rejected images are left out, and a
dataset's edited captions come from `captions/decisions.parquet`. A caption the interpret
stage flagged (`fallback`, `doubted`, ...) is exported with its `flags` and its `review`
decision (`undecided` when nobody looked), so a trainer can drop what nobody checked; the
command line counts those.
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


def _review_features() -> dict:
    import datasets

    return {"flags": datasets.Sequence(datasets.Value("string")), "review": datasets.Value("string")}


def captioned(cfg: Config, skipped: list[tuple[str, str]] | None = None) -> Iterator[dict]:
    """The folder's images with a caption that is current: made from this very image and
    these tags (its NAME.json says which), and not failed by the last run's interpret stage.
    Any other caption is left out, with its reason appended to `skipped`: a new image is
    never paired with an old caption. A caption with no NAME.json (written by hand) is
    exported as it is."""
    from ..decisions import KEEP, REJECTED, folder_decision
    from ..store import read_json, sha256_file

    skipped = skipped if skipped is not None else []
    failed = _last_failures(cfg)
    for item in image_items(cfg.paths.images):
        if item.error:
            continue                  # a clash or an unreadable folder: it has no caption
        decision = folder_decision(cfg.paths.captions, item.id)
        if decision == REJECTED:
            continue                  # rejected in the review page: not in the dataset
        txt = artifact(cfg.paths.captions, item.id, ".txt")
        if not txt.exists():
            continue
        if item.id in failed:
            skipped.append((item.id, f"interpret failed for it in the last run ({failed[item.id]}); "
                            "its caption is older than its inputs"))
            continue
        try:
            meta = read_json(artifact(cfg.paths.captions, item.id, ".json"))
        except (FileNotFoundError, ValueError):
            meta = None
        tags = read_tags(item.data, cfg)
        if isinstance(meta, dict) and meta.get("image_sha256"):
            if sha256_file(item.data) != meta["image_sha256"]:
                fix = ("its review decision was about the old picture: decide again in caption.py "
                       "--review" if decision in KEEP else "run caption.py first")
                skipped.append((item.id, f"the image changed after its caption was written; {fix}"))
                continue
            # a person accepted or wrote this caption looking at this very image: new tags
            # do not make it stale (a new image does, above)
            if isinstance(meta.get("tags"), list) and meta["tags"] != tags and decision not in KEEP:
                skipped.append((item.id, "the tags changed after its caption was written; run "
                                "caption.py first"))
                continue
            trigger = _trigger_changed(meta, cfg)
            if trigger and decision not in KEEP:
                skipped.append((item.id, trigger))
                continue
        flags = meta.get("flags") if isinstance(meta, dict) else None
        yield {"id": item.id, "path": item.data, "caption": txt.read_text(encoding="utf-8").strip(),
               "tags": tags, "flags": [str(f) for f in flags] if isinstance(flags, list) else [],
               "review": decision}


def _trigger_changed(made: dict, cfg: Config) -> str:
    """Why a caption made with other interpret.trigger_words than the config's now is not
    current ('' when it is, or when its record does not say): the trigger words are in
    the caption's text, and a LoRA dataset without them trains another word."""
    was = made.get("trigger_words")
    if not isinstance(was, list) or was == list(cfg.interpret.trigger_words):
        return ""
    return (f"interpret.trigger_words changed after its caption was written (made with "
            f"{', '.join(was) or 'none'}, now {', '.join(cfg.interpret.trigger_words) or 'none'})"
            "; run caption.py first")


def _last_failures(cfg: Config) -> dict[str, str]:
    """Image id -> why the interpret stage of the last caption run (on this captions folder)
    failed it."""
    from ..store import read_json

    try:
        summary = read_json(cfg.paths.cache / "summary-caption.json")
    except (FileNotFoundError, ValueError):
        return {}
    if not isinstance(summary, dict) or summary.get("captions", str(cfg.paths.captions)) != \
            str(cfg.paths.captions):
        return {}
    for stage in summary.get("stages", []):
        if stage.get("name") == "interpret":
            return {str(f.get("id")): str(f.get("reason")) for f in stage.get("failed", [])}
    return {}


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


def export_hf(cfg: Config, out: Path, skipped: list[tuple[str, str]] | None = None,
              quiet: bool = False, unchecked: list[str] | None = None) -> int:
    """Write both layouts; return the number of captioned images exported (the ones left
    out, with why, are appended to `skipped`; exported flagged captions nobody reviewed, to
    `unchecked`)."""
    with quiet_datasets(quiet):
        return _export_hf(cfg, out, skipped, unchecked if unchecked is not None else [])


def _export_hf(cfg: Config, out: Path, skipped: list[tuple[str, str]] | None,
               unchecked: list[str]) -> int:
    import datasets

    from ..decisions import UNDECIDED
    from .samples import is_dataset

    if is_dataset(cfg.paths.images):
        return export_hf_samples(cfg, out, unchecked)
    skipped = skipped if skipped is not None else []
    rows = list(captioned(cfg, skipped))
    if not rows:
        why = f" ({len(skipped)} left out; {skipped[0][0]}: {skipped[0][1]})" if skipped else ""
        raise ConfigError(f"--export: no current captions in {cfg.paths.captions}{why}; run "
                          "caption.py first")
    unchecked += [r["id"] for r in rows if r["flags"] and r["review"] == UNDECIDED]
    folder = out / "imagefolder"
    lines = []
    for row in rows:
        rel = row["path"].relative_to(cfg.paths.images)
        _link_or_copy(row["path"], folder / rel)
        lines.append(json.dumps({"file_name": rel.as_posix(), "caption": row["caption"],
                                 "tags": row["tags"], "id": row["id"], "flags": row["flags"],
                                 "review": row["review"]}, ensure_ascii=False))
    atomic_write_text(folder / "metadata.jsonl", "\n".join(lines) + "\n")
    features = datasets.Features({"image": datasets.Image(), "caption": datasets.Value("string"),
                                  "tags": datasets.Sequence(datasets.Value("string")),
                                  "id": datasets.Value("string"), **_review_features()})
    table = datasets.Dataset.from_dict({
        "image": [str(r["path"]) for r in rows], "caption": [r["caption"] for r in rows],
        "tags": [r["tags"] for r in rows], "id": [r["id"] for r in rows],
        "flags": [r["flags"] for r in rows], "review": [r["review"] for r in rows]},
        features=features)
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
    from ..decisions import KEEP, REJECTED, UNDECIDED, applies, load_decisions
    from .inputs import ImageInput
    from .shardout import read_shard

    source = ImageInput(cfg)
    decided = load_decisions(cfg.paths.captions)
    unit, captions = None, {}
    for item in source.items():
        if item.error:
            continue
        if item.unit != unit:
            unit, captions = item.unit, read_shard(cfg.paths.captions, item.unit)
        row = captions.get(item.id)
        decision = decided.get(item.id, {})
        if row is not None and not applies(decision, row["image_sha256"]):
            decision = {}             # made about another picture under this id: not this one's
        if decision.get("decision") == REJECTED:
            continue                  # rejected in the review page: not in the dataset
        if row is not None and decision.get("caption"):
            row = {**row, "caption": decision["caption"]}      # accepted or edited text
        review = decision.get("decision") or UNDECIDED
        if row is not None:
            data = source.image(item)
            if sha256_bytes(data) != row["image_sha256"]:
                raise ConfigError(f"--export: the image of {item.id} changed after its caption "
                                  f"in {cfg.paths.captions} was written; run caption.py first")
            # as the folder export: a caption made from other tags is not current (unless a
            # person accepted or wrote it looking at this very image)
            if isinstance(row.get("tags"), list) and list(row["tags"]) != source.tags(item) \
                    and decision.get("decision") not in KEEP:
                raise ConfigError(f"--export: the tags of {item.id} changed after its caption "
                                  f"in {cfg.paths.captions} was written; run caption.py first")
            trigger = _trigger_changed(row, cfg)
            if trigger and decision.get("decision") not in KEEP:
                raise ConfigError(f"--export: {item.id}: {trigger}")
            yield {"image": {"bytes": data, "path": None}, "caption": row["caption"],
                   "tags": row["tags"], "id": item.id, "key": row["key"],
                   "flags": list(row.get("flags") or []), "review": review}


def export_hf_samples(cfg: Config, out: Path, unchecked: list[str] | None = None) -> int:
    import datasets

    from ..decisions import UNDECIDED

    features = datasets.Features({"image": datasets.Image(), "caption": datasets.Value("string"),
                                  "tags": datasets.Sequence(datasets.Value("string")),
                                  "id": datasets.Value("string"), "key": datasets.Value("string"),
                                  **_review_features()})
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
    if unchecked is not None:
        unchecked += [i for i, f, r in zip(table["id"], table["flags"], table["review"], strict=True)
                      if f and r == UNDECIDED]
    del table
    shutil.rmtree(work, ignore_errors=True)
    return count
