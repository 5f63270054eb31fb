"""CLIP and text-embedding scorers: the CLIPScore maths on known vectors, a tiny random CLIP
saved and loaded through from_pretrained, and the packaged MiniLM's published value."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from stages.backends import scoring
from stages.backends.scoring import ClipScorer, TextEmbedder, clipscore_from_embeddings, cosine_rows
from stages.errors import FatalError


def photo(name: str) -> Image.Image:
    from skimage import data

    return Image.fromarray(getattr(data, name)())


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("scoring-cache")


@pytest.fixture(scope="module")
def clip(cache) -> ClipScorer:
    scorer = ClipScorer("tiny", cache_dir=cache)
    scorer.embed_texts(["load it"])           # models load on first use
    return scorer


@pytest.fixture(scope="module")
def photos() -> list[Image.Image]:
    return [photo(n) for n in ("astronaut", "chelsea", "coffee", "rocket")]


TEXTS = ["an astronaut in a white suit", "a cat", "a cup of coffee", "a rocket on a launch pad"]


def test_clipscore_maths_on_known_vectors():
    e = np.eye(3)
    assert clipscore_from_embeddings(e, e) == pytest.approx([2.5, 2.5, 2.5])
    assert clipscore_from_embeddings(e, np.roll(e, 1, axis=0)) == pytest.approx([0, 0, 0])
    assert clipscore_from_embeddings(e[:1], -e[:1]) == pytest.approx([0.0])      # clamped, not -2.5
    v, w = np.array([[1.0, 0.0]]), np.array([[1.0, 1.0]])
    assert clipscore_from_embeddings(v, w) == pytest.approx([2.5 / np.sqrt(2)])
    assert clipscore_from_embeddings(v, w, w=1.0) == pytest.approx([1 / np.sqrt(2)])
    assert clipscore_from_embeddings(3 * v, 7 * w) == pytest.approx([2.5 / np.sqrt(2)])  # scale-free


def test_cosine_rows_pairs_by_index_and_survives_zero_rows():
    a = np.array([[1.0, 0.0], [0.0, 2.0], [0.0, 0.0]])
    b = np.array([[-1.0, 0.0], [0.0, 5.0], [1.0, 1.0]])
    assert cosine_rows(a, b) == pytest.approx([-1.0, 1.0, 0.0])
    with pytest.raises(ValueError):
        cosine_rows(a, b[:2])


def test_tiny_clip_is_saved_once_and_loaded_through_from_pretrained(clip, cache):
    folder = cache / "tiny-clip"
    assert (folder / "config.json").is_file() and (folder / "preprocessor_config.json").is_file()
    assert list(folder.glob("*.safetensors"))
    stamp = (folder / "config.json").stat().st_mtime_ns
    again = ClipScorer("tiny", cache_dir=cache)
    assert (folder / "config.json").stat().st_mtime_ns == stamp
    assert again.identity() == clip.identity()
    assert clip.backend == "transformers" and clip.identity()["model"] == "tiny"
    assert len(clip._impl.tokenizer) == 49408
    assert not [p for p in cache.iterdir() if p.name.startswith(".tiny-clip-")]


def test_clipscore_of_real_photos_is_bounded_deterministic_and_the_formula(clip, photos, tmp_path):
    scores = clip.clipscore(photos, TEXTS)
    assert scores.shape == (4,) and np.all((scores >= 0) & (scores <= 2.5))
    assert np.array_equal(scores, clip.clipscore(photos, TEXTS))
    img, txt = clip.embed_images(photos), clip.embed_texts(TEXTS)
    assert np.linalg.norm(img, axis=1) == pytest.approx(np.ones(4), abs=1e-5)
    assert scores == pytest.approx(2.5 * np.maximum(np.sum(img * txt, axis=1), 0), abs=1e-5)
    rebuilt = ClipScorer("tiny", cache_dir=tmp_path)      # same seed, another folder: same model
    assert rebuilt.clipscore(photos, TEXTS) == pytest.approx(scores, abs=1e-5)
    assert clip.clipscore([], []).shape == (0,)
    with pytest.raises(ValueError):
        clip.clipscore(photos, TEXTS[:2])


def test_batches_give_the_same_embeddings(clip, photos, monkeypatch):
    whole = clip.embed_images(photos)
    monkeypatch.setattr(scoring, "BATCH", 3)
    assert clip.embed_images(photos) == pytest.approx(whole, abs=1e-5)


def test_long_texts_are_truncated_to_77_tokens(clip, cache):
    from stages.backends.clip_tokens import clip_token_count, load_clip_tokenizer, truncate_to_tokens

    tok = load_clip_tokenizer(cache)
    long = " ".join(f"a red car number {i} parked beside a blue bus" for i in range(40))
    assert clip_token_count(tok, long) > 200
    cut = truncate_to_tokens(tok, long, 77)
    a, b = clip.embed_texts([long, cut])
    assert a == pytest.approx(b, abs=1e-5)
    assert not np.allclose(a, clip.embed_texts([" ".join(cut.split()[:-3])])[0], atol=1e-5)


def test_image_similarity_is_one_with_itself_and_less_with_another(clip, photos):
    rgba = photo("logo")      # RGBA input is converted, not rejected
    same = clip.image_similarity(photos + [rgba], photos + [rgba])
    assert same == pytest.approx(np.ones(5), abs=1e-5)
    other = clip.image_similarity(photos[:2], photos[2:])
    assert np.all(other < 0.99999)


def test_unreachable_hub_and_bad_folder_fail_fast_with_the_key(cache, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.monotonic()
    with pytest.raises(FatalError, match=r"evaluate\.clip_model = nobody/no-such-clip.*`tiny`"):
        ClipScorer("nobody/no-such-clip", cache_dir=cache).embed_texts(["a cat"])
    assert time.monotonic() - start < 60      # hang guard, not a performance bound
    (tmp_path / "empty").mkdir()
    with pytest.raises(FatalError, match="does not hold a saved CLIP model"):
        ClipScorer(str(tmp_path / "empty"), cache_dir=cache).embed_texts(["a cat"])
    with pytest.raises(FatalError, match="needs open_clip"):
        ClipScorer("ViT-B-32", pretrained="laion2b_s34b_b79k", cache_dir=cache).embed_texts(["a cat"])
    with pytest.raises(FatalError, match="evaluate.text_model = nobody/no-such-model"):
        TextEmbedder("nobody/no-such-model").embed(["a cat"])


def test_packaged_minilm_gives_the_published_similarity(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    emb = TextEmbedder()
    assert "HF_HUB_OFFLINE" not in os.environ       # restored after loading
    sim = emb.similarity(["A man is eating food.", "A cat"], ["A man is eating a piece of bread.", "A cat"])
    assert sim[0] == pytest.approx(0.755, abs=0.01) and sim[1] == pytest.approx(1.0, abs=1e-5)
    vectors = emb.embed(["one", "two", "three"])
    assert vectors.shape == (3, 384)
    assert np.linalg.norm(vectors, axis=1) == pytest.approx(np.ones(3), abs=1e-5)
    assert emb.identity()["model"] == "all-MiniLM-L6-v2"
    assert emb.similarity([], []).shape == (0,)


@pytest.mark.weights
def test_real_clip_vit_b32_prefers_the_right_caption(cache):
    try:
        clip = ClipScorer("ViT-B-32", cache_dir=cache)
        clip.embed_texts(["a photo of a cat"])
    except FatalError as exc:
        pytest.skip(f"real CLIP ViT-B/32 weights are not available here: {exc}")
    cat = photo("chelsea")
    scores = clip.clipscore([cat, cat], ["a photo of a cat", "a photo of a rocket"])
    assert scores[0] > scores[1] + 0.1 and 0.5 < scores[0] < 1.2
