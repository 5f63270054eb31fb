"""How a stage's pending items run: in this process (`local`) or across a Ray cluster (`ray`).

Both take a prepared stage and fill its `StageReport`; the runner is handed one and never
chooses. An executor must record each item's failure with its reason, let a `FatalError`
stop the run, and reuse finished items exactly as the other executor would (same keys).
"""

from __future__ import annotations

from typing import Protocol

from ..stage import RunOptions, Stage, StageReport


class Executor(Protocol):
    async def run(self, stage: Stage, options: RunOptions, report: StageReport) -> None:
        """Process the stage's items that are not done yet; count reuses and failures."""
