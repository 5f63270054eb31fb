"""Structured answers from models that may or may not honour a JSON schema.

Small, dependency-free: pull the first JSON value out of free text, and check it against
the subset of JSON Schema our templates use (object, array, string, boolean, integer,
number, enum, required, items, minimum/maximum).
"""

from __future__ import annotations

import json
from typing import Any

_TYPES = {
    "object": dict, "array": list, "string": str, "boolean": bool,
    "integer": int, "number": (int, float),
}


def extract_json(text: str, want: str | None = None) -> Any:
    """Return the first JSON object or array found in `text` (only objects when `want` is
    "object": the list inside an answer cut off mid-object is not the answer); ValueError
    if none parses."""
    decoder = json.JSONDecoder()
    cleaned = text.strip()
    if cleaned.startswith("```"):
        cleaned = cleaned.strip("`")
        if cleaned[:4].lower() == "json":
            cleaned = cleaned[4:]
    starts = "{" if want == "object" else "[" if want == "array" else "{["
    for i, ch in enumerate(cleaned):
        if ch in starts:
            try:
                value, _ = decoder.raw_decode(cleaned, i)
                return value
            except json.JSONDecodeError:
                continue
    if want == "object" and cleaned.lstrip().startswith("{"):
        raise ValueError("the answer is a JSON object cut off before its end (llm.max_tokens too "
                         "small, or a model that repeats itself)")
    raise ValueError("no JSON object found in the answer")


def validate(value: Any, schema: dict, where: str = "$") -> str | None:
    """First mismatch between `value` and `schema` as a short message, or None."""
    expected = schema.get("type")
    if expected:
        py = _TYPES[expected]
        bad_bool = isinstance(value, bool) and expected in ("integer", "number")
        if not isinstance(value, py) or bad_bool:
            return f"{where} should be {expected}, got {type(value).__name__}"
    if "enum" in schema and value not in schema["enum"]:
        return f"{where} should be one of {schema['enum']}"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            return f"{where} is below {schema['minimum']}"
        if "maximum" in schema and value > schema["maximum"]:
            return f"{where} is above {schema['maximum']}"
    if isinstance(value, dict):
        for key in schema.get("required", ()):
            if key not in value:
                return f"{where}.{key} is missing"
        for key, sub in schema.get("properties", {}).items():
            if key in value:
                problem = validate(value[key], sub, f"{where}.{key}")
                if problem:
                    return problem
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            problem = validate(item, schema["items"], f"{where}[{i}]")
            if problem:
                return problem
    return None


def parse_structured(text: str, schema: dict) -> Any:
    """Extract and validate; ValueError with the reason when the answer does not fit."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        value = extract_json(text, schema.get("type"))
    problem = validate(value, schema)
    if problem:
        raise ValueError(problem)
    return value


# -- how a JSON answer is asked for ---------------------------------------------------------

STRUCTURED_MODES = ("json_schema", "json_object", "prompt")


def next_mode(mode: str) -> str:
    """The mode to fall back to after `mode` was refused ("prompt" is the last)."""
    i = STRUCTURED_MODES.index(mode) if mode in STRUCTURED_MODES else 0
    return STRUCTURED_MODES[min(i + 1, len(STRUCTURED_MODES) - 1)]


def structured_request(mode: str, messages: list[dict], schema: dict,
                       name: str) -> tuple[dict | None, list[dict]]:
    """response_format and messages for one structured-output mode: the schema goes in
    `response_format` (json_schema), or into the system message (json_object, prompt)."""
    if mode == "json_schema":
        return {"type": "json_schema",
                "json_schema": {"name": name, "schema": schema, "strict": True}}, messages
    note = ("Answer with one JSON object only, no prose, matching this JSON Schema:\n"
            + json.dumps(schema, ensure_ascii=False))
    msgs = [dict(m) for m in messages]
    if msgs and msgs[0]["role"] == "system" and isinstance(msgs[0]["content"], str):
        msgs[0]["content"] = msgs[0]["content"].rstrip() + "\n\n" + note
    else:
        msgs.insert(0, {"role": "system", "content": note})
    if mode == "json_object":
        return {"type": "json_object"}, msgs
    return None, msgs
