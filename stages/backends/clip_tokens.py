"""The real CLIP BPE tokenizer, built offline from the vocabulary that open_clip ships.

The 77-token limit of CLIP text encoders (SD, SDXL, CLIPScore) is measured with the same
byte-level BPE as OpenAI's CLIP. The merges file inside the open_clip_torch package (read
as a file; importing open_clip fails here because of torchvision) is turned once into
vocab.json + merges.txt under the cache and loaded with transformers' CLIPTokenizer.
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
CONTEXT_LENGTH = 77
N_MERGES = VOCAB_SIZE - 2 * 256 - 2          # 48,894 merge rules after the header line
SPECIAL_TOKENS = ("<|startoftext|>", "<|endoftext|>")
_BPE_NAME = "bpe_simple_vocab_16e6.txt.gz"
_FIX = "run `pip install --no-deps open_clip_torch==3.3.0`"


def bpe_file() -> Path:
    """Where open_clip's gzipped merges list lies (found without importing open_clip)."""
    spec = importlib.util.find_spec("open_clip")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / _BPE_NAME
        if path.is_file():
            return path
    raise FatalError(f"the CLIP BPE vocabulary ({_BPE_NAME}) is missing: {_FIX}")


def _byte_symbols() -> list[str]:
    """The 256 printable characters that stand for raw bytes, in CLIP's vocabulary order.

    Printable Latin-1 bytes stand for themselves; the others (controls, space, soft hyphen)
    are mapped, in byte order, onto code points from 256 upwards.
    """
    printable = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    unprintable = [b for b in range(256) if b not in set(printable)]
    return [chr(b) for b in printable] + [chr(256 + i) for i in range(len(unprintable))]


def _read_merges() -> list[tuple[str, str]]:
    with gzip.open(bpe_file(), "rt", encoding="utf-8") as fh:
        lines = fh.read().split("\n")
    merges = [tuple(line.split()) for line in lines[1:N_MERGES + 1]]
    if len(merges) != N_MERGES or any(len(m) != 2 for m in merges):
        raise FatalError(f"{bpe_file()} is not the CLIP merges list it should be: {_FIX}")
    return merges  # type: ignore[return-value]


def build_files(folder: Path) -> tuple[Path, Path]:
    """Write vocab.json + merges.txt into `folder` unless they are already there."""
    vocab_path, merges_path = folder / "vocab.json", folder / "merges.txt"
    if vocab_path.is_file() and merges_path.is_file():
        return vocab_path, merges_path
    merges = _read_merges()
    symbols = _byte_symbols()
    tokens = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges]
    tokens += SPECIAL_TOKENS
    vocab = {token: index for index, token in enumerate(tokens)}
    # merges first: vocab.json is the marker that the pair is complete
    atomic_write_text(merges_path, "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    atomic_write_text(vocab_path, json.dumps(vocab, ensure_ascii=False))
    return vocab_path, merges_path


@lru_cache(maxsize=8)
def _files(folder: str) -> tuple[str, str]:
    vocab, merges = build_files(Path(folder))
    return str(vocab), str(merges)


def load_clip_tokenizer(cache_dir: Path):
    """A CLIPTokenizer with the real 49,408-entry vocabulary (files built once under cache).

    Each call returns its own tokenizer (0.1 s): callers that set padding or truncation
    (pipelines, scorers) then never share mutable tokenizer state across threads.
    """
    from transformers import CLIPTokenizer

    folder = Path(cache_dir).resolve() / "clip-tokenizer"
    vocab, merges = _files(str(folder))
    # positional paths: transformers 5 silently ignores vocab_file= / merges_file=
    tokenizer = CLIPTokenizer(vocab, merges, model_max_length=CONTEXT_LENGTH)
    # Counting long texts is the point here; silence the "longer than 77" warning.
    tokenizer.deprecation_warnings["sequence-length-is-longer-than-the-specified-maximum"] = True
    if len(tokenizer) != VOCAB_SIZE:
        _files.cache_clear()
        raise FatalError(f"the CLIP tokenizer built in {folder} has {len(tokenizer)} entries, "
                         f"expected {VOCAB_SIZE}; delete that folder and run again")
    return tokenizer


def clip_token_count(tokenizer, text: str) -> int:
    """Tokens including the start and end markers: a text fits CLIP when this is <= 77."""
    return len(tokenizer(text, truncation=False, add_special_tokens=True)["input_ids"])


def fits(tokenizer, text: str, limit: int = CONTEXT_LENGTH) -> bool:
    """Whether `text` fits a CLIP text encoder of `limit` positions without truncation."""
    return clip_token_count(tokenizer, text) <= limit


def truncate_to_tokens(tokenizer, text: str, limit: int) -> str:
    """The longest prefix of whole words that fits `limit` tokens ("" when no word fits).

    A text that already fits comes back unchanged; a shortened one is re-joined with single
    spaces.
    """
    if fits(tokenizer, text, limit):
        return text
    words = text.split()
    lo, hi = 0, len(words)                      # words[:lo] fits; no prefix longer than hi does
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if fits(tokenizer, " ".join(words[:mid]), limit):
            lo = mid
        else:
            hi = mid - 1
    return " ".join(words[:lo])
