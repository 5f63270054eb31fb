"""Which stages exist and which program runs which, in order (data only: no imports).

A stage is named here as "module:Class" and imported only when a program runs it, so
`--help` and configuration errors never pay for torch or diffusers.
"""

from __future__ import annotations

import importlib

STAGE_CLASSES = {
    "tags": "stages.tags:TagsStage",
    "interrogate": "stages.interrogate:InterrogateStage",
    "interpret": "stages.interpret:InterpretStage",
    "upsample": "stages.upsample:UpsampleStage",
    "generate": "stages.generate:GenerateStage",
    "socratic": "stages.socratic:SocraticStage",
    "evaluate": "stages.evaluate:EvaluateStage",
}
PROGRAMS = {
    "caption": ("tags", "interrogate", "interpret"),
    "refine": ("upsample", "generate", "socratic", "evaluate"),
}


def stage_class(name: str) -> type:
    module, cls = STAGE_CLASSES[name].split(":")
    return getattr(importlib.import_module(module), cls)
