"""What caption.py and refine.py share: arguments, config loading, exit codes.

Exit codes: 0 every item succeeded, 1 some items failed (listed), 2 a usage or
configuration error or a fatal backend problem (one clear line, no traceback),
130 interrupted.
"""

from __future__ import annotations

import argparse
import errno
import sys
from collections.abc import Callable
from pathlib import Path

from .errors import ConfigError, FatalError, did_you_mean


class _Parser(argparse.ArgumentParser):
    """argparse with a hint for what it cannot place: an option's nearest name, or quotes
    for a path with a space (`caption.py my photos` reads as two arguments)."""

    def error(self, message: str):
        said = message.partition("unrecognized arguments: ")[2].split()
        options = [word for word in said if word.startswith("-")]
        if options:
            hint = did_you_mean(options[0].split("=")[0], self._option_string_actions)
            message += f"; {hint.strip()}" if hint else ""
        elif said and getattr(self, "input_name", ""):
            message += (f"; {self.input_name} is one argument: a path with spaces goes in "
                        f"quotes, e.g. 'my photos'")
        super().error(message)


def build_parser(prog: str, description: str, stage_names: tuple[str, ...], *,
                 positional: tuple[str, str] | None = None,
                 epilog: str = "") -> argparse.ArgumentParser:
    """The options both programs share; `positional` (name, help) is the optional input
    argument, `epilog` text after the options (descriptions keep their line breaks)."""
    parser = _Parser(prog=prog, description=description, epilog=epilog,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    if positional is not None:
        parser.input_name = positional[0]
        parser.add_argument("input", metavar=positional[0], nargs="?", default=None,
                            help=positional[1])
    parser.add_argument("--config", metavar="PATH", default=None,
                        help="config file (default: config.ini beside this script)")
    parser.add_argument("--set", metavar="SECTION.KEY=VALUE", action="append", default=[],
                        dest="overrides", help="override a config key; repeatable")
    parser.add_argument("--only", metavar="STAGE[,STAGE]", default="",
                        help="run only these stages: " + ", ".join(stage_names))
    parser.add_argument("--limit", metavar="N", type=int, default=0,
                        help="process at most N items per stage")
    parser.add_argument("--shard", metavar="I/N", default="0/1",
                        help="process only shard I of N (split by item id; 0 <= I < N)")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the plan (stages, skip state, item counts, backends); call nothing")
    parser.add_argument("--quiet", action="store_true",
                        help="no progress bars, ours or the libraries' (summary and errors still print)")
    return parser


def input_overrides(args: argparse.Namespace, program: str) -> list[str]:
    """`--set` values with the positional input in front (so a --set of the same key wins):
    caption.py FOLDER_OR_SHARDS sets paths.images and, unless it is the config's own
    paths.images or paths.captions is set, paths.captions to the input's own folder
    (stages/io/owner.py); refine.py PROMPT_FILE sets upsample.benchmark."""
    value = getattr(args, "input", None)
    if not value:
        return list(args.overrides)
    if program == "refine":
        named = Path(value).expanduser()
        bench = str(named.absolute()) if named.exists() or named.suffix else value
        for other in args.overrides:
            key, _, given = other.partition("=")
            given = given.strip().strip('"\'')
            same_name = bench == value and given.lower() == value.lower()   # parti, Parti
            if key.strip().lower() == "upsample.benchmark" and given != value and not same_name \
                    and (given != bench and str(Path(given).expanduser().absolute()) != bench):
                raise ConfigError(f"{value!r} and --set {other.strip()!r} name two benchmarks "
                                  f"(upsample.benchmark); give one: the argument {value!r} "
                                  "alone, or --set upsample.benchmark without the argument")
        return [f"upsample.benchmark={bench}"] + list(args.overrides)
    from .config import load_config
    from .io.owner import captions_for

    images = Path(value).expanduser().absolute()
    for other in args.overrides:
        key, _, named = other.partition("=")
        if key.strip().lower() == "paths.images" and \
                Path(named.strip().strip('"\'')).expanduser().absolute() != images:
            raise ConfigError(f"{value!r} and --set {other.strip()!r} name two inputs "
                              f"(paths.images); give one: the argument {value!r} alone, or "
                              "--set paths.images without the argument")
    front = [f"paths.images={images}"]
    sets_captions = any(o.partition("=")[0].strip().lower() == "paths.captions"
                        for o in args.overrides)
    if not sets_captions:
        configured = load_config(config_path(args.config), [o for o in args.overrides if
                                 o.partition("=")[0].strip().lower() != "paths.images"])
        if configured.paths.images.resolve() != images.resolve():
            front.append(f"paths.captions={captions_for(images)}")
    return front + list(args.overrides)


def parse_only(text: str, stage_names: tuple[str, ...]) -> tuple[str, ...]:
    from .registry import PROGRAMS

    names = tuple(part.strip() for part in text.split(",") if part.strip())
    for name in names:
        if name not in stage_names:
            other = next((f"{name.lower()} is a stage of {program}.py; " for program, theirs
                          in PROGRAMS.items() if theirs != stage_names and name.lower() in theirs), "")
            raise ConfigError(f"--only {text!r}: unknown stage {name!r}; "
                              + (other or did_you_mean(name, stage_names))
                              + "stages: " + ", ".join(stage_names))
    return names


def resume_command(script: str, argv: list[str] | None) -> str:
    """The command line that reruns this one (a rerun resumes: finished items are kept).

    `argv` None means the program was started from the command line with sys.argv."""
    import os
    import shlex
    import shutil

    if argv is None:
        script, argv = sys.argv[0], sys.argv[1:]
    python = shutil.which("python")
    same = python is not None and os.path.realpath(python) == os.path.realpath(sys.executable)
    return shlex.join(["python" if same else sys.executable, script, *argv])


def main_guard(body: Callable[[], int], resume: str = "") -> int:
    """Turn our error types into one line on stderr and the documented exit code; Ctrl-C
    says what was done and the command that resumes (`resume`)."""
    try:
        return body()
    except (ConfigError, FatalError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            # e.g. FOLDER-captions/ beside an input on a read-only mount: one line, not a traceback
            print(f"error: {exc.filename or 'a file'}: {exc.strerror}; outputs go to "
                  "paths.captions (FOLDER-captions/ beside a FOLDER argument), paths.runs and "
                  "paths.cache: point them at folders you may write, e.g. --set "
                  "paths.captions=DIR", file=sys.stderr)
            return 2
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            raise
        print(f"error: cannot write {exc.filename or 'output'}: {exc.strerror}; free some space "
              "and rerun: finished items are kept", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        for line in getattr(exc, "lines", ["interrupted"]):
            print(line, file=sys.stderr)
        if resume:
            print(f"finished items are kept; to resume, run the same command:\n  {resume}",
                  file=sys.stderr)
        else:
            print("finished items are kept; rerun the same command to resume", file=sys.stderr)
        return 130


def config_path(arg: str | None) -> Path:
    from .config import default_config_path

    return Path(arg) if arg else default_config_path()
