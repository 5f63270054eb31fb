"""Prompt templates: plain text files with `$placeholders` and chat-role headers.

A template is a sequence of messages. A line holding only `[system]`, `[user]` or
`[assistant]` starts a new message with that role, so few-shot examples are real chat
turns; text before the first header is a user message. `$name` / `${name}` are filled
with `string.Template`; a placeholder the stage does not supply is a configuration error
that names the template file. Lines starting with `#!` are comments for template authors.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigError
from .language.words import BREAK
from .store import sha256_text

_HEADER = re.compile(r"^\[(system|user|assistant)\]\s*$")


@dataclass(frozen=True)
class PromptTemplate:
    path: Path
    text: str

    @property
    def hash(self) -> str:
        """Changes when the template's words change: it is part of every cache key."""
        return sha256_text(self.text)[:16]

    @property
    def placeholders(self) -> set[str]:
        found = set()
        body = "\n".join(m["content"] for m in _messages(self.text))
        for match in string.Template.pattern.finditer(body):
            name = match.group("named") or match.group("braced")
            if name:
                found.add(name)
        return found

    def render(self, **values: str) -> list[dict]:
        """Chat messages with every placeholder filled."""
        # Split first, then fill: values (model text, prompts) can never add comment lines
        # or role headers, and comments may mention placeholders freely.
        out = []
        for message in _messages(self.text):
            try:
                content = string.Template(message["content"]).substitute(values)
            except KeyError as exc:
                raise ConfigError(f"{self.path}: placeholder ${exc.args[0]} is not known here; "
                                  f"available: {', '.join('$' + k for k in sorted(values))}") from None
            except ValueError as exc:
                raise ConfigError(f"{self.path}: {exc}; write a literal dollar sign as $$") from None
            out.append({"role": message["role"], "content": content})
        return out

    def literal(self) -> str:
        """The template's own words (instructions and examples) without placeholders or
        comments: what a model's answer must not copy. Messages and the places of
        placeholders are separated by BREAK, so no run of words spans them (words.runs)."""
        body = f"\n{BREAK}\n".join(m["content"] for m in _messages(self.text))
        return string.Template.pattern.sub(BREAK, body)

    def check(self, allowed: set[str]) -> None:
        unknown = self.placeholders - allowed
        if unknown:
            raise ConfigError(f"{self.path}: unknown placeholder ${sorted(unknown)[0]}; "
                              f"available: {', '.join('$' + k for k in sorted(allowed))}")


def _messages(text: str) -> list[dict]:
    messages: list[dict] = []
    role, lines = "user", []

    def flush() -> None:
        body = "\n".join(lines).strip()
        if body:
            messages.append({"role": role, "content": body})

    for line in text.splitlines():
        if line.startswith("#!"):
            continue
        header = _HEADER.match(line)
        if header:
            flush()
            role, lines = header.group(1), []
        else:
            lines.append(line)
    flush()
    return messages


def load_template(path: Path, key: str, allowed: set[str] | None = None) -> PromptTemplate:
    """Read a template; `key` is the config key that named it, for the error message."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{key} = {path}: template file not found; point {key} at an "
                          "existing file (the defaults live in templates/)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{key} = {path}: cannot read template: {exc}") from None
    template = PromptTemplate(Path(path), text)
    if allowed is not None:
        template.check(allowed)
    return template
