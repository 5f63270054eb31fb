"""Who scored what, by model identity, and when a metric can judge the Socratic loop.

The loop has three parts that look at its rounds: the captioner (the vision backend that
describes each image), the judge (the LLM that reads those captions, says whether the image
matches, which stops the loop, and revises the prompt) and the selector (the scorer that
picks the best round). A metric that shares a model with any of them, or reads the captions
the loop's judge read, is not independent of the loop: the loop already stopped on, or
picked for, what that metric sees, so best-vs-first and the round curves on it lean upward
even when nothing improved. Models are compared by identity, never by label: a
vision-language selector and an LLM judge with the same model name are one scorer, and a
chat model whose name is not configured ("server default") may be any of them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

UNNAMED = "(server default)"
LOOP_ROLES = ("captioner", "judge", "selector")
ROLE_WORDS = {"captioner": "the loop's captioner", "judge": "the loop's judge",
              "selector": "the scorer that picked the best round"}


@dataclass(frozen=True)
class Scorer:
    """`model` is a canonical identity ("clip:openai/clip-vit-base-patch32", "llm:gpt-4o",
    "text:all-MiniLM-L6-v2", "classifier:efficientnet-lite0"); `captioner` is the model
    whose captions it reads ("" when it looks at pixels or at nothing)."""

    model: str
    label: str
    role: str = ""
    captioner: str = ""

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: object) -> Scorer | None:
        if not isinstance(data, dict) or not data.get("model"):
            return None
        return cls(str(data["model"]), str(data.get("label") or data["model"]), str(data.get("role", "")),
                   str(data.get("captioner", "")))


# ---------------------------------------------------------------- canonical identities

def clip_model_id(model: str, pretrained: str = "openai") -> str:
    """One name per set of CLIP weights: an open_clip name with OpenAI weights is the same
    model as its transformers hub id, and a local folder is its resolved path."""
    from ..backends.scoring import OPENAI_HUB_IDS

    if model in OPENAI_HUB_IDS and pretrained == "openai":
        return "clip:" + OPENAI_HUB_IDS[model]
    folder = Path(model).expanduser()
    if model != "tiny" and folder.is_dir():
        return "clip:" + str(folder.resolve())
    return "clip:" + model


def chat_model_id(model_id: str) -> str:
    return "llm:" + (model_id or UNNAMED)


def text_model_id(model: str) -> str:
    return "text:" + model.removeprefix("sentence-transformers/")


def captioner_id(identity: dict) -> str:
    """From a vision backend's identity(): a VLM is a chat model like any judge."""
    backend, model = str(identity.get("backend", "")), str(identity.get("model", ""))
    if backend == "openai":
        return chat_model_id(model)
    return f"{backend}:{model}"


def clip_scorer(model: str, pretrained: str = "openai", role: str = "") -> Scorer:
    return Scorer(clip_model_id(model, pretrained), f"CLIP {model}", role)


def chat_scorer(model_id: str, role: str = "", captioner: str = "", what: str = "LLM") -> Scorer:
    name = model_id or UNNAMED
    if name == UNNAMED:
        name += " (model not named in the config)"
    return Scorer(chat_model_id(model_id), f"{what} {name}", role, captioner)


def captioner_scorer(identity: dict, role: str = "captioner") -> Scorer:
    cid = captioner_id(identity)
    what = {"openai": "vision-language model", "blip": "BLIP", "classifier": "classifier"}.get(
        str(identity.get("backend")), str(identity.get("backend")))
    return Scorer(cid, f"{what} {identity.get('model') or UNNAMED}", role)


def test_model(scorer: Scorer | None) -> str:
    """What makes `scorer` a test model ('' when it is not): `tiny` CLIP (evaluate.clip_model's
    default) is randomly initialised, so its scores say nothing about the prompts."""
    if scorer is not None and scorer.model == "clip:tiny":
        return f"{scorer.label} is a randomly initialised CLIP built for tests"
    return ""


# ---------------------------------------------------------------- the independence rule

def same_model(a: str, b: str) -> bool:
    """Equal identities, or two chat models one of which is unnamed (it may be the other)."""
    if not a or not b:
        return False
    if a == b:
        return True
    return a.startswith("llm:") and b.startswith("llm:") and UNNAMED in (a[4:], b[4:])


@dataclass(frozen=True)
class Loop:
    """The models that looked at the Socratic rounds, as the traces record them. A role
    with several models (traces that disagree) lists them all; `unrecorded` counts traces
    that do not say."""

    captioner: tuple[Scorer, ...] = ()
    judge: tuple[Scorer, ...] = ()
    selector: tuple[Scorer, ...] = ()
    traces: int = 0
    unrecorded: int = 0

    def parts(self) -> Iterable[tuple[str, Scorer]]:
        for role in LOOP_ROLES:
            for scorer in getattr(self, role):
                yield role, scorer


def loop_from_traces(traces: Iterable[dict]) -> Loop:
    """Collect the recorded captioner, judge and selector of every trace with rounds."""
    found: dict[str, dict[str, Scorer]] = {role: {} for role in LOOP_ROLES}
    count = unrecorded = 0
    for trace in traces:
        if not trace.get("iterations"):
            continue
        count += 1
        loop = trace.get("loop") or {}
        parts = {"captioner": Scorer.from_dict(loop.get("captioner")),
                 "judge": Scorer.from_dict(loop.get("judge")),
                 "selector": Scorer.from_dict((trace.get("selection") or {}).get("scorer"))}
        if not all(parts.values()):
            unrecorded += 1
        for role, scorer in parts.items():
            if scorer is not None:
                found[role].setdefault(scorer.model, scorer)
    return Loop(*(tuple(found[role].values()) for role in LOOP_ROLES), traces=count,
                unrecorded=unrecorded)


def dependence(scorer: Scorer, loop: Loop) -> list[str]:
    """Why `scorer` is not independent of the loop (empty: it is)."""
    if not loop.traces:
        return []
    reasons = []
    if loop.unrecorded:
        reasons.append(f"{loop.unrecorded} Socratic trace(s) do not record which models ran the loop")
    for role, part in loop.parts():
        if same_model(scorer.model, part.model):
            reasons.append(f"same model as {ROLE_WORDS[role]} ({part.label})")
        if scorer.captioner and role == "captioner" and same_model(scorer.captioner, part.model):
            reasons.append(f"reads captions by the loop's captioner ({part.label}), the text the "
                           "loop's judge stopped on")
    return reasons
