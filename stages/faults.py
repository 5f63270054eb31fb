"""Fault-injection points for crash tests: the process kills itself at a named point.

`TAGCAP_KILL_AT=interpret.between_writes` makes the process send itself SIGKILL when it
reaches that point, so a test can prove what a crash there leaves behind. Unset (always,
outside tests) it costs one dictionary lookup.
"""

from __future__ import annotations

import os
import signal


def point(name: str) -> None:
    if os.environ.get("TAGCAP_KILL_AT") == name:
        os.kill(os.getpid(), signal.SIGKILL)
