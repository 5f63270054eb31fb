"""Error types that decide how a failure is reported and what exit code it gives."""


class ToolkitError(Exception):
    """Base class for errors the toolkit reports as one clear line."""


class ConfigError(ToolkitError):
    """A usage or configuration problem found before work starts (exit code 2).

    The message names the file, the section.key, what is wrong and what is accepted.
    """


class FatalError(ToolkitError):
    """A problem that makes every further item pointless, e.g. an unreachable server (exit 2)."""


class ItemError(ToolkitError):
    """One item failed; the batch goes on and the reason is listed in the summary."""


class CapabilityError(ToolkitError):
    """A backend cannot do what was asked (e.g. a text-only server given an image)."""


def public_url(url: str) -> str:
    """A URL as messages may show it: without user, password, query or fragment (a key put
    in a URL must not reach a terminal, a log or a summary file)."""
    import urllib.parse

    parts = urllib.parse.urlsplit(url)
    if not parts.scheme:
        return url
    netloc = parts.netloc.rpartition("@")[2]       # host[:port] as written, login dropped
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def did_you_mean(name: str, choices, prefix: str = "", suffix: str = "") -> str:
    """'did you mean X? ' for the accepted name closest to a mistyped one (difflib), else ''.

    `prefix`/`suffix` wrap the suggestion as the message shows names (`interpret.` or `[`/`]`).
    """
    import difflib

    close = difflib.get_close_matches(name.lower(), list(choices), n=1, cutoff=0.6)
    return f"did you mean {prefix}{close[0]}{suffix}? " if close else ""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during a run, with what the run had done by then (lines for the user)."""

    def __init__(self, lines: list[str]):
        super().__init__()
        self.lines = lines
