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
        return run_program("refine", args)

    return main_guard(body, resume_command('refine.py', argv))


if __name__ == "__main__":
    sys.exit(main())
