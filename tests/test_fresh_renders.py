"""Fresh renders of the chosen and the first Socratic prompt ("best vs first") through
refine.py: one deleted since the run is made again on the next run, not left for the
evaluation to fail on at every run."""

from __future__ import annotations

import pytest
from fakes import FakeOpenAI
from PIL import Image
from test_refine_e2e import write_drawbench
from test_refine_loop import PixelRater, run, traces

from stages.generate import png_key

SETS = ("upsample.candidates=1", "vision.backend=openai", "socratic.select=judge",
        "evaluate.metrics=clipscore")


@pytest.mark.slow
def test_a_deleted_fresh_render_is_made_again_and_scored(project):
    write_drawbench(project / "db.csv")
    with FakeOpenAI(PixelRater(accept=False)) as server:
        assert run(project, server, *SETS) == 0
    run_dir = project / "runs" / "default"
    moved = [t for t in traces(project) if t["best"] != 0]
    assert moved, "the selector picked round 0 everywhere: choose other seeds for this test"
    lost = run_dir / moved[0]["fresh"]["best"][0]
    before = png_key(lost)
    lost.unlink()
    with FakeOpenAI(PixelRater(accept=False)) as server:
        assert run(project, server, *SETS) == 0          # was 1: evaluate failed on the missing image
    assert png_key(lost) == before           # made again from the same prompt, seed and model
    assert Image.open(lost).text["seed"] == str(moved[0]["fresh"]["seeds"][0])
    metrics = (run_dir / "metrics.csv").read_text(encoding="utf-8")
    assert f"{moved[0]['id']},{moved[0]['category']},best_fresh,{moved[0]['fresh']['seeds'][0]}," in metrics
