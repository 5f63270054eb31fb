#!/usr/bin/env python3
"""Caption a folder of tagged images: tag summaries, vision interrogation, interpretation.

Thin command line over the `stages` library; see README.md and config.ini.
"""

import sys

from stages.cli import build_parser, main_guard, resume_command

STAGES = ("tags", "interrogate", "interpret")

INPUT_HELP = ("the images to caption: a folder of images with NAME.txt tag files, or "
              "WebDataset shards / Parquet tables (a file, a glob or a brace pattern; quote it). "
              "Sets paths.images. Its captions go beside it, to NAME-captions/ (a folder "
              "photos/ -> photos-captions/; shards/*.tar -> shards-captions/), unless it is the "
              "config's paths.images (then paths.captions) or --set paths.captions is given")
FIRST_STEPS = """first steps:
  python caption.py                         caption the sample folder images/ into captions/
  python caption.py ~/photos                caption your folder into ~/photos-captions/
                                            (open its index.html to review)
  python caption.py ~/photos --export hf out   then export it for training (datasets)

Captions of a FOLDER given here go to FOLDER-captions/ beside it (of the config's own
paths.images: to paths.captions). A captions folder belongs to one input (its
.tagcap-input.json; a copy or a move of that input is the same input): another input is
refused (exit 2) unless --adopt-captions is given."""


def main(argv: list[str] | None = None) -> int:
    parser = build_parser("caption.py", __doc__.splitlines()[0] + "\n\n" + FIRST_STEPS, STAGES,
                          positional=("FOLDER_OR_SHARDS", INPUT_HELP))
    parser.add_argument("--adopt-captions", action="store_true",
                        help="let this input take over a captions folder that belongs to "
                             "another input (captions of images that differ are remade)")
    parser.add_argument("--export", nargs=2, metavar=("FORMAT", "PATH"), default=None,
                        help="after captioning, export the folder: FORMAT is 'hf' "
                             "(a datasets folder with save_to_disk + metadata.jsonl)")
    parser.add_argument("--review", action="store_true",
                        help="serve the review page on 127.0.0.1 (a free port, printed) to accept, "
                             "reject or edit captions; Ctrl-C stops it. Runs no stage")
    parser.add_argument("--no-browser", action="store_true",
                        help="with --review: print the address, do not open a browser")
    parser.add_argument("--port", type=int, default=0, metavar="N",
                        help="with --review: the port (default: a free one)")
    args = parser.parse_args(argv)

    def body() -> int:
        from stages.app import run_program
        from stages.cli import input_overrides

        args.user_sets = list(args.overrides)        # as typed (where() repeats the paths.*)
        args.overrides = input_overrides(args, "caption")
        check_flags(args)                 # before any stage: a run would end on this error
        if args.review:
            return serve_review(args)

        code = run_program("caption", args)
        if not args.dry_run:
            review(args)
        if args.export and not args.dry_run:
            code = max(code, export(args))
        if getattr(args, "owner_line", ""):
            print(args.owner_line)        # the last line: where the captions are
        return code

    return main_guard(body, resume_command('caption.py', argv))


def review(args) -> None:
    """Write captions/index.html, the review page (stages/review.py)."""
    from stages.cli import config_path
    from stages.config import load_config
    from stages.io.samples import is_dataset
    from stages.review import review_page

    cfg = load_config(config_path(args.config), args.overrides)
    if is_dataset(cfg.paths.images):  # shards and tables: captions/SHARD.parquet, served only
        from stages.review import dataset_flags

        total, flagged = dataset_flags(cfg.paths.captions)
        if flagged:
            print(f"review: {flagged} of {total} captions flagged, to look at: python caption.py"
                  f"{where(args)} --review (accept, reject or edit them in the browser)")
        return
    done = review_page(cfg.paths.images, cfg.paths.captions,
                       cfg.paths.cache / "summary-caption.json", cfg.paths.cache / "interrogate",
                       clip_limit=cfg.interpret.max_clip_tokens)
    for line in review_lines(done, args):
        print(line)


def where(args) -> str:
    """The arguments that name this run's input, how it is read, and the config, for a command
    to print."""
    import shlex

    named = getattr(args, "input", None)
    if named and named.startswith("-"):            # a folder named like an option: ./-pics
        named = f"./{named}"
    said = f" {shlex.quote(named)}" if named else ""
    said += f" --config {shlex.quote(args.config)}" if args.config else ""
    for value in getattr(args, "user_sets", []):   # paths.* (the input, its captions) and
        if value.partition("=")[0].strip().lower().startswith(("paths.", "input.")):  # input.*
            said += f" --set {shlex.quote(value)}"
    return said


