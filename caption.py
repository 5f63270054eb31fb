#!/usr/bin/env python3
"""Caption a folder of tagged images: tag summaries, vision interrogation, interpretation.

Thin command line over the `stages` library; see README.md and config.ini.
"""

import sys

from stages.cli import build_parser, main_guard, resume_command

STAGES = ("tags", "interrogate", "interpret")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser("caption.py", __doc__.splitlines()[0], STAGES)
    parser.add_argument("--export", nargs=2, metavar=("FORMAT", "PATH"), default=None,
                        help="after captioning, export the folder: FORMAT is 'hf' "
                             "(a datasets folder with save_to_disk + metadata.jsonl)")
    args = parser.parse_args(argv)

    def body() -> int:
        from stages.app import run_program

        code = run_program("caption", args)
        if not args.dry_run:
            review(args)
        if args.export and not args.dry_run:
            code = max(code, export(args))
        return code

    return main_guard(body, resume_command('caption.py', argv))


def review(args) -> None:
    """Write captions/index.html, the review page (stages/review.py)."""
    from stages.cli import config_path
    from stages.config import load_config
    from stages.io.samples import is_dataset
    from stages.review import write_review

    cfg = load_config(config_path(args.config), args.overrides)
    if is_dataset(cfg.paths.images):
        return                        # shards and tables: captions/SHARD.parquet is the output
    path, count, flagged = write_review(cfg.paths.images, cfg.paths.captions,
                                        cfg.paths.cache / "summary-caption.json",
                                        cfg.paths.cache / "interrogate")
    if not args.quiet:
        print(f"review: {path} ({count} images, {flagged} flagged)")


def export(args) -> int:
    from pathlib import Path

    from stages.cli import config_path
    from stages.config import load_config
    from stages.errors import ConfigError
    from stages.io.export import export_hf

    fmt, out = args.export
    if fmt != "hf":
        raise ConfigError(f"--export {fmt!r}: unknown format; accepted: hf")
    cfg = load_config(config_path(args.config), args.overrides)
    count = export_hf(cfg, Path(out), quiet=args.quiet)
    from stages.io.samples import is_dataset

    where = f"{out}/dataset" + ("" if is_dataset(cfg.paths.images) else f" and {out}/imagefolder")
    print(f"export: {count} captioned images written to {where}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
