"""Reading and writing the files of a refine run (`runs/RUN/`)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from ..store import atomic_write_text


def write_jsonl(path: Path, rows: Iterable[dict]) -> None:
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def read_jsonl(path: Path) -> list[dict]:
    try:
        with open(path, encoding="utf-8") as fh:
            return [json.loads(line) for line in fh if line.strip()]
    except FileNotFoundError:
        return []


def prompts(run_dir: Path) -> list[dict]:
    """`prompts.jsonl` rows: {"id","prompt","category", "reference"?}."""
    return read_jsonl(run_dir / "prompts.jsonl")


def upsampled(run_dir: Path) -> dict[str, dict]:
    """`upsampled.jsonl` rows by id."""
    return {row["id"]: row for row in read_jsonl(run_dir / "upsampled.jsonl")}


def image_path(run_dir: Path, prompt_id: str, variant: str, seed: int) -> Path:
    return run_dir / "images" / prompt_id / f"{variant}-s{seed}.png"


class PromptsStage:
    """Mixin for refine stages whose items are the run's prompts (`prompts.jsonl` rows)."""

    def load_rows(self) -> None:
        self.rows = prompts(self.ctx.run_dir)
        self.up = upsampled(self.ctx.run_dir)

    def items(self):
        from ..stage import Item

        for row in self.rows:
            yield Item(row["id"], row)

    def count(self) -> int:
        return len(self.rows)
