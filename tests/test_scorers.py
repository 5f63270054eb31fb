"""The independence rule: which metrics can judge the Socratic loop, over every combination of
selector, judge, captioner and evaluation scorers, by model identity rather than label."""

from __future__ import annotations

import itertools

import pytest

from stages.report.scorers import (
    Loop,
    Scorer,
    captioner_scorer,
    chat_scorer,
    clip_model_id,
    clip_scorer,
    dependence,
    loop_from_traces,
    same_model,
)

CAPTIONERS = {
    "classifier": captioner_scorer({"backend": "classifier", "model": "efficientnet-lite0"}),
    "vlm": captioner_scorer({"backend": "openai", "model": "qwen-vl"}),
    "blip": captioner_scorer({"backend": "blip", "model": "Salesforce/blip"}),
}
JUDGES = {"named": chat_scorer("qwen-vl", "judge"), "unnamed": chat_scorer("", "judge"),
          "other": chat_scorer("llama", "judge")}
SELECTORS = {"clip": clip_scorer("ViT-B-32", role="selector"),
             "vlm judge": chat_scorer("qwen-vl", "selector", what="vision-language judge")}


def trace(captioner: Scorer, judge: Scorer, selector: Scorer) -> dict:
    return {"iterations": [{}], "loop": {"captioner": captioner.as_dict(), "judge": judge.as_dict()},
            "selection": {"scorer": selector.as_dict()}}


def metric_scorers(captioner: str) -> dict[str, Scorer]:
    """Evaluation scorers: the same CLIP as a clip selector (by another name), another CLIP,
    captions from the loop's captioner or from another one, judges of every kind."""
    cap = CAPTIONERS[captioner].model
    other_cap = "blip:another-blip"
    return {
        "clip same weights": clip_scorer("openai/clip-vit-base-patch32"),
        "clip other": clip_scorer("ViT-L-14"),
        "text on loop captions": Scorer("text:minilm", "text", captioner=cap),
        "text on fresh captions": Scorer("text:minilm", "text", captioner=other_cap),
        "llm qwen-vl on fresh captions": chat_scorer("qwen-vl", captioner=other_cap),
        "llm llama on fresh captions": chat_scorer("llama", captioner=other_cap),
        "llm mistral on fresh captions": chat_scorer("mistral", captioner=other_cap),
        "llm unnamed on fresh captions": chat_scorer("", captioner=other_cap),
    }


def expected(metric: str, captioner: str, judge: str, selector: str) -> bool:
    """Hand-written: True when the metric shares a model or the loop's captions."""
    loop_chat = {"qwen-vl"} if captioner == "vlm" else set()
    loop_chat |= {"named": {"qwen-vl"}, "unnamed": {""}, "other": {"llama"}}[judge]
    if selector == "vlm judge":
        loop_chat.add("qwen-vl")
    if metric == "clip same weights":
        return selector == "clip"
    if metric == "clip other":
        return False
    if metric == "text on loop captions":
        return True
    if metric == "text on fresh captions":
        return False
    model = metric.split()[1]
    name = "" if model == "unnamed" else model
    return name in loop_chat or (bool(loop_chat) and ("" in loop_chat or name == ""))


COMBOS = list(itertools.product(CAPTIONERS, JUDGES, SELECTORS))


@pytest.mark.parametrize("captioner, judge, selector", COMBOS)
def test_every_metric_against_every_loop(captioner, judge, selector):
    loop = loop_from_traces([trace(CAPTIONERS[captioner], JUDGES[judge], SELECTORS[selector])])
    for metric, scorer in metric_scorers(captioner).items():
        reasons = dependence(scorer, loop)
        assert bool(reasons) == expected(metric, captioner, judge, selector), (metric, reasons)


def test_the_same_model_under_two_labels_is_one_scorer():
    selector = chat_scorer("gpt-4o", "selector", what="vision-language judge")
    metric = chat_scorer("gpt-4o", what="LLM judge")
    assert selector.label != metric.label and selector.model == metric.model
    loop = loop_from_traces([trace(CAPTIONERS["classifier"], JUDGES["other"], selector)])
    assert dependence(metric, loop) == ["same model as the scorer that picked the best round "
                                        "(vision-language judge gpt-4o)"]
    assert clip_model_id("ViT-B-32") == clip_model_id("openai/clip-vit-base-patch32")
    assert clip_model_id("ViT-B-32", "laion2b_s34b_b79k") != clip_model_id("ViT-B-32")


def test_an_unnamed_chat_model_may_be_any_chat_model_but_not_a_clip():
    assert same_model("llm:(server default)", "llm:gpt-4o")
    assert not same_model("llm:(server default)", "clip:tiny")
    assert not same_model("llm:a", "llm:b") and not same_model("", "")
    assert "not named" in chat_scorer("").label


def test_traces_without_identities_make_every_metric_dependent():
    old = {"iterations": [{}], "selection": {"by": "clip"}}
    loop = loop_from_traces([old, trace(CAPTIONERS["blip"], JUDGES["other"], SELECTORS["clip"])])
    assert loop.traces == 2 and loop.unrecorded == 1
    reasons = dependence(clip_scorer("ViT-L-14"), loop)
    assert reasons and "do not record" in reasons[0]


def test_no_loop_no_dependence_and_disagreeing_traces_count_every_model():
    assert dependence(clip_scorer("tiny"), Loop()) == []
    assert loop_from_traces([{"iterations": []}]).traces == 0
    tiny = clip_scorer("tiny", role="selector")
    loop = loop_from_traces([trace(CAPTIONERS["blip"], JUDGES["other"], SELECTORS["clip"]),
                             trace(CAPTIONERS["blip"], JUDGES["other"], tiny)])
    assert len(loop.selector) == 2
    assert dependence(clip_scorer("tiny"), loop) and dependence(clip_scorer("ViT-B-32"), loop)
