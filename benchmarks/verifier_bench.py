#!/usr/bin/env python3
"""The verifier on hand-labelled cases (benchmarks/verifier_cases.jsonl).

Each line: {"evidence": {"tags", "definitions", "vision", "vision_backend", "trigger"},
"candidate", "verdict": "pass"|"fail", "why", "split": "tune"|"held_out"}. A tag without a
definition in the case gets its entry from data/wiki.json (what the tags stage would store),
and the stage's shipped templates are the text a caption must not copy. The "held_out"
half was written before the verifier was tuned and is not used by the tests.

    python benchmarks/verifier_bench.py --split tune      # every case's verdict and reasons

Figures: verifier_false_accept_rate_SPLIT (cases labelled fail that pass, over the fail
cases) and verifier_false_reject_rate_SPLIT (labelled pass that fail, over the pass cases).
"""

from __future__ import annotations

import argparse
import json
import sys
from functools import lru_cache
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CASES = ROOT / "benchmarks" / "verifier_cases.jsonl"
sys.path.insert(0, str(ROOT))

from stages.language import Evidence, verify  # noqa: E402
from stages.templates import load_template  # noqa: E402


@lru_cache(maxsize=1)
def _shipped() -> tuple[dict, tuple[str, ...]]:
    wiki = json.loads((ROOT / "data" / "wiki.json").read_text())
    templates = tuple(load_template(ROOT / "templates" / name, "interpret").literal()
                      for name in ("interpret.txt", "shorten.txt"))
    return wiki, templates


def load_cases(path: Path = CASES) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def case_evidence(case: dict) -> Evidence:
    wiki, templates = _shipped()
    e = case["evidence"]
    tags = tuple(e.get("tags", ()))
    definitions = e.get("definitions") or {t: wiki[t] for t in tags if t in wiki}
    return Evidence(tags=tags, definitions=tuple(definitions.items()), vision=e.get("vision", ""),
                    vision_backend=e.get("vision_backend", "classifier" if e.get("vision") else ""),
                    trigger=tuple(e.get("trigger", ())), templates=templates)


def rates(cases: list[dict]) -> dict:
    """False accept and false reject rates per split."""
    out = {}
    for split in ("tune", "held_out"):
        mine = [c for c in cases if c["split"] == split]
        fails = [c for c in mine if c["verdict"] == "fail"]
        passes = [c for c in mine if c["verdict"] == "pass"]
        accepted = sum(verify(c["candidate"], case_evidence(c)).passed for c in fails)
        rejected = sum(not verify(c["candidate"], case_evidence(c)).passed for c in passes)
        out[f"verifier_cases_{split}"] = len(mine)
        out[f"verifier_false_accept_rate_{split}"] = round(accepted / len(fails), 3) if fails else 0.0
        out[f"verifier_false_reject_rate_{split}"] = round(rejected / len(passes), 3) if passes else 0.0
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", default="tune", choices=("tune", "held_out"))
    args = parser.parse_args()
    for case in load_cases():
        if case["split"] != args.split:
            continue
        v = verify(case["candidate"], case_evidence(case))
        wrong = (v.passed != (case["verdict"] == "pass"))
        print(f"{'WRONG' if wrong else 'ok   '} {case['verdict']:4} {case['candidate']!r}\n"
              f"      {'; '.join(v.reasons) or '(passed)'}  doubted={v.doubted} score={v.score:.2f}")
    print(json.dumps(rates(load_cases()) if args.split == "held_out" else
                     {k: v for k, v in rates(load_cases()).items() if k.endswith("_tune")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
