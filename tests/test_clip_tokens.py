"""The offline CLIP tokenizer: real vocabulary, real ids, counts and word-prefix truncation."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from stages.backends import clip_tokens
from stages.backends.clip_tokens import (
    VOCAB_SIZE,
    clip_token_count,
    fits,
    load_clip_tokenizer,
    truncate_to_tokens,
)
from stages.errors import FatalError


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def tok(cache):
    return load_clip_tokenizer(cache)


def test_vocabulary_is_the_full_clip_one(tok, cache):
    assert len(tok) == VOCAB_SIZE == 49408
    vocab = json.loads((cache / "clip-tokenizer" / "vocab.json").read_text(encoding="utf-8"))
    assert len(vocab) == VOCAB_SIZE and sorted(vocab.values()) == list(range(VOCAB_SIZE))
    assert vocab["<|startoftext|>"] == 49406 and vocab["<|endoftext|>"] == 49407
    merges = (cache / "clip-tokenizer" / "merges.txt").read_text(encoding="utf-8").splitlines()
    assert merges[0].startswith("#version") and len(merges) == 1 + 48894


def test_encodes_to_the_real_clip_ids(tok):
    ids = tok("a red car on the left of a blue bus")["input_ids"]
    assert ids == [49406, 320, 736, 1615, 525, 518, 1823, 539, 320, 1746, 2840, 49407]
    assert tok.model_max_length == 77


def test_counts_include_start_and_end_tokens(tok):
    assert clip_token_count(tok, "") == 2
    assert clip_token_count(tok, "a red car on the left of a blue bus") == 12
    # non-ASCII and markup go through the byte-level BPE, never become unknown tokens
    assert clip_token_count(tok, "猫耳 😀 <script>") > 4


def test_fits_at_exactly_the_limit(tok):
    words = " ".join(["cat"] * 75)                # 75 word tokens + start + end = 77
    assert clip_token_count(tok, words) == 77
    assert fits(tok, words) and not fits(tok, words + " cat")
    assert fits(tok, words + " cat", limit=78)


def test_truncation_keeps_the_longest_fitting_word_prefix(tok):
    text = " ".join(f"a photograph of object number {i} on a wooden table" for i in range(20))
    assert clip_token_count(tok, text) > 77
    cut = truncate_to_tokens(tok, text, 77)
    assert text.startswith(cut) and clip_token_count(tok, cut) <= 77
    next_word = text.split()[len(cut.split())]
    assert clip_token_count(tok, f"{cut} {next_word}") > 77


def test_truncation_leaves_fitting_text_alone_and_can_return_nothing(tok):
    assert truncate_to_tokens(tok, "a cat\non a mat", 77) == "a cat\non a mat"
    assert truncate_to_tokens(tok, "supercalifragilisticexpialidocious", 3) == ""


def test_files_are_built_once_and_reused(tok, cache):
    vocab = cache / "clip-tokenizer" / "vocab.json"
    before = vocab.stat().st_mtime_ns
    os.utime(vocab, ns=(before - 10**9, before - 10**9))
    clip_tokens._files.cache_clear()
    again = load_clip_tokenizer(cache)
    assert vocab.stat().st_mtime_ns == before - 10**9       # not rewritten
    assert again("a blue bus")["input_ids"] == tok("a blue bus")["input_ids"]
    assert not list((cache / "clip-tokenizer").glob(".*.tmp"))


def test_missing_bpe_file_is_fatal_with_the_fix(monkeypatch, tmp_path):
    # as if the package were installed without its data file
    monkeypatch.setattr(clip_tokens, "_BPE_NAME", "no_such_vocab.txt.gz")
    clip_tokens._files.cache_clear()
    with pytest.raises(FatalError, match=r"pip install --no-deps open_clip_torch==3\.3\.0"):
        load_clip_tokenizer(tmp_path)
