"""Is the Hugging Face hub usable right now? Asked before anything that would otherwise retry
the hub for minutes (diffusers, datasets) so an offline machine fails in seconds."""

from __future__ import annotations

import os
import warnings
from contextlib import contextmanager

TRUE = {"1", "true", "yes", "on"}


def hub_offline() -> bool:
    """True when the user has told huggingface_hub / datasets to stay offline."""
    return any(os.environ.get(name, "").strip().lower() in TRUE
               for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"))


def hub_endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "").strip().rstrip("/") or "https://huggingface.co"


def hub_reachable(timeout: float = 5.0) -> bool:
    """One short request to the hub endpoint; any HTTP answer counts as reachable."""
    import requests

    try:
        requests.head(hub_endpoint(), timeout=timeout, allow_redirects=False)
    except requests.RequestException:
        return False
    return True


@contextmanager
def quiet_loading():
    """Hide diffusers' and transformers' per-component loading bars (the runner has its own)."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    states = [(lib, lib.is_progress_bar_enabled()) for lib in (diffusers_logging, transformers_logging)]
    for lib, _ in states:
        lib.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*local_dir_use_symlinks.*")
            yield
    finally:
        for lib, enabled in states:
            if enabled:
                lib.enable_progress_bar()
