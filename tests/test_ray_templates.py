"""Hole found in review (issue 19.4): Ray actors got the driver's Config but read the
prompt templates from disk when they start (a restarted actor: any time in the stage),
while the driver's keys hold the template text it read. An edited template then put new
text under the old key. The actor runs in this process, as Ray Data calls it."""

from __future__ import annotations

import asyncio
import shutil

import pytest
from fakes import FakeOpenAI
from test_ray import ROOT, cli, make_folder, stage_for

pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'ray[data]'")


def test_an_actor_started_after_a_template_edit_uses_the_drivers_template(tmp_path):
    from stages.executors.ray import StageWorker, worker_config

    make_folder(tmp_path / "images", 2)
    template = tmp_path / "interpret.txt"
    shutil.copy(ROOT / "templates" / "interpret.txt", template)
    with FakeOpenAI(lambda request: "A lighthouse keeper holds a lantern.") as server:
        sets = [a for a in cli(tmp_path, server.url)[3:] if a != "--set"]
        sets.append(f"interpret.template={template}")
        driver = stage_for(tmp_path, "interpret", *sets)
        driver.prepare()
        asyncio.run(driver.start())
        read = driver.template.literal()
        template.write_text(template.read_text() + "\nWrite it in French.\n")   # mid-run edit
        worker = StageWorker(worker_config(driver.ctx), "caption", "interpret")
        try:
            assert worker.fatal == ""
            assert worker.stage.template.literal() == read
        finally:
            worker.close()
