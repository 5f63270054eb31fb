"""The real CLIP BPE tokenizer, built offline from the vocabulary that open_clip ships.

The 77-token limit of CLIP text encoders (SD, SDXL, CLIPScore) is measured with the same
byte-level BPE as OpenAI's CLIP. The merges file inside the open_clip_torch package (read
as a file; importing open_clip is not needed) is turned once into vocab.json + merges.txt
under the cache and loaded with transformers' CLIPTokenizer.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
from functools import lru_cache
from pathlib import Path

from ..errors import FatalError
from ..store import atomic_write_text

VOCAB_SIZE = 49408
N_MERGES = 49152 - 256 - 2


def _bpe_file() -> Path:
    spec = importlib.util.find_spec("open_clip")
    if spec and spec.submodule_search_locations:
        path = Path(list(spec.submodule_search_locations)[0]) / "bpe_simple_vocab_16e6.txt.gz"
        if path.is_file():
            return path
    raise FatalError("the CLIP BPE vocabulary is missing: run "
                     "`pip install --no-deps open_clip_torch==3.3.0`")


def _byte_symbols() -> list[str]:
    """The 256 printable stand-ins CLIP's BPE uses for raw bytes, in CLIP's order."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    chars = keep[:]
    extra = 0
    for b in range(256):
        if b not in keep:
            keep.append(b)
            chars.append(256 + extra)
            extra += 1
    return [chr(c) for c in chars]


def build_files(folder: Path) -> tuple[Path, Path]:
    vocab_path, merges_path = folder / "vocab.json", folder / "merges.txt"
    if vocab_path.exists() and merges_path.exists():
        return vocab_path, merges_path
    lines = gzip.open(_bpe_file(), "rt", encoding="utf-8").read().split("\n")
    merges = [tuple(line.split()) for line in lines[1:N_MERGES + 1]]
    symbols = _byte_symbols()
    vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    atomic_write_text(vocab_path, json.dumps({tok: i for i, tok in enumerate(vocab)},
                                             ensure_ascii=False))
    atomic_write_text(merges_path, "#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n")
    return vocab_path, merges_path


@lru_cache(maxsize=4)
def _load(folder: str):
    from transformers import CLIPTokenizer

    vocab, merges = build_files(Path(folder))
    tokenizer = CLIPTokenizer(str(vocab), str(merges), model_max_length=77)
    # Counting long texts is the point here; silence the "longer than 77" warning.
    tokenizer.deprecation_warnings["sequence-length-is-longer-than-the-specified-maximum"] = True
    if len(tokenizer) != VOCAB_SIZE:
        raise FatalError(f"CLIP tokenizer built in {folder} has {len(tokenizer)} entries, "
                         f"expected {VOCAB_SIZE}; delete that folder and run again")
    return tokenizer


def load_clip_tokenizer(cache_dir: Path):
    """CLIPTokenizer with the real 49,408-entry vocabulary (files built once under cache)."""
    return _load(str(Path(cache_dir).resolve() / "clip-tokenizer"))


def clip_token_count(tokenizer, text: str) -> int:
    """Tokens including the start and end markers: a text fits CLIP when this is <= 77."""
    return len(tokenizer(text, truncation=False, add_special_tokens=True)["input_ids"])


def fits(tokenizer, text: str, limit: int = 77) -> bool:
    return clip_token_count(tokenizer, text) <= limit


def truncate_to_tokens(tokenizer, text: str, limit: int) -> str:
    """The longest prefix of whole words that fits `limit` tokens."""
    words = text.split()
    lo, hi = 0, len(words)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if clip_token_count(tokenizer, " ".join(words[:mid])) <= limit:
            lo = mid
        else:
            hi = mid - 1
    return " ".join(words[:lo])
