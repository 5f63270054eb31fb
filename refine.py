#!/usr/bin/env python3
"""Upsample a prompt benchmark, regenerate images, refine prompts Socratically, evaluate.

Thin command line over the `stages` library; see README.md and config.ini.
"""

import sys

from stages.cli import build_parser, main_guard, resume_command

STAGES = ("upsample", "generate", "socratic", "evaluate")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser("refine.py", __doc__.splitlines()[0], STAGES)
    args = parser.parse_args(argv)

    def body() -> int:
        from stages.app import run_program

        return run_program("refine", args)

    return main_guard(body, resume_command('refine.py', argv))


if __name__ == "__main__":
    sys.exit(main())
