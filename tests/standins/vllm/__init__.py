"""Stand-in for the slice of vLLM's offline API that stages/backends/vllm_local.py calls.

Only tests/test_vllm.py puts it on sys.path (for one test at a time), so CI checks the
backend's calls without a GPU. Signatures copy vLLM's (vllm/entrypoints/llm.py and
vllm/sampling_params.py, 0.10 and 0.11+) for the arguments listed; nothing is swallowed by
**kwargs, so a misspelt or unknown keyword raises TypeError as it would against vLLM.

Every engine built is appended to `ENGINES`, and each engine records its calls in `calls`.
Answers come from `script(conversation, sampling_params) -> str`, which the test sets; as
in vLLM, every request of a call is checked (answered) before any output is returned, so
one refused request fails the whole call.
"""

from __future__ import annotations

from .outputs import CompletionOutput, RequestOutput
from .sampling_params import SamplingParams

__all__ = ["LLM", "SamplingParams", "RequestOutput", "CompletionOutput"]
__version__ = "0.0-standin"

ENGINES: list[LLM] = []
script = None      # set by the test: (conversation: list[dict], params: SamplingParams) -> str

_ROLES = ("system", "user", "assistant")


class LLM:
    def __init__(self, model: str, *, tokenizer: str | None = None, tokenizer_mode: str = "auto",
                 trust_remote_code: bool = False, tensor_parallel_size: int = 1, dtype: str = "auto",
                 quantization: str | None = None, revision: str | None = None,
                 seed: int | None = None, gpu_memory_utilization: float = 0.9,
                 max_model_len: int | None = None, enforce_eager: bool = False):
        if not isinstance(model, str) or not model:
            raise TypeError(f"model must be a non-empty str, got {model!r}")
        if seed is not None and not isinstance(seed, int):
            raise TypeError(f"seed must be an int or None, got {seed!r}")
        self.model = model
        self.seed = seed
        self.calls: list[tuple[str, list, list[SamplingParams]]] = []
        self._next_id = 0
        ENGINES.append(self)

    def chat(self, messages, sampling_params=None, use_tqdm: bool = True, lora_request=None,
             chat_template: str | None = None, chat_template_content_format: str = "auto",
             add_generation_prompt: bool = True, continue_final_message: bool = False,
             tools=None, chat_template_kwargs=None, mm_processor_kwargs=None) -> list[RequestOutput]:
        """One conversation (a list of message dicts) or a list of conversations."""
        if not isinstance(messages, list) or not messages:
            raise TypeError("messages must be a conversation or a list of conversations")
        conversations = messages if isinstance(messages[0], list) else [messages]
        for conversation in conversations:
            for message in conversation:
                _check_message(message)
        params = _per_prompt(sampling_params, len(conversations))
        self.calls.append(("chat", conversations, params))
        return self._outputs([str(c) for c in conversations], conversations, params)

    def generate(self, prompts, sampling_params=None, *, use_tqdm: bool = True,
                 lora_request=None) -> list[RequestOutput]:
        """One prompt string or a list of them."""
        batch = [prompts] if isinstance(prompts, str) else list(prompts)
        if not batch or not all(isinstance(p, str) for p in batch):
            raise TypeError("prompts must be a str or a list of str")
        params = _per_prompt(sampling_params, len(batch))
        self.calls.append(("generate", batch, params))
        return self._outputs(batch, [[{"role": "user", "content": p}] for p in batch], params)

    def _outputs(self, prompts, conversations, params) -> list[RequestOutput]:
        if script is None:
            raise RuntimeError("the test did not set vllm.script")
        texts = [script(c, p) for c, p in zip(conversations, params, strict=True)]
        outs = []
        for prompt, text in zip(prompts, texts, strict=True):
            outs.append(RequestOutput(
                request_id=str(self._next_id), prompt=prompt, prompt_token_ids=[1, 2, 3],
                prompt_logprobs=None, finished=True,
                outputs=[CompletionOutput(index=0, text=text, token_ids=list(range(len(text.split()))),
                                          cumulative_logprob=None, logprobs=None, finish_reason="stop")]))
            self._next_id += 1
        return outs


def _per_prompt(sampling_params, n: int) -> list[SamplingParams]:
    if sampling_params is None:
        return [SamplingParams()] * n
    if isinstance(sampling_params, list):
        if len(sampling_params) != n:
            raise ValueError(f"{len(sampling_params)} sampling params for {n} prompts")
        items = sampling_params
    else:
        items = [sampling_params] * n
    from . import sampling_params as sp

    for item in items:
        if not isinstance(item, (sp.SamplingParams, sp.LegacySamplingParams)):
            raise TypeError(f"sampling_params must be SamplingParams, got {type(item).__name__}")
    return items


def _check_message(message) -> None:
    if not isinstance(message, dict) or set(message) - {"role", "content", "name"}:
        raise TypeError(f"a message is a dict with role and content, got {message!r}")
    if message.get("role") not in _ROLES:
        raise ValueError(f"unknown role {message.get('role')!r}")
    content = message.get("content")
    if isinstance(content, str):
        return
    if not isinstance(content, list):
        raise TypeError(f"message content must be str or a list of parts, got {content!r}")
    for part in content:
        kind = part.get("type")
        if kind == "text" and isinstance(part.get("text"), str):
            continue
        if kind == "image_url" and isinstance(part.get("image_url", {}).get("url"), str):
            continue
        raise ValueError(f"unsupported content part {part!r}")