def review_lines(done, args) -> list[str]:
    """What the terminal says about the page: flagged captions, decisions, where to look,
    and the tag files that were empty."""
    info = done.info
    flags = ", ".join(f"{n} {flag}" for flag, n in info.flags.items() if n)
    decided = ", ".join(f"{n} {d}" for d, n in info.decisions.items() if n and d != "undecided")
    lines = [f"review: {done.path} ({info.total} images, {info.flagged} flagged"
             + (f": {flags}" if flags else "") + (f"; {decided}" if decided else "") + ")"]
    if info.flagged:
        lines.append(f"review: {info.flagged} captions to look at: python caption.py{where(args)} "
                     "--review (accept, reject or edit them in the browser)")
    if done.empty_tags:
        shown = ", ".join(done.empty_tags[:10])
        more = f" and {len(done.empty_tags) - 10} more" if len(done.empty_tags) > 10 else ""
        lines.append(f"warning: {len(done.empty_tags)} tag files are empty (captioned from the "
                     f"vision answer alone): {shown}{more}")
    return lines


def serve_review(args) -> int:
    """caption.py --review: the review page served with decisions enabled."""
    from stages.cli import config_path
    from stages.config import load_config
    from stages.errors import ConfigError
    from stages.io.owner import claim_captions
    from stages.reviewserver import serve

    cfg = load_config(config_path(args.config), args.overrides)
    if not cfg.paths.captions.is_dir():
        raise ConfigError(f"paths.captions = {cfg.paths.captions}: no captions folder yet; run "
                          f"python caption.py{where(args)} first, then the same with --review")
    # the page pairs paths.images with paths.captions: another input's folder is refused
    # as a run refuses it (decisions would be recorded against the wrong pictures)
    claim_captions(cfg, adopt=False, write=False)
    return serve(cfg, port=args.port, browser=not args.no_browser)


EXPORT_FORMATS = ("hf",)


def check_flags(args) -> None:
    """Flag values the run would only meet at its end (or the review at its start): refused
    first, with one line (exit 2), also with --dry-run, which must predict that refusal."""
    from stages.errors import ConfigError

    if args.export and args.export[0] not in EXPORT_FORMATS:
        raise ConfigError(f"--export {args.export[0]!r}: unknown format; accepted: "
                          + ", ".join(EXPORT_FORMATS))
    if args.review and (args.dry_run or args.export):
        which = "--dry-run" if args.dry_run else "--export"
        raise ConfigError(f"--review with {which}: --review runs no stage and serves until "
                          f"Ctrl-C; run caption.py {which} ... and caption.py --review apart")
    if not 0 <= args.port <= 65535:
        raise ConfigError(f"--port {args.port}: not a port; give 1..65535, or 0 for a free one")


def export(args) -> int:
    from pathlib import Path

    from stages.cli import config_path
    from stages.config import load_config
    from stages.errors import ConfigError
    from stages.io.export import export_hf

    fmt, out = args.export
    if fmt not in EXPORT_FORMATS:
        raise ConfigError(f"--export {fmt!r}: unknown format; accepted: " + ", ".join(EXPORT_FORMATS))
    cfg = load_config(config_path(args.config), args.overrides)
    skipped: list[tuple[str, str]] = []
    unchecked: list[str] = []
    count = export_hf(cfg, Path(out), skipped, quiet=args.quiet, unchecked=unchecked)
    from stages.io.samples import is_dataset

    where = f"{out}/dataset" + ("" if is_dataset(cfg.paths.images) else f" and {out}/imagefolder")
    print(f"export: {count} captioned images written to {where}"
          + (f"; {len(skipped)} left out, their captions are not current:" if skipped else ""))
    if unchecked:
        print(f"export: {len(unchecked)} of them flagged by the verifier and not reviewed "
              f"({', '.join(unchecked[:5])}{', ...' if len(unchecked) > 5 else ''}): see the "
              "flags and review columns, or decide in caption.py --review")
    for item_id, reason in skipped[:50]:
        print(f"  SKIPPED {item_id}: {reason}")
    return 1 if skipped else 0


if __name__ == "__main__":
    sys.exit(main())
