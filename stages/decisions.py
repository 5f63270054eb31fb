"""Review decisions: what a person said about a caption in the review page, kept across runs.

A folder's decisions live in `captions/NAME.json` under `review`: {"decision": accepted |
rejected | edited, "at": ISO time, "previous": the text an edit replaced, "caption_sha256":
the caption decided on}. Shards and Parquet tables have no per-sample files: their
decisions are rows of `captions/decisions.parquet` (id, unit, key, decision, caption,
previous, at, image_sha256), rewritten atomically on each decision; a row holds for the
picture it was made on only (`applies`).

What they mean downstream: the interpret stage never replaces an accepted or edited caption
(it reports them as kept, whatever changed upstream) and does not caption a rejected image;
`--export` leaves rejected images out and takes edited captions from here; a rejected
image gets no caption beside it.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from .errors import ItemError
from .io.folder import artifact
from .store import atomic_write_json, atomic_write_text, read_json, sha256_bytes, sha256_text

ACCEPTED, REJECTED, EDITED = "accepted", "rejected", "edited"
DECISIONS = (ACCEPTED, REJECTED, EDITED)
KEEP = (ACCEPTED, EDITED)          # the caption is the person's: never replaced by a rerun
UNDECIDED = "undecided"            # no decision (also what clearing one leaves)
DECISIONS_FILE = "decisions.parquet"


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def review_of(meta: dict | None) -> dict:
    """The `review` record of a NAME.json ({} when there is none or it is not one)."""
    review = meta.get("review") if isinstance(meta, dict) else None
    return review if isinstance(review, dict) and review.get("decision") in DECISIONS else {}


def decision_of(meta: dict | None) -> str:
    return review_of(meta).get("decision", UNDECIDED)


def read_meta(captions: Path, item_id: str) -> dict:
    try:
        meta = read_json(artifact(captions, item_id, ".json"))
    except (FileNotFoundError, ValueError):
        return {}
    return meta if isinstance(meta, dict) else {}


def folder_decision(captions: Path, item_id: str) -> str:
    return decision_of(read_meta(captions, item_id))


def decide_folder(captions: Path, item_id: str, decision: str, text: str | None = None,
                  beside: Path | None = None) -> dict:
    """Record a decision on one image of a folder; returns {"decision", "caption"}.

    `beside` is the caption copy next to the image (interpret.write_beside_images), or None.
    An edit writes NAME.json (with the text it replaces) and then NAME.txt and the copy
    beside the image, each atomically; a rejection removes the copy beside the image when it
    holds our caption; UNDECIDED removes the record (the caption stays as it is).
    """
    meta = read_meta(captions, item_id)
    txt = artifact(captions, item_id, ".txt")
    try:
        current = txt.read_bytes()
    except FileNotFoundError:
        current = None
    current_text = None if current is None else current.decode("utf-8", "replace").strip()
    if decision == UNDECIDED:
        meta.pop("review", None)
        atomic_write_json(artifact(captions, item_id, ".json"), meta)
        return {"decision": UNDECIDED, "caption": current_text or ""}
    if decision == EDITED:
        text = " ".join((text or "").split())
        if not text:
            raise ItemError("an edited caption cannot be empty (reject the image instead)")
        meta["review"] = {"decision": EDITED, "at": now(), "previous": current_text or "",
                          "caption_sha256": sha256_text(text + "\n")}
        atomic_write_json(artifact(captions, item_id, ".json"), meta)
        atomic_write_text(txt, text + "\n")
        if beside is not None:
            atomic_write_text(beside, text + "\n")
        return {"decision": EDITED, "caption": text}
    if decision == ACCEPTED:
        if current is None:
            raise ItemError("there is no caption to accept (edit one in)")
        meta["review"] = {"decision": ACCEPTED, "at": now(), "caption_sha256": sha256_bytes(current)}
        atomic_write_json(artifact(captions, item_id, ".json"), meta)
        return {"decision": ACCEPTED, "caption": current_text}
    if decision == REJECTED:
        meta["review"] = {"decision": REJECTED, "at": now()}
        atomic_write_json(artifact(captions, item_id, ".json"), meta)
        if beside is not None and current is not None:
            try:
                if sha256_bytes(beside.read_bytes()) == sha256_bytes(current):
                    beside.unlink()
            except FileNotFoundError:
                pass
        return {"decision": REJECTED, "caption": current_text or ""}
    raise ItemError(f"unknown decision {decision!r}; one of {', '.join(DECISIONS)}, {UNDECIDED}")


# -- shards and tables: captions/decisions.parquet ------------------------------------------

def load_decisions(captions: Path) -> dict[str, dict]:
    """id -> decision row of captions/decisions.parquet ({} when there is none)."""
    from .io.shardout import read_table

    path = captions / DECISIONS_FILE
    if not path.exists():
        return {}
    return {row["id"]: row for row in read_table(path).to_pylist()}


def save_decisions(captions: Path, rows: dict[str, dict]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from .io.shardout import rows_table

    schema = pa.schema([("id", pa.string()), ("unit", pa.string()), ("key", pa.string()),
                        ("decision", pa.string()), ("caption", pa.string()),
                        ("previous", pa.string()), ("at", pa.string()),
                        ("image_sha256", pa.string())])
    table = rows_table([{name: rows[i].get(name) for name in schema.names}
                        for i in sorted(rows)], schema)
    path = captions / DECISIONS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        pq.write_table(table, tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def applies(row: dict | None, image_sha256: str | None) -> bool:
    """Whether a decision row was made about this very picture: a shard rebuilt with another
    picture under the same key gets no old edit or rejection (a row from before the picture
    was recorded applies)."""
    if not row:
        return False
    made_on = row.get("image_sha256")
    return not made_on or not image_sha256 or made_on == image_sha256


def decide_row(rows: dict[str, dict], item_id: str, unit: str, key: str, caption: str,
               decision: str, text: str | None = None, image_sha256: str | None = None) -> dict:
    """Update the decisions of a dataset in memory (the caller saves them). `image_sha256`
    is the picture the caption was made from: the decision holds for that picture only."""
    if decision == UNDECIDED:
        rows.pop(item_id, None)
        return {"decision": UNDECIDED, "caption": caption}
    earlier = rows.get(item_id) if applies(rows.get(item_id), image_sha256) else None
    previous = (earlier or {}).get("caption") or caption
    if decision == EDITED:
        text = " ".join((text or "").split())
        if not text:
            raise ItemError("an edited caption cannot be empty (reject the image instead)")
        row = {"decision": EDITED, "caption": text, "previous": previous}
    elif decision == ACCEPTED:
        row = {"decision": ACCEPTED, "caption": previous, "previous": None}
    elif decision == REJECTED:
        row = {"decision": REJECTED, "caption": None, "previous": None}
    else:
        raise ItemError(f"unknown decision {decision!r}; one of {', '.join(DECISIONS)}, {UNDECIDED}")
    rows[item_id] = {"id": item_id, "unit": unit, "key": key, "at": now(),
                     "image_sha256": image_sha256, **row}
    return {"decision": row["decision"], "caption": row["caption"] or caption}


def current_decisions(captions: Path) -> list[dict]:
    """The decision rows that hold for the caption now in each sample's shard Parquet."""
    from .io.shardout import read_shard

    by_unit: dict[str, list[dict]] = {}
    for row in load_decisions(captions).values():
        by_unit.setdefault(row.get("unit") or "", []).append(row)
    out = []
    for unit, rows in by_unit.items():
        written = read_shard(captions, unit)
        out += [r for r in rows if r["id"] in written
                and applies(r, written[r["id"]].get("image_sha256"))]
    return out
