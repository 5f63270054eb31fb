"""Caption language: what the tags say, and whether a caption says only that.

Tag hygiene and roles (`tagging`, `tagroles`), word handling (`words`, `text`), the
deterministic composer (`compose`), the verifier (`verify`) and corpus quality figures
(`quality`). Nothing here imports a stage module.

One entry point per job: `verify(caption, Evidence(...))` says whether a caption says only
what its evidence says (a `Verdict`: passed, reasons, the doubted words, a score), and
`best(verdicts)` picks the one to write.
"""

from .verify import Evidence, Verdict, best, verify

__all__ = ["Evidence", "Verdict", "best", "verify"]
