#!/usr/bin/env python3
"""Caption a folder of tagged images: tag summaries, vision interrogation, interpretation.

Thin command line over the `stages` library; see README.md and config.ini.
"""

import sys

from stages.cli import build_parser, main_guard

STAGES = ("tags", "interrogate", "interpret")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser("caption.py", __doc__.splitlines()[0], STAGES)
    parser.add_argument("--export", nargs=2, metavar=("FORMAT", "PATH"), default=None,
                        help="after captioning, export the folder: FORMAT is 'hf' "
                             "(a datasets folder with save_to_disk + metadata.jsonl)")
    args = parser.parse_args(argv)

    def body() -> int:
        from stages.app import run_program

        return run_program("caption", args)

    return main_guard(body)


if __name__ == "__main__":
    sys.exit(main())
