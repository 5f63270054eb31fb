"""The backends a run can use: what each one's identity covers, and how each is built.

Every backend declares the settings that change what it answers (`keys`: they reach its
`identity()`, hence every item key of a stage that uses it) and the settings it reads
that do not (`operational`: where the server is, how many requests at once, timeouts).
It is built with a view of the configuration that answers only those, so a setting that
changes its answers cannot be missing from its identity.

Some settings are *resolved* before they enter an identity: `llm.base_url` and
`vision.base_url` through the model the server says it serves, `*.device` through the
device that is really used. They are listed as operational; the resolved value is what
the identity carries (two URLs serving the same model give the same keys).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from .config import Config, ConfigView

CHAT_KEYS = ("llm.model", "llm.backend", "llm.temperature", "llm.top_p", "llm.frequency_penalty",
             "llm.presence_penalty", "llm.max_tokens", "llm.seed", "llm.stop", "llm.structured")
CHAT_OPERATIONAL = ("llm.base_url", "llm.api_key_env", "llm.concurrency", "llm.timeout", "llm.retries",
                    "llm.backoff", "llm.local_parallel", "llm.local_threads", "llm.local_start_timeout")
IMAGE_KEYS = ("generate.backend", "generate.model", "generate.steps", "generate.guidance",
              "generate.width", "generate.height", "generate.scheduler")


@dataclass(frozen=True)
class BackendSpec:
    keys: tuple[str, ...]
    operational: tuple[str, ...] = ()

    def readable(self) -> set[str]:
        return {*self.keys, *self.operational, "paths.*"}


def _embedded(cfg: Config) -> bool:
    return cfg.llm.backend == "openai" and cfg.llm.base_url == ("local",)


def chat_spec(cfg: Config) -> BackendSpec:
    if _embedded(cfg):
        return BackendSpec(CHAT_KEYS + ("llm.local_ctx",), CHAT_OPERATIONAL)
    return BackendSpec(CHAT_KEYS, CHAT_OPERATIONAL + ("llm.local_ctx",))


def vision_spec(cfg: Config) -> BackendSpec:
    v = cfg.vision
    if v.backend == "classifier":
        return BackendSpec(("vision.backend", "vision.top_k"), ("vision.device",))
    if v.backend == "blip":
        return BackendSpec(("vision.backend", "vision.model", "vision.max_new_tokens"), ("vision.device",))
    chat = chat_spec(cfg)
    return BackendSpec(("vision.backend", "vision.model", "vision.max_side") + chat.keys,
                       ("vision.base_url",) + chat.operational)


def evaluation_vision(cfg: Config) -> Any:
    """The [vision] settings with evaluate.vision_backend / vision_model applied: the
    evaluation's captioner (the loop's own when both are empty)."""
    e = cfg.evaluate
    if not e.vision_backend and not e.vision_model:
        return cfg.vision
    backend = e.vision_backend or cfg.vision.backend
    model = e.vision_model or (cfg.vision.model if backend == cfg.vision.backend else "")
    return dataclasses.replace(cfg.vision, backend=backend, model=model)


def independent_captions(cfg: Config) -> bool:
    """True when the evaluation captions with a captioner of its own (the `eval_vision` backend)."""
    return evaluation_vision(cfg) != cfg.vision


def eval_vision_spec(cfg: Config) -> BackendSpec:
    """The evaluation's captioner: the vision spec of the effective settings, plus the two
    evaluate keys that chose them."""
    v = evaluation_vision(cfg)
    base = vision_spec(dataclasses.replace(cfg, vision=v))
    return BackendSpec(base.keys + ("evaluate.vision_backend", "evaluate.vision_model"), base.operational)


def independent_judge(cfg: Config) -> bool:
    """True when llm_judge uses a model of its own (`evaluate.judge_model`, the `judge` backend)."""
    return bool(cfg.evaluate.judge_model) and cfg.evaluate.judge_model != cfg.llm.model


def judge_spec(cfg: Config) -> BackendSpec:
    """The evaluation's own judge: the chat backend's spec (on the embedded server too, where
    the context size is part of what it answers), with the model evaluate.judge_model names."""
    chat = chat_spec(cfg)
    keys = tuple(k for k in chat.keys if k != "llm.model") + ("evaluate.judge_model",)
    return BackendSpec(keys, chat.operational)


def select_clip_spec(cfg: Config) -> BackendSpec:
    """The CLIP that picks the best Socratic round: socratic.clip_model, else evaluate.clip_model."""
    if cfg.socratic.clip_model:
        return BackendSpec(("socratic.clip_model",), ("evaluate.clip_model",))
    return BackendSpec(("socratic.clip_model", "evaluate.clip_model"))


def images_spec(cfg: Config) -> BackendSpec:
    if cfg.generate.backend == "a1111":
        return BackendSpec(IMAGE_KEYS + ("generate.sampler", "generate.refiner"),
                           ("generate.url", "generate.batch_size", "generate.timeout",
                            "generate.api_auth_env"))
    return BackendSpec(IMAGE_KEYS + ("generate.refiner", "generate.dtype"),
                       ("generate.device", "generate.batch_size"))


SPECS = {
    "chat": chat_spec,
    "vision": vision_spec,
    "images": images_spec,
    "clip": lambda cfg: BackendSpec(("evaluate.clip_model",)),
    "text": lambda cfg: BackendSpec(("evaluate.text_model",)),
    "select_clip": select_clip_spec,
    "eval_vision": eval_vision_spec,
    "judge": judge_spec,
}


def spec(name: str, cfg: Config) -> BackendSpec:
    return SPECS[name](cfg)


def build(name: str, ctx: Any, view: ConfigView) -> Any:
    """A new backend `name` that reads only `view`."""
    cache = view.paths.cache
    # Model files are identified by content; their hashes are remembered here, except in a
    # dry run, which writes nothing (it hashes them again instead).
    digests = None if ctx.options.dry_run else cache / "digests.json"
    if name == "chat":
        from .backends.chat import ChatBackend

        if view.llm.backend == "vllm":
            from .backends.vllm_local import VllmChat

            return VllmChat(view.llm, ctx.calls, ctx.stats, cache_dir=cache, digests=digests)
        return ChatBackend(view.llm, ctx.calls, ctx.stats, cache_dir=cache, digests=digests)
    if name == "vision":
        from .backends.vision import make_vision

        return make_vision(view, ctx)
    if name == "eval_vision":
        from .backends.vision import make_vision

        return make_vision(view, ctx, evaluation_vision(ctx.cfg))
    if name == "images":
        from .backends.images import A1111Backend, DiffusersBackend

        g = view.generate
        if g.backend == "a1111":
            return A1111Backend(g.url, checkpoint=g.model, steps=g.steps, guidance=g.guidance,
                                width=g.width, height=g.height, sampler=g.sampler,
                                scheduler=g.scheduler, refiner=g.refiner, timeout=g.timeout,
                                auth_env=g.api_auth_env)
        return DiffusersBackend(g.model, cache_dir=cache, device=g.device, dtype=g.dtype,
                                steps=g.steps, guidance=g.guidance, width=g.width, height=g.height,
                                scheduler=g.scheduler, refiner=g.refiner, batch_size=g.batch_size,
                                digests=digests)
    if name == "clip":
        from .backends.scoring import ClipScorer

        return ClipScorer(view.evaluate.clip_model, cache_dir=cache, digests=digests)
    if name == "select_clip":
        from .backends.scoring import ClipScorer

        model = view.socratic.clip_model or view.evaluate.clip_model
        if model == view.evaluate.clip_model:       # one set of weights, loaded once
            return ctx.backend("clip")
        return ClipScorer(model, cache_dir=cache, digests=digests)
    if name == "judge":
        from .backends.chat import ChatBackend

        return ChatBackend(view.llm, ctx.calls, ctx.stats, cache_dir=cache, digests=digests,
                           model=view.evaluate.judge_model, model_key="evaluate.judge_model")
    if name == "text":
        from .backends.scoring import TextEmbedder

        return TextEmbedder(view.evaluate.text_model)
    raise KeyError(name)
