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
