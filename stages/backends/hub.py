"""Is the Hugging Face hub usable right now? Asked before anything that would otherwise retry
the hub for minutes (diffusers, datasets) so an offline machine fails in seconds."""

from __future__ import annotations

import os
import warnings
from contextlib import contextmanager
from pathlib import Path

from ..errors import FatalError

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


def first_line(exc: BaseException, limit: int = 200) -> str:
    """An exception as one short line, for error messages that must stay one line."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[:limit - 3] + "..."


# What loaders raise for "this is not a saved model" (missing or broken files, wrong config).
LOAD_ERRORS = (OSError, ValueError, KeyError)


def load_pretrained(loader, source: str, *, key: str, what: str, setting: str | None = None,
                    alternative: str = ""):
    """`loader(source)` from a local folder, else from the local Hugging Face cache, else from
    the hub when it answers; otherwise one FatalError line that names `key` and the fix.

    `loader(src, **kw)` is any `from_pretrained`-like callable (it gets `local_files_only`).
    `setting` is the value as the user wrote it when it differs from `source` (e.g. `tiny`);
    `alternative` is appended to the fix (", or use tiny").
    """
    label = f"{key} = {setting} ({source})" if setting and setting != source else f"{key} = {source}"
    folder = Path(source).expanduser()
    if folder.is_dir():
        try:
            return loader(str(folder))
        except LOAD_ERRORS as exc:
            raise FatalError(f"{label}: this folder does not hold a saved {what}: "
                             f"{first_line(exc)}") from None
    try:
        return loader(source, local_files_only=True)
    except LOAD_ERRORS:
        pass
    _hub_or_fail(label, source, key=key, what=what, alternative=alternative)
    try:
        return loader(source)
    except LOAD_ERRORS as exc:
        raise FatalError(f"{label}: cannot load the {what} from the hub: {first_line(exc)}; check the "
                         "name, or log in with `hf auth login` for gated models") from None




def _hub_or_fail(label: str, source: str, *, key: str, what: str, alternative: str) -> None:
    """Nothing when the hub can be asked for `source`; else the one line that says why not."""
    if hub_offline() or not hub_reachable():
        why = ", the hub is switched off (offline: HF_HUB_OFFLINE is set)" if hub_offline() else ""
        raise FatalError(f"{label}: the {what} is not in the local Hugging Face cache{why} and the "
                         f"model hub cannot be reached; download it on a connected machine (`hf download "
                         f"{source}`) and copy the cache over, or set {key} to a local folder{alternative}")


def check_obtainable(source: str, *, key: str, what: str, marker: str, alternative: str = "") -> None:
    """The check `load_pretrained` makes before it loads, without loading: a local folder, a
    hub id in the local Hugging Face cache (its `marker` file is there), or a hub that
    answers; else the same FatalError. A dry run calls it, so it predicts what the run does."""
    if Path(source).expanduser().is_dir():
        return
    from huggingface_hub import try_to_load_from_cache

    try:
        cached = try_to_load_from_cache(source, marker)
    except ValueError:                  # not a valid repo id: the loader says why
        return
    if isinstance(cached, str):
        return
    _hub_or_fail(f"{key} = {source}", source, key=key, what=what, alternative=alternative)


def folder_fingerprint(folder: Path, memo: Path | None = None) -> str:
    """A saved model folder's identity without loading it: the content of every file in it
    (configs, tokenizer, weights; hidden files left out), so a model fine-tuned in place,
    with the same names and sizes, is a new model. Hashes are remembered in `memo` by path,
    size, mtime, inode and ctime, so a large model is read once."""
    from ..store import content_digest, hash_value

    files = sorted(p for p in folder.rglob("*") if p.is_file()
                   and not any(part.startswith(".") for part in p.relative_to(folder).parts))
    return hash_value([(p.relative_to(folder).as_posix(), content_digest(p, memo)) for p in files])
