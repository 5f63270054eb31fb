"""A run whose every item is reused pays only for what it uses: the model listing that fixes
the keys is asked with the standard library, so neither the openai client (about a second
and 30 MB to import) nor pyarrow is loaded; the second run makes no call."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conftest import llm_overrides

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("openai", "pyarrow", "datasets", "torch", "transformers", "onnxruntime", "pandas")

PROBE = """
import json, runpy, sys
sys.path.insert(0, {root!r})
sys.argv = {argv!r}
try:
    runpy.run_path(sys.argv[0], run_name="__main__")
except SystemExit as exc:
    code = exc.code
print(json.dumps({{"code": code, "heavy": sorted(m for m in {heavy!r} if m in sys.modules)}}))
"""


def run_probed(project: Path, args: list[str]) -> dict:
    argv = [str(ROOT / "caption.py"), *args]
    result = subprocess.run([sys.executable, "-c", PROBE.format(root=str(ROOT), argv=argv, heavy=HEAVY)],
                            cwd=project, capture_output=True, text=True, timeout=300)
    assert "Traceback" not in result.stderr, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_a_run_with_every_stage_reused_loads_no_heavy_library(project, fake_llm):
    args = ["--config", str(project / "config.ini"), "--quiet"]
    for item in llm_overrides(fake_llm.url, **{"vision.backend": "openai"}):
        args += ["--set", item]
    first = run_probed(project, args)
    assert first["code"] == 0 and "openai" in first["heavy"]       # calls were made
    asked = len(fake_llm.chat_requests)
    second = run_probed(project, args)
    assert second["code"] == 0
    assert len(fake_llm.chat_requests) == asked
    summary = json.loads((project / "cache" / "summary-caption.json").read_text())
    assert all(s["ok"] == 0 and s["reused"] > 0 for s in summary["stages"]), summary["stages"]
    assert second["heavy"] == []
