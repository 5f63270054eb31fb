#!/usr/bin/env python3
"""Upsample a prompt benchmark, regenerate images, refine prompts Socratically, evaluate.

Thin command line over the `stages` library; see README.md and config.ini.
"""

import sys

from stages.cli import build_parser, main_guard, resume_command

STAGES = ("upsample", "generate", "socratic", "evaluate")

INPUT_HELP = ("a prompt file (.txt one prompt a line, .csv, .tsv or .jsonl) or a benchmark name "
              "(parti, drawbench); sets upsample.benchmark. Outputs go to paths.runs/run.name")
FIRST_STEPS = """first steps:
  python refine.py                          upsample, generate, refine and evaluate the
                                            config's benchmark into runs/default/
  python refine.py my-prompts.txt           the same for your prompts (one a line)
  python refine.py my-prompts.txt --only upsample   only rewrite the prompts (upsampled.jsonl)"""


def main(argv: list[str] | None = None) -> int:
    parser = build_parser("refine.py", __doc__.splitlines()[0] + "\n\n" + FIRST_STEPS, STAGES,
                          positional=("PROMPT_FILE", INPUT_HELP))
    args = parser.parse_args(argv)

    def body() -> int:
        from stages.app import run_program
        from stages.cli import input_overrides

        args.overrides = input_overrides(args, "refine")
        if args.input:
            check_prompt_file(args)
        return run_program("refine", args)

    return main_guard(body, resume_command('refine.py', argv))


def check_prompt_file(args) -> None:
    """PROMPT_FILE with the upsample stage left out of this run (--only, upsample.skip): the
    other stages read the run's prompts.jsonl, not the file, so a run that holds the prompts
    of another file is refused (exit 2) rather than carried on with them in silence."""
    from stages.benchmarks import load_benchmark
    from stages.cli import config_path, parse_only
    from stages.config import load_config
    from stages.errors import ConfigError
    from stages.io.runfiles import prompts

    cfg = load_config(config_path(args.config), args.overrides)
    only = parse_only(args.only, STAGES)
    if only and "upsample" not in only:
        flag = f"--only {args.only}"
    elif cfg.upsample.skip:
        flag = "upsample.skip = true"
    else:
        return                              # the upsample stage of this run reads the file
    run_dir = cfg.paths.runs / cfg.run.name
    held = {row.get("id") for row in prompts(run_dir)}
    if not held:
        return                              # no prompts.jsonl: the stages say so themselves
    u = cfg.upsample
    named = {p.id for p in load_benchmark(u.benchmark, path=u.benchmark_path, categories=u.categories,
                                          base_dir=cfg.source.resolve().parent)}
    if held - named:
        raise ConfigError(f"{args.input}: {flag} leaves out the upsample stage, which reads it, "
                          f"and {run_dir / 'prompts.jsonl'} holds other prompts (of an earlier "
                          "upsample run); run the upsample stage on it first, or leave the "
                          "argument out to go on with the run's prompts")


if __name__ == "__main__":
    sys.exit(main())
