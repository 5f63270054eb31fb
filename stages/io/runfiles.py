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
        """The run's prompts. Without prompts.jsonl because a flag keeps the upsample stage
        out of this run, a stage named in --only stops (exit 2: it was asked for and has no
        input); otherwise it has no items and says which flag (`nothing_found`)."""
        from ..errors import ConfigError

        self.rows = prompts(self.ctx.run_dir)
        self.up = upsampled(self.ctx.run_dir)
        self.replaced = 0           # prompts.jsonl rows the plan's upsample stage replaces
        if self.rows and self.ctx.options.dry_run and self.rewritten_by_plan():
            self.replaced, self.rows = len(self.rows), []   # the plan's upsample writes others
        self.why_no_prompts = self.missing_prompts()
        if self.why_no_prompts and self.name in self.ctx.options.only:
            raise ConfigError(f"--only {','.join(self.ctx.options.only)}: the {self.name} stage "
                              f"has no input: {self.why_no_prompts}")

    def rewritten_by_plan(self) -> bool:
        """Whether this run's upsample stage rewrites prompts.jsonl with other prompts (the
        benchmark's, not those of an earlier run's), so a plan must not count the old ones."""
        from ..upsample import load_prompts

        only, cfg = self.ctx.options.only, self.ctx.cfg
        if (only and "upsample" not in only) or cfg.upsample.skip:
            return False
        return {row.get("id") for row in self.rows} != {p.id for p in load_prompts(cfg)[0]}

    def missing_prompts(self) -> str:
        """Why prompts.jsonl is missing when a flag keeps the stage that writes it out of this
        run (that flag named), else ''."""
        path = self.ctx.run_dir / "prompts.jsonl"
        if path.exists():
            return ""
        only = self.ctx.options.only
        if only and "upsample" not in only:
            flag = f"--only {','.join(only)} leaves it out of this run"
        elif self.ctx.cfg.upsample.skip:
            flag = "upsample.skip = true skips it"
        else:
            return ""                       # the upsample stage of this run writes it
        return (f"no {path} (the upsample stage writes it, and {flag}); run the upsample stage "
                f"first, or set run.name to a run that has one")

    def nothing_found(self) -> str:
        if self.replaced:
            return (f"its items come from the upsample stage of this plan, which replaces the "
                    f"{self.replaced} prompt{'s' if self.replaced != 1 else ''} now in "
                    f"prompts.jsonl with the benchmark's")
        return self.why_no_prompts or "no prompts in prompts.jsonl"

    def items(self):
        from ..stage import Item

        for row in self.rows:
            yield Item(row["id"], row)

    def count(self) -> int:
        return len(self.rows)
