"""vllm.sampling_params: SamplingParams with structured outputs, in both API generations.

vLLM >= 0.11: `SamplingParams(structured_outputs=StructuredOutputsParams(...))`.
vLLM <= 0.10: `SamplingParams(guided_decoding=GuidedDecodingParams(...))`; a test makes the
stand-in look like that release by removing `StructuredOutputsParams` from this module and
binding `vllm.SamplingParams` to `LegacySamplingParams`.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

_CONSTRAINTS = ("json", "regex", "choice", "grammar", "json_object", "structural_tag")


def _check_constraint(params, exactly_one: bool) -> None:
    if params.json is not None and not isinstance(params.json, (str, dict)):
        raise TypeError(f"json must be a schema (dict or str), got {type(params.json).__name__}")
    if params.json_object is not None and not isinstance(params.json_object, bool):
        raise TypeError("json_object must be a bool")
    count = sum(getattr(params, name) is not None for name in _CONSTRAINTS)
    if count > 1:
        raise ValueError(f"You can only use one kind of structured outputs constraint: {params}")
    if exactly_one and count < 1:
        raise ValueError(f"You must use one kind of structured outputs constraint: {params}")


@dataclass
class StructuredOutputsParams:
    """vLLM >= 0.11."""
    json: str | dict | None = None
    regex: str | None = None
    choice: list[str] | None = None
    grammar: str | None = None
    json_object: bool | None = None
    disable_any_whitespace: bool = False
    disable_additional_properties: bool = False
    whitespace_pattern: str | None = None
    structural_tag: str | None = None

    def __post_init__(self):
        _check_constraint(self, exactly_one=True)


@dataclass
class GuidedDecodingParams:
    """vLLM <= 0.10."""
    json: str | dict | None = None
    regex: str | None = None
    choice: list[str] | None = None
    grammar: str | None = None
    json_object: bool | None = None
    backend: str | None = None
    backend_was_auto: bool = False
    disable_fallback: bool = False
    disable_any_whitespace: bool = False
    disable_additional_properties: bool = False
    whitespace_pattern: str | None = None
    structural_tag: str | None = None

    def __post_init__(self):
        _check_constraint(self, exactly_one=False)


@dataclass(kw_only=True)
class _Sampling:
    n: int = 1
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    seed: int | None = None
    stop: str | list[str] | None = None
    stop_token_ids: list[int] | None = None
    ignore_eos: bool = False
    max_tokens: int | None = 16
    min_tokens: int = 0
    logprobs: int | None = None

    def __post_init__(self):
        """The checks of vLLM's `_verify_args` for the fields above."""
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) and f.type not in ("bool",):
                raise TypeError(f"{f.name} must not be a bool")
        if not -2.0 <= self.presence_penalty <= 2.0:
            raise ValueError(f"presence_penalty must be in [-2, 2], got {self.presence_penalty}")
        if not -2.0 <= self.frequency_penalty <= 2.0:
            raise ValueError(f"frequency_penalty must be in [-2, 2], got {self.frequency_penalty}")
        if self.temperature < 0.0:
            raise ValueError(f"temperature must be non-negative, got {self.temperature}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.max_tokens is not None and (not isinstance(self.max_tokens, int) or self.max_tokens < 1):
            raise ValueError(f"max_tokens must be at least 1, got {self.max_tokens}")
        if self.seed is not None and not isinstance(self.seed, int):
            raise TypeError(f"seed must be an int, got {self.seed!r}")
        if isinstance(self.stop, str):
            self.stop = [self.stop]
        if self.stop is not None and not all(isinstance(s, str) and s for s in self.stop):
            raise ValueError(f"stop must be non-empty strings, got {self.stop!r}")


@dataclass(kw_only=True)
class SamplingParams(_Sampling):
    """vLLM >= 0.11."""
    structured_outputs: StructuredOutputsParams | None = None

    def __post_init__(self):
        super().__post_init__()
        if self.structured_outputs is not None and not isinstance(self.structured_outputs,
                                                                  StructuredOutputsParams):
            raise TypeError("structured_outputs must be StructuredOutputsParams")


@dataclass(kw_only=True)
class LegacySamplingParams(_Sampling):
    """vLLM <= 0.10 (named SamplingParams there)."""
    guided_decoding: GuidedDecodingParams | None = None

    def __post_init__(self):
        super().__post_init__()
        if self.guided_decoding is not None and not isinstance(self.guided_decoding, GuidedDecodingParams):
            raise TypeError("guided_decoding must be GuidedDecodingParams")


def constraint(params) -> tuple[str, object] | None:
    """The constraint a SamplingParams of either generation carries: ("json", schema),
    ("json_object", True), another (kind, value), or None."""
    guide = getattr(params, "structured_outputs", None) or getattr(params, "guided_decoding", None)
    if guide is None:
        return None
    for name in _CONSTRAINTS:
        if getattr(guide, name) is not None:
            return name, getattr(guide, name)
    return None
