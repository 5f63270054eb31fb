"""Program assembly: config + options -> stage objects -> runner -> summary and exit code."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys

from .cli import config_path, parse_only
from .config import load_config
from .registry import PROGRAMS, stage_class
from .runner import format_interrupted, format_summary, run_stages, write_summary
from .stage import Context, RunOptions, parse_shard


def options_from_args(args: argparse.Namespace, program: str) -> RunOptions:
    from .errors import ConfigError

    if args.limit < 0:
        raise ConfigError(f"--limit {args.limit}: must be 0 (no limit) or more")
    return RunOptions(only=parse_only(args.only, PROGRAMS[program]), limit=args.limit,
                      shard=parse_shard(args.shard), dry_run=args.dry_run, quiet=args.quiet)


def summary_path(ctx: Context):
    if ctx.program == "refine":
        return ctx.run_dir / "summary.json"
    return ctx.cfg.paths.cache / "summary-caption.json"


def quiet_libraries() -> None:
    """Library chatter (torchvision fallbacks, 77-token notices we report ourselves) off,
    unless the user asked for it through the libraries' own variables."""
    for name in ("TRANSFORMERS_VERBOSITY", "DIFFUSERS_VERBOSITY"):
        os.environ.setdefault(name, "error")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def make_executor(name: str):
    """The executor `run.executor` names (Ray is imported only when asked for)."""
    if name == "ray":
        from .executors.ray import RayExecutor

        return RayExecutor()
    from .executors.local import LocalExecutor

    return LocalExecutor()


def show_warnings() -> None:
    """The toolkit's own warnings (a store moved aside, a fallback taken) go to stderr as
    one line each, also with --quiet: they say something about the outputs."""
    log = logging.getLogger("stages")
    if not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("warning: %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.WARNING)
        log.propagate = False


def run_program(program: str, args: argparse.Namespace) -> int:
    quiet_libraries()
    show_warnings()
    cfg = load_config(config_path(args.config), args.overrides)
    options = options_from_args(args, program)
    owner = ""
    if program == "caption":
        from .io.owner import claim_captions

        owner = claim_captions(cfg, adopt=getattr(args, "adopt_captions", False),
                               write=not options.dry_run)
    ctx = Context(cfg, program=program, options=options, overrides=tuple(args.overrides))
    stages = [stage_class(name)(ctx) for name in PROGRAMS[program]
              if not options.only or name in options.only]
    if options.dry_run:
        print(f"{program}: plan for config {cfg.source} (nothing will be called)")
    reports: list = []
    try:
        asyncio.run(run_stages(stages, ctx, make_executor(cfg.run.executor), reports))
    except KeyboardInterrupt:
        from .errors import Interrupted

        raise Interrupted(format_interrupted(reports)) from None
    out = sys.stdout
    for line in format_summary(ctx, reports):
        print(line, file=out)
    if owner:
        args.owner_line = owner           # the program's last line (caption.py prints it after the review)
    failed = any(r.failed for r in reports)
    if options.dry_run:
        return 1 if failed else 0
    write_summary(summary_path(ctx), ctx, reports)
    return 1 if failed else 0

